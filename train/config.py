"""The `arkd` command's typed configuration: the engine and env sections of arkd_env plus agent and run.

A :class:`RunConfig` is built in layers, each checked before the next is added, so an error names the
layer that caused it: the preset file (``arkd_env/configs/<preset>.yaml``), then ``--config FILE``, then
the ``--set a.b=value`` overrides. The resolved config is written to every run folder as ``config.yaml``;
``arkd train --config RUN_DIR/config.yaml`` reproduces the run from it alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from arkd_env.config import (
    DEFAULT_PRESET,
    ConfigError,
    EngineConfig,
    EnvConfig,
    SuiteConfig,
    apply_overrides,
    check,
    check_seeds,
    deep_merge,
    from_dict,
    help_field,
    parse_overrides,
    preset_path,
    read_yaml,
    to_dict,
)

VEC_ENVS = ("auto", "dummy", "subproc", "ray")
SECTIONS = ("engine", "env", "agent", "run", "online", "eval_suite")
ONLINE_REWARDS = ("auto", "env", "detrended", "prototype")


@dataclass
class AgentConfig:
    """Which RL agent learns the weighting policy, and how its environments are run."""

    algo: str = help_field("Agent: ppo, a2c, sac, td3, ddpg, tqc, trpo, recurrent_ppo (alias ppo_lstm), "
                           "reinforce, dqn, qrdqn (Discrete action modes only) or 'package.module:Class'.",
                           default="ppo")
    hparams: dict[str, Any] = help_field("Constructor arguments merged over agents/hyperparams/<algo>.yaml "
                                    "(e.g. agent.hparams.learning_rate=1e-3).", default_factory=dict)
    n_envs: int = help_field("Environments stepped in parallel (one distillation run each).", default=1)
    vec_env: str = help_field("'auto' (DummyVecEnv for 1 env, SubprocVecEnv otherwise), 'dummy', 'subproc' "
                         "or 'ray'.", default="auto")
    ray_address: str | None = help_field("Ray cluster address ('auto', 'HOST:6379', 'ray://HOST:10001'); "
                                    "None starts Ray locally.", default=None)
    cpus_per_env: float = help_field("CPUs Ray reserves for each environment actor.", default=1.0)
    gpus_per_env: float = help_field("GPUs Ray reserves for each environment actor (fractions share one).",
                                default=0.0)
    step_timeout: float | None = help_field("Seconds a Ray env step may take before its actor is replaced.",
                                       default=None)
    device: str = help_field("Torch device of the agent's networks ('auto', 'cpu', 'cuda').", default="cpu")

    def __post_init__(self) -> None:
        check(bool(self.algo.strip()), "agent.algo", self.algo, "must name an agent")
        check(self.n_envs >= 1, "agent.n_envs", self.n_envs, "must be >= 1")
        check(self.vec_env in VEC_ENVS, "agent.vec_env", self.vec_env, f"must be one of {VEC_ENVS}")
        check(self.cpus_per_env > 0, "agent.cpus_per_env", self.cpus_per_env, "must be > 0")
        check(self.gpus_per_env >= 0, "agent.gpus_per_env", self.gpus_per_env, "must be >= 0")
        check(self.step_timeout is None or self.step_timeout > 0, "agent.step_timeout", self.step_timeout,
               "must be > 0 or null")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "agent.device",
               self.device, "must be auto, cpu, cuda or cuda:N")
        _check_finite(self.hparams, "agent.hparams")


def _check_finite(values: Any, key: str) -> None:
    """Every number in the agent's hyperparameters is finite: SB3 would fail on a NaN rate deep inside."""
    if isinstance(values, dict):
        for name, value in values.items():
            _check_finite(value, f"{key}.{name}")
    elif isinstance(values, list | tuple):
        for i, value in enumerate(values):
            _check_finite(value, f"{key}[{i}]")
    elif isinstance(values, float):
        check(math.isfinite(values), key, values, "must be a finite number")


@dataclass
class RunOptions:
    """Budget, seeds, checkpoints, output folder and the policies a comparison runs."""

    seed: int = help_field("Seed of the agent (network initialisation, exploration).", default=0)
    timesteps: int = help_field("Env steps the agent learns for (each env step = updates_per_step student "
                           "updates and a validation pass).", default=64)
    checkpoint_every: int = help_field("Env steps between checkpoints, rounded up to whole episodes of all envs "
                                  "(0: one per episode).", default=0)
    keep_checkpoints: int = help_field("Most recent checkpoints kept on disk.", default=2)
    output_dir: str = help_field("Folder under which run folders are created.", default="runs")
    eval_seeds: list[int] = help_field("Held-out engine seeds (student init, data order) for compare/demo; "
                                  "distinct from engine.seed used in training.",
                                  default_factory=lambda: [100, 101, 102])
    policies: list[str] = help_field("Policies `arkd demo` compares with the learned one.",
                                default_factory=lambda: ["fkl", "rkl", "fixed:0.5", "akl"])
    reference_policies: list[str] = help_field("Fixed policies whose returns are drawn on the learning curve "
                                          "at the end of `arkd train` ([] to skip), and the references "
                                          "`arkd compare` reports paired differences against.",
                                          default_factory=lambda: ["fkl", "rkl"])
    workers: int = help_field("Processes `arkd compare` and `arkd demo` play their runs in, sharing the CPU cores "
                              "out; 1 plays them one after another in the command's own process.", default=1)
    final_eval: bool = help_field("After training, run one deterministic episode of the learned policy.",
                             default=True)

    def __post_init__(self) -> None:
        check(self.timesteps >= 1, "run.timesteps", self.timesteps, "must be >= 1")
        check(self.checkpoint_every >= 0, "run.checkpoint_every", self.checkpoint_every, "must be >= 0")
        check(self.keep_checkpoints >= 1, "run.keep_checkpoints", self.keep_checkpoints, "must be >= 1")
        check(self.workers >= 1, "run.workers", self.workers, "must be >= 1")
        check(bool(self.output_dir.strip()), "run.output_dir", self.output_dir, "must not be empty")
        check(len(self.eval_seeds) >= 1, "run.eval_seeds", self.eval_seeds, "must list at least one seed")
        check(len(set(self.eval_seeds)) == len(self.eval_seeds), "run.eval_seeds", self.eval_seeds,
               "must not repeat a seed")
        check_seeds("run.seed", self.seed)
        check_seeds("run.eval_seeds", self.eval_seeds)


@dataclass
class OnlineConfig:
    """`arkd distill --online ALGO`: the reward the agent learns from inside the one run, and checkpoints."""

    reward: str = help_field("'detrended' (the env's reward minus its forecast from the level and trend of the "
                             "recent rewards), 'env' (the env's reward as it is, e.g. env.reward=relative), "
                             "'prototype' (validation ROUGE-L on [0, 1] minus rouge_baseline every reward_every "
                             "steps) or 'auto' (prototype for --online prototype, detrended otherwise).",
                             default="auto")
    detrend_decay: float = help_field("Decay of the level of the forecast the detrended reward subtracts "
                                      "(Holt's smoothing; memory about 1/(1-decay) steps).", default=0.5)
    trend_decay: float = help_field("Decay of the forecast's trend; 1 keeps no trend (a running mean).",
                                    default=0.5)
    reward_every: int = help_field("Env steps between the prototype reward's ROUGE-L evaluations; the prototype "
                                   "agent learns every 5 of them. 1 on the paper presets (100 updates a step) is "
                                   "the authors' reward every 100 batches.", default=1)
    rouge_baseline: float = help_field("Subtracted from the prototype reward's ROUGE-L (the authors' 0.5).",
                                       default=0.5)
    checkpoint_every: int = help_field("Env steps between checkpoints, rounded up to whole PPO "
                                       "rollouts.", default=1)

    def __post_init__(self) -> None:
        check(self.reward in ONLINE_REWARDS, "online.reward", self.reward, f"must be one of {ONLINE_REWARDS}")
        check(0.0 <= self.detrend_decay < 1.0, "online.detrend_decay", self.detrend_decay, "must lie in [0, 1)")
        check(0.0 <= self.trend_decay <= 1.0, "online.trend_decay", self.trend_decay, "must lie in [0, 1]")
        check(self.reward_every >= 1, "online.reward_every", self.reward_every, "must be >= 1")
        check(math.isfinite(self.rouge_baseline), "online.rouge_baseline", self.rouge_baseline, "must be finite")
        check(self.checkpoint_every >= 1, "online.checkpoint_every", self.checkpoint_every, "must be >= 1")


@dataclass
class RunConfig:
    """Everything one `arkd` run needs; saved as ``config.yaml`` in its run folder."""

    preset: str = help_field("Preset the config started from (arkd_env/configs/<preset>.yaml).",
                        default=DEFAULT_PRESET)
    engine: EngineConfig = help_field("The distillation engine.", default_factory=EngineConfig)
    env: EnvConfig = help_field("The RL environment around it.", default_factory=EnvConfig)
    agent: AgentConfig = help_field("The learning agent.", default_factory=AgentConfig)
    run: RunOptions = help_field("Budget, seeds, checkpoints and outputs.", default_factory=RunOptions)
    online: OnlineConfig = help_field("An online run (arkd distill --online).", default_factory=OnlineConfig)
    eval_suite: SuiteConfig = help_field("The paper-protocol evaluation suite (arkd evaluate --suite paper).",
                                         default_factory=SuiteConfig)

    def __post_init__(self) -> None:
        shared = sorted(set(self.env.train_seeds) & set(self.run.eval_seeds))
        check(not shared, "env.train_seeds", self.env.train_seeds,
              f"seed {shared[0] if shared else ''} is also in run.eval_seeds; an agent must not train on the "
              "seeds it is evaluated on")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def build(values: dict[str, Any], source: str) -> RunConfig:
    """A RunConfig from a plain mapping; errors name ``source`` and the key."""
    return from_dict(RunConfig, values, source)


def own_sources(teacher: str | None = None, student: str | None = None, data: str | None = None) -> dict[str, Any]:
    """The overrides of ``--teacher``, ``--student`` and ``--data``: each replaces the preset's whole section,
    so they work from any preset (a preset's random ``arch`` or warm start cannot clash with a given model).

    A given teacher brings its own tokenizer (``engine.tokenizer`` null); given data is read with
    ``data.format=auto`` (TRL's messages or prompt/completion rows, or instruction rows) and the data defaults,
    with no held-out test split (``engine.test_size`` 0: a preset sizes its test split for its own data; set
    ``engine.test_size`` and ``engine.data.val_size`` to hold one out of yours).
    """
    values: dict[str, Any] = {}
    if teacher is not None:
        values.update({"engine.teacher": {"name_or_path": teacher}, "engine.tokenizer": None})
    if student is not None:
        values["engine.student"] = {"name_or_path": student}
    if data is not None:
        values.update({"engine.data": {"source": data, "format": "auto"}, "engine.test_size": 0})
    return values


def load_run_config(preset: str | None = None, config_file: str | Path | None = None,
                    overrides: list[str] | None = None, sources: Mapping[str, Any] | None = None) -> RunConfig:
    """Preset file <- ``config_file`` <- ``sources`` (:func:`own_sources`) <- ``overrides``; each layer is
    validated on its own.

    ``preset`` None takes the ``preset`` named in ``config_file``, else the embedded default
    (``DEFAULT_PRESET``, ``blind``).
    """
    file_values = read_yaml(config_file) if config_file is not None else {}
    set_values = {**(sources or {}), **parse_overrides(overrides or [], ("preset", *SECTIONS))}
    name = preset or set_values.pop("preset", None) or file_values.get("preset") or DEFAULT_PRESET
    set_values.pop("preset", None)
    if not isinstance(name, str):
        raise ConfigError(f"{config_file}: preset={name!r}: expected a preset name")
    path = preset_path(name)
    values = {**read_yaml(path), "preset": name}
    build(values, str(path))
    if config_file is not None:
        values = deep_merge(values, {**file_values, "preset": name})
        build(values, str(config_file))
    if set_values:
        values = apply_overrides(values, set_values)
        cfg = build(values, "--set")
    else:
        cfg = build(values, str(config_file or path))
    return cfg


def replace(cfg: RunConfig, **sections: Any) -> RunConfig:
    """A copy of ``cfg`` with fields of sections replaced: ``replace(cfg, run={"seed": 3})``."""
    new = copy.deepcopy(cfg)
    for section, changes in sections.items():
        setattr(new, section, dataclasses.replace(getattr(new, section), **changes))
    return new


def described_fields(obj: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, help) of every leaf field of a config dataclass instance, in declaration order."""
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += described_fields(value, f"{key}.")
        else:
            rows.append((key, value, str(f.metadata.get("help", ""))))
    return rows

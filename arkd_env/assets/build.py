"""Resolve the tokenizer, teacher and student of an engine config, building and caching what a preset makes itself.

Built presets (the embedded default `blind`, `keyed`, `embedded`, `nano`) have no files to download: their
tokenizer is made from the synthetic suite and their teacher is trained on it here. Both are saved under the
user cache directory in a folder keyed by every config value they depend on, written to a temporary folder and
renamed, so an interrupted `arkd prepare` never leaves a half-written teacher that a later run would trust.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from arkd_env.assets import models
from arkd_env.assets.data import (
    DataBundle,
    TokenizedExample,
    build_datasets,
    collate,
    encode_prompts,
    format_prompt,
    keyed_records,
    keyed_spec,
    load_records,
    pad_token_id,
    teacher_view,
    tokenize_records,
)
from arkd_env.assets.tokenizer import build_synthetic_tokenizer
from arkd_env.atomic import atomic_path
from arkd_env.config import ConfigError, EngineConfig
from arkd_env.progress import track

# 2: synthetic teachers train on fresh examples (teacher_training_set); 3: keyed family members are named by
# ordinal words, so a teacher trained on the old prompts must not be reused.
CACHE_VERSION = 3
TEACHER_SEED = 1234  # the teacher is shared by every run seed, so its initialisation must not follow cfg.seed


def _teacher_config(cfg: EngineConfig) -> EngineConfig:
    """``cfg`` with the data as the teacher sees it (:func:`teacher_view`): what the teacher and tokenizer follow."""
    view = teacher_view(cfg.data)
    return cfg if view is cfg.data else dataclasses.replace(cfg, data=view)


def _teacher_key(cfg: EngineConfig) -> str:
    cfg = _teacher_config(cfg)
    payload = {"v": CACHE_VERSION, "tokenizer": cfg.tokenizer, "teacher": asdict(cfg.teacher),
               "data": asdict(cfg.data)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def teacher_cache_dir(cfg: EngineConfig) -> Path:
    return models.cache_root() / f"teacher-{_teacher_key(cfg)}"


def _needs_build(cfg: EngineConfig) -> bool:
    return cfg.tokenizer == "synthetic" or cfg.teacher.pretrain_steps > 0


def _build_tokenizer(cfg: EngineConfig) -> PreTrainedTokenizerBase:
    if cfg.tokenizer == "synthetic":
        records = load_records(None, cfg.data)
        template = cfg.data.prompt_template
        texts = [format_prompt(r["instruction"], r.get("context") or "", template) + " " + r["response"]
                 for r in records]
        if cfg.data.source in ("synthetic", "keyed"):  # fresh teacher examples may hold words these records lack
            from arkd_env.assets.synthetic import suite_vocabulary

            texts.append(" ".join(suite_vocabulary()))
        if cfg.data.source == "keyed":
            from arkd_env.assets.keyed import keyed_vocabulary

            texts.append(" ".join(keyed_vocabulary(keyed_spec(cfg.data))))
        return build_synthetic_tokenizer(texts)
    if cfg.tokenizer is not None:
        return models.load_tokenizer(cfg.tokenizer, trust_remote_code=cfg.teacher.trust_remote_code)
    return models.load_tokenizer(cfg.teacher.name_or_path, gguf_package=cfg.teacher.gguf_package,
                                 trust_remote_code=cfg.teacher.trust_remote_code)


def teacher_training_set(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase,
                         data: DataBundle) -> list[TokenizedExample]:
    """What a built teacher trains on: the training split, or for the synthetic suite, which can be generated
    without limit, one fresh example per training sequence, so the teacher never sees an example twice.

    A few thousand examples replayed for many epochs left the teacher memorising: its exact match on the
    validation split depended on the seed (83-98%). Fresh examples come from a seed apart from the suite's,
    and a deterministic one whose prompt is in the validation split is dropped, so the teacher is scored on
    unseen prompts. Open tasks keep every example: they share one prompt per task, and validation scores the
    distribution of their answers, not one answer.
    """
    if cfg.data.source not in ("synthetic", "keyed"):
        return data.train
    from arkd_env.assets.synthetic import OPEN, generate_suite

    held_out = {(r["instruction"], r.get("context") or "") for r in data.val_records}
    wanted = cfg.teacher.pretrain_steps * cfg.teacher.pretrain_batch_size
    seed = TEACHER_SEED + cfg.data.split_seed
    if cfg.data.source == "keyed":
        fresh = keyed_records(cfg.data, wanted, seed)
    else:
        fresh = [ex.to_record() for ex in generate_suite(wanted, seed)]
    fresh = [r for r in fresh if r["kind"] == OPEN or (r["instruction"], r["context"]) not in held_out]
    examples, _ = tokenize_records(fresh, tokenizer, cfg.data)
    return examples


def pretrain(model: PreTrainedModel, examples: list[TokenizedExample], pad_id: int, steps: int, lr: float,
             batch_size: int, device: torch.device, seed: int, desc: str = "training teacher") -> list[float]:
    """Supervised training on the response tokens of ``examples``; returns the loss curve."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(examples), generator=generator).tolist()
    cursor = 0
    for _ in track(range(steps), desc=desc, total=steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(examples), generator=generator).tolist(), 0
        batch = collate([examples[i] for i in order[cursor:cursor + batch_size]], pad_id)
        cursor += batch_size
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].to(device).flatten(),
                                                 ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _build_teacher(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> PreTrainedModel:
    teacher = models.build_model(cfg.teacher, vocab_size=len(tokenizer), tokenizer=tokenizer, device=device,
                                 seed=TEACHER_SEED)
    if cfg.teacher.pretrain_steps > 0:
        examples = teacher_training_set(cfg, tokenizer, build_datasets(cfg.data, tokenizer))
        pretrain(teacher, examples, pad_token_id(tokenizer), cfg.teacher.pretrain_steps, cfg.teacher.pretrain_lr,
                 cfg.teacher.pretrain_batch_size, device, TEACHER_SEED)
    return teacher


def prepare(cfg: EngineConfig, device: torch.device | None = None, force: bool = False) -> Path | None:
    """Build and cache what ``cfg`` makes itself; return the cache folder (None when nothing is built)."""
    if not _needs_build(cfg):
        return None
    cfg = _teacher_config(cfg)
    target = teacher_cache_dir(cfg)
    if (target / "complete").is_file() and not force:
        return target
    device = device or models.pick_device(cfg.device, key="engine.device")
    tokenizer = _build_tokenizer(cfg)
    teacher = _build_teacher(cfg, tokenizer, device)
    with atomic_path(target, folder=True) as staging:
        tokenizer.save_pretrained(staging / "tokenizer")
        with models.no_library_progress():
            teacher.save_pretrained(staging / "teacher")
        (staging / "config.json").write_text(json.dumps({"tokenizer": cfg.tokenizer, "teacher": asdict(cfg.teacher),
                                                         "data": asdict(cfg.data)}, indent=2))
        (staging / "complete").write_text("ok\n")
    return target


@dataclass
class Assets:
    """Everything a Distiller is built from: the shared teacher side, one student, and how to make more."""

    tokenizer: PreTrainedTokenizerBase
    teacher: PreTrainedModel
    student: PreTrainedModel
    data: DataBundle
    vocab_size: int
    new_student: Callable[[int], PreTrainedModel]  # engine seed -> a fresh student initialised with it


TeacherSide = tuple[PreTrainedTokenizerBase, PreTrainedModel]

_TEACHER_SIDE: dict[str, TeacherSide] = {}
_DATA: dict[str, DataBundle] = {}


def _teacher_side(cfg: EngineConfig, device: torch.device) -> TeacherSide:
    """Tokenizer and frozen teacher, loaded once per process and shared by every env in it (and by every
    instance whose data differ only in what the student sees)."""
    cfg = _teacher_config(cfg)
    key = json.dumps({"tokenizer": cfg.tokenizer, "teacher": asdict(cfg.teacher), "data": asdict(cfg.data),
                      "teacher_dtype": cfg.teacher_dtype, "device": str(device)}, sort_keys=True)
    if key not in _TEACHER_SIDE:
        built = prepare(cfg, device)
        if built is not None:
            tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(built / "tokenizer")
            dtype = models.resolve_dtype(cfg.teacher_dtype or cfg.teacher.dtype)
            teacher: PreTrainedModel = models.load_causal_lm(built / "teacher", dtype=dtype)
            teacher = teacher.to(device)  # type: ignore[arg-type]
        else:
            tokenizer = _build_tokenizer(cfg)
            teacher = models.build_model(cfg.teacher, vocab_size=len(tokenizer), tokenizer=tokenizer,
                                         device=device, dtype=cfg.teacher_dtype, seed=TEACHER_SEED)
        models.freeze(teacher)
        _TEACHER_SIDE[key] = (tokenizer, teacher)
    return _TEACHER_SIDE[key]


def _student_data(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase) -> DataBundle:
    """The student's train and validation data, built once per process for each data config and tokenizer."""
    key = json.dumps({"teacher": _teacher_key(cfg), "data": asdict(cfg.data)}, sort_keys=True)
    if key not in _DATA:
        _DATA[key] = build_datasets(cfg.data, tokenizer)
    return _DATA[key]


WARM_START_SEED = 12345  # of the warm-start examples: apart from the data's split seed and the teacher's


def warm_start_examples(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase) -> list[TokenizedExample]:
    """What a warm-started student learns before distillation: the list tasks and a key layout other than the
    benchmark's (``layout_seed + 1``), half and half. It then knows the prompt format and the words, but none of
    the valid answers it is distilled on, so an episode is about the weighting, not about leaving a random start.
    """
    if cfg.data.source != "keyed":
        raise ConfigError(f"engine.student.pretrain_steps={cfg.student.pretrain_steps}: a student warm start is "
                          f"defined for data.source=keyed only, not {cfg.data.source!r}")
    # Every key of the layout, whatever the instance's: students of one size then share their warm start.
    data = teacher_view(cfg.data)
    keyed = dataclasses.replace(data.keyed, layout_seed=data.keyed.layout_seed + 1, deterministic_share=0.5)
    count = cfg.student.pretrain_steps * cfg.student.pretrain_batch_size
    records = keyed_records(dataclasses.replace(data, keyed=keyed), count, WARM_START_SEED)
    return tokenize_records(records, tokenizer, cfg.data)[0]


def load_assets(cfg: EngineConfig, device: torch.device) -> Assets:
    """Tokenizer, frozen teacher, data and a fresh student (seeded by ``cfg.seed``), ready for distillation."""
    tokenizer, teacher = _teacher_side(cfg, device)
    data = _student_data(cfg, tokenizer)
    warm = warm_start_examples(cfg, tokenizer) if cfg.student.pretrain_steps > 0 else []
    new_student = functools.partial(_build_student, cfg, tokenizer, teacher, device, warm)
    student = new_student(cfg.seed)
    if cfg.student.name_or_path is not None:  # a separately published student brings its own tokenizer
        models.check_tokenizers(tokenizer, models.load_tokenizer(cfg.student.name_or_path,
                                                                 trust_remote_code=cfg.student.trust_remote_code))
    vocab_size = models.align_vocab(teacher, student, tokenizer)
    return Assets(tokenizer=tokenizer, teacher=teacher, student=student, data=data, vocab_size=vocab_size,
                  new_student=new_student)


def member_token_ids(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token naming each member in its prompt, read from the prompts as the data path encodes them (a
    byte-level tokenizer spells " first" in context, not "first"): ``data.keyed.member_blind`` ties these.
    The members' prompts of one family must differ in exactly one token, or tied rows would not hide them."""
    from arkd_env.assets.keyed import MEMBER_NAMES, keyed_prompts

    family = keyed_prompts(keyed_spec(teacher_view(cfg.data)))[: cfg.data.keyed.family_size]
    encoded = encode_prompts(tokenizer, [format_prompt(p.instruction, "", cfg.data.prompt_template)
                                         for p in family])
    same_length = len({len(tokens) for tokens in encoded}) == 1
    differing = [i for i in range(len(encoded[0])) if len({t[i] for t in encoded}) > 1] if same_length else []
    ids = [tokens[differing[0]] for tokens in encoded] if len(differing) == 1 else []
    if len(set(ids)) != len(family) or getattr(tokenizer, "unk_token_id", None) in ids:
        raise ConfigError(f"data.keyed.member_blind=True: the tokenizer does not spell each member name "
                          f"({', '.join(MEMBER_NAMES[: len(family)])}) as one token of its own in the prompts; a "
                          f"blind student needs exactly one such token per member")
    return ids


# Warm-started students by configuration and seed, most recent last. An env builds a student per seed and
# instance, and comparisons build an env per run, so the same warm start (seconds of training) would otherwise
# be repeated for every policy played on a seed. The warm start uses its own generator, so replaying it from
# here changes no RNG state. Keyed students are small; a bound keeps a long sweep's memory flat anyway.
WARM_STUDENTS_KEPT = 32
_WARM_STUDENTS: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()


def _build_student(cfg: EngineConfig, tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedModel,
                   device: torch.device, warm: list[TokenizedExample], seed: int) -> PreTrainedModel:
    student = models.build_model(cfg.student, vocab_size=len(tokenizer), tokenizer=tokenizer, device=device,
                                 teacher=teacher, seed=seed)
    if cfg.data.source == "keyed" and cfg.data.keyed.member_blind:
        # Blind from the first step, warm start included: the student never had a way to tell members apart.
        models.tie_input_rows(student, member_token_ids(cfg, tokenizer))
    if warm:  # the same seed gives the same warm student: initialisation and example order both follow it
        # What the warm start depends on and no more: instances that differ only in their keys or score share
        # it (warm_start_examples reads the teacher's view), and the teacher is in the key because a student may
        # be built from its layers.
        key = json.dumps([asdict(cfg.student), asdict(teacher_view(cfg.data)), cfg.data.keyed.member_blind,
                          _teacher_key(cfg), len(tokenizer), str(device), seed], sort_keys=True, default=str)
        if key in _WARM_STUDENTS:
            student.load_state_dict(_WARM_STUDENTS[key])
            _WARM_STUDENTS.move_to_end(key)
        else:
            pretrain(student, warm, pad_token_id(tokenizer), cfg.student.pretrain_steps, cfg.student.pretrain_lr,
                     cfg.student.pretrain_batch_size, device, seed, desc="warm-starting student")
            _WARM_STUDENTS[key] = {name: value.detach().clone() for name, value in student.state_dict().items()}
            while len(_WARM_STUDENTS) > WARM_STUDENTS_KEPT:
                _WARM_STUDENTS.popitem(last=False)
        student.train()
    return student

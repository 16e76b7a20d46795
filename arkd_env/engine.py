"""The distillation engine: one student trained towards one teacher with a weighted mix of divergences.

Data flow of one update (see ``train_steps``)::

    next training batch ─► teacher rows (online, or top-k from the teacher cache)
                        └► student rows ─► Σ wᵢ·Dᵢ (arkd_env.losses) ─► backward ─► clip ─► AdamW step

"Rows" are the token positions whose next token is a response token: only they carry loss, so both models'
outputs are gathered there before any [tokens × vocab] tensor is formed. The engine knows nothing of RL;
:class:`arkd_env.env.DistillEnv` drives it through ``train_steps``, ``evaluate``, ``snapshot`` and ``restore``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.profiler import record_function

from arkd_env import losses
from arkd_env.assets import models
from arkd_env.assets.build import Assets, load_assets
from arkd_env.assets.data import TokenizedExample, collate, collate_prompts, pad_token_id
from arkd_env.assets.export import save_student_folder
from arkd_env.config import ConfigError, EngineConfig
from arkd_env.eval.answers import AnswerSet, answer_scores, as_metrics
from arkd_env.observation import FEATURE_ROWS, batch_features

STATE_VERSION = 2  # 2: the engine keeps only its own RNG, never the global ones
CHUNKED_ROWS = 1024  # default chunk of the chunked path, whose [N, V] student logits exist anyway
EVAL_COMPONENTS = ("fkl", "rkl", "jsd", "ce")
MU_COMPONENTS = ("akl", "fkl_head", "fkl_tail", "rkl_head", "rkl_tail")


@dataclass
class UpdateRecord:
    """One applied student update: the engine's update count after it, its loss and the learning rate it took."""

    update: int
    loss: float
    lr: float


@dataclass
class StepReport:
    """What ``train_steps`` did: mean loss values over the updates, features of the last batch, failures, and
    a record of each applied update (skipped ones have none), for logging finer than one env step."""

    components: dict[str, float]
    features: dict[str, float]
    loss: float
    n_updates: int
    n_failed: int
    failed_updates: list[int] = field(default_factory=list)
    update_log: list[UpdateRecord] = field(default_factory=list)


@dataclass
class _Rows:
    """One model's output at the loss positions: logits [N, V], or hidden states [N, H] with the LM head."""

    logits: Tensor | None = None
    hidden: Tensor | None = None
    weight: Tensor | None = None
    bias: Tensor | None = None

    def first(self, n: int) -> _Rows:
        """The first ``n`` rows, sliced before any logits are formed."""
        return _Rows(logits=None if self.logits is None else self.logits[:n],
                     hidden=None if self.hidden is None else self.hidden[:n], weight=self.weight, bias=self.bias)

    def as_logits(self) -> Tensor:
        if self.logits is not None:
            return self.logits
        assert self.hidden is not None and self.weight is not None
        return torch.nn.functional.linear(self.hidden, self.weight, self.bias)


class Distiller:
    """Owns teacher, student, AdamW, LR schedule and data order of one distillation run.

    The engine loads nothing itself: it is handed its ``assets`` (tokenizer, frozen teacher, data, a student and
    the factory of students for other engine seeds), so the flow runs config -> assets -> engine.
    :meth:`from_config` does both steps for the common case. Its randomness (data order, on-policy sampling,
    dropout) comes from generators seeded by the engine seed; the global torch RNG, which agents sample from,
    is never read or changed.
    """

    def __init__(self, cfg: EngineConfig, assets: Assets, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.device = device or models.pick_device(cfg.device, key="engine.device")
        self._new_student = assets.new_student
        self.tokenizer = assets.tokenizer
        self.teacher = assets.teacher
        self.student = assets.student
        self.student.to(self.device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
        self.data = assets.data
        self.vocab_size = assets.vocab_size
        self.pad_id = pad_token_id(self.tokenizer)
        if len(self.data.train) < cfg.batch_size:
            raise ConfigError(f"batch_size={cfg.batch_size}: only {len(self.data.train)} training examples")
        self.student.train()
        self.optimizer, self.scheduler = self._optimizer_for(self.student)
        unknown = [c for c in cfg.components if c not in losses.COMPONENTS]
        if unknown:
            raise ConfigError(f"engine.components: unknown component {unknown[0]!r} (known: "
                              f"{', '.join(sorted(losses.COMPONENTS))}; register your own with "
                              "arkd_env.losses.register_component)")
        self.component_kwargs = {name: {"mu": cfg.akl_mu} for name in MU_COMPONENTS}
        self._student_head, self._teacher_head = self._fused_heads()
        self.seed = cfg.seed  # the run's engine seed: data order and sampling; part of the state (see initial_state)
        self._sampling = self._sampling_generator(cfg.seed)
        self._teacher_cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._eval_batches = self._batches(self.data.val[:cfg.eval_size])
        self._eval_teacher: list[_Rows] = []
        # Held out from everything that steers a run (rewards, probes), so final scores are not selected on.
        self._test_examples = self.data.val[cfg.eval_size:cfg.eval_size + cfg.test_size]
        if cfg.test_size and not self._test_examples:
            raise ConfigError(f"test_size={cfg.test_size}: the validation split has no examples after the first "
                              f"eval_size={cfg.eval_size} of its {len(self.data.val)}")
        self._test_batches = self._batches(self._test_examples)
        self._test_teacher: list[_Rows] = []
        self._answers = self._answer_set()
        self.updates = 0
        # Every optimizer update this engine applied, those undone by a restore (probes, lookaheads) included:
        # a run's cost in student updates (an update skipped as non-finite is not counted). Not part of the
        # training state, so restore() leaves it alone.
        self.spent_updates = 0
        self._epoch = 0
        self._cursor = 0
        self._order = self._permutation(0)

    def _answer_set(self) -> AnswerSet | None:
        """On the keyed tasks, every valid answer of every key, tokenised for the exact metrics."""
        if self.data.source != "keyed":
            return None
        from arkd_env.assets.data import student_prompts

        return AnswerSet.build(student_prompts(self.cfg.data), self.tokenizer, self.cfg.data,
                               self.cfg.eval_batch_size)

    @classmethod
    def from_config(cls, cfg: EngineConfig, device: torch.device | None = None) -> Distiller:
        """An engine with the assets ``cfg`` names (a built preset's teacher is built and cached on first use)."""
        device = device or models.pick_device(cfg.device, key="engine.device")
        return cls(cfg, load_assets(cfg, device), device)

    # ------------------------------------------------------------------ set-up helpers
    def _optimizer_for(self, student: torch.nn.Module) -> tuple[torch.optim.Optimizer,
                                                               torch.optim.lr_scheduler.LambdaLR]:
        optimizer = torch.optim.AdamW(student.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)

    @staticmethod
    def _sampling_generator(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed + 7919)

    def _draw_seed(self) -> int:
        """A seed for one forked use of the torch RNG (dropout, sampling), drawn from the engine's generator."""
        return int(torch.randint(0, 2**62, (), generator=self._sampling).item())

    @contextlib.contextmanager
    def _own_rng(self, seed: int | None = None) -> Iterator[None]:
        """Run a block on a torch RNG seeded by ``seed`` (default: drawn from the engine's generator), giving the
        caller's global RNG back afterwards untouched."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            value = self._draw_seed() if seed is None else seed
            # Only the generators fork_rng gives back: torch.manual_seed would reseed every other GPU's too.
            torch.default_generator.manual_seed(value)
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(value)
            yield

    def _fused_heads(self) -> tuple[models.LMHeadParts | None, models.LMHeadParts | None]:
        if self.cfg.loss_path in ("naive", "chunked"):
            return None, None
        student, teacher = models.lm_head_parts(self.student), models.lm_head_parts(self.teacher)
        if student is None or teacher is None:
            if self.cfg.loss_path == "fused":
                raise ConfigError("loss_path='fused': a model has no plain linear LM head; use 'chunked'")
            return None, None
        return student, teacher

    @property
    def loss_path(self) -> str:
        """The path the divergences actually take: fused, chunked or naive."""
        if self._student_head is not None:
            return "fused"
        return "naive" if self.cfg.loss_path == "naive" else "chunked"

    def _batches(self, examples: list[TokenizedExample]) -> list[dict[str, Tensor]]:
        size = self.cfg.eval_batch_size
        return [collate(examples[i:i + size], self.pad_id) for i in range(0, len(examples), size)]

    def _lr_factor(self, update: int) -> float:
        cfg = self.cfg
        if update < cfg.warmup_updates:
            return (update + 1) / cfg.warmup_updates
        progress = min(1.0, (update - cfg.warmup_updates) / max(1, cfg.total_updates - cfg.warmup_updates))
        if cfg.lr_schedule == "linear":
            return 1.0 - progress
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train), generator=generator).tolist()

    def _next_indices(self) -> list[int]:
        size = self.cfg.batch_size
        if self._cursor + size > len(self._order):
            self._epoch += 1
            self._cursor = 0
            self._order = self._permutation(self._epoch)
        indices = self._order[self._cursor:self._cursor + size]
        self._cursor += size
        return indices

    # ------------------------------------------------------------------ model outputs at the loss rows
    def _to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def _rows(self, model: torch.nn.Module, head: models.LMHeadParts | None, batch: dict[str, Tensor]) -> _Rows:
        mask = batch["loss_mask"]
        with models.autocast(self.device):
            if head is not None:
                hidden = head.hidden(batch["input_ids"], batch["attention_mask"])
                weight = head.weight[: self.vocab_size]
                bias = None if head.bias is None else head.bias[: self.vocab_size]
                return _Rows(hidden=hidden[mask], weight=weight, bias=bias)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits
        return _Rows(logits=logits[mask][..., : self.vocab_size])

    def _teacher_rows(self, batch: dict[str, Tensor]) -> _Rows:
        with torch.no_grad(), record_function("arkd.teacher_forward"):
            return self._rows(self.teacher, self._teacher_head, batch)

    def _cached_teacher(self, indices: list[int], batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Teacher top-k (indices, log-probs) of the batch's loss rows, computed once per training example."""
        missing = [i for i in indices if i not in self._teacher_cache]
        if missing:
            sub = self._to_device(collate([self.data.train[i] for i in missing], self.pad_id))
            top_idx, top_logp = losses.topk_teacher_logprobs(self._teacher_rows(sub).as_logits(),
                                                             self.cfg.cache_top_k, self.cfg.temperature)
            counts = sub["loss_mask"].sum(dim=1).tolist()
            for example, idx, logp in zip(missing, top_idx.split(counts), top_logp.split(counts), strict=True):
                self._teacher_cache[example] = (idx.to(torch.int32).cpu(), logp.cpu())
        parts = [self._teacher_cache[i] for i in indices]
        return (torch.cat([p[0] for p in parts]).long().to(self.device),
                torch.cat([p[1] for p in parts]).to(self.device))

    def divergence(self, student: _Rows, teacher: _Rows, weights: Mapping[str, float], labels: Tensor,
                   components: tuple[str, ...] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Σ wᵢ·Dᵢ over the loss rows by the configured path; ``components`` defaults to the weighted ones."""
        names = components or tuple(weights)
        values = [float(weights.get(n, 0.0)) for n in names]
        kwargs = self._kwargs_for(names)
        temperature = self.cfg.temperature
        if student.hidden is not None and teacher.hidden is not None:
            assert student.weight is not None and teacher.weight is not None
            return losses.fused_linear_mixed_divergence(
                student.hidden, student.weight, teacher.hidden, teacher.weight, values, components=names,
                temperature=temperature, labels=labels, chunk_size=self.cfg.chunk_size, component_kwargs=kwargs,
                student_lm_head_bias=student.bias, teacher_lm_head_bias=teacher.bias)
        chunk = None if self.cfg.loss_path == "naive" else (self.cfg.chunk_size or CHUNKED_ROWS)
        return losses.mixed_divergence(student.as_logits(), teacher.as_logits(), values, components=names,
                                       temperature=temperature, labels=labels, chunk_size=chunk,
                                       component_kwargs=kwargs)

    def _kwargs_for(self, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
        return {n: kw for n, kw in self.component_kwargs.items() if n in names}

    # ------------------------------------------------------------------ training
    def _training_batch(self) -> tuple[list[int], dict[str, Tensor], bool]:
        """Indices, device batch, and whether its responses were sampled from the student (on-policy)."""
        indices = self._next_indices()
        examples = [self.data.train[i] for i in indices]
        on_policy = (self.cfg.on_policy_fraction > 0
                     and torch.rand((), generator=self._sampling).item() < self.cfg.on_policy_fraction)
        if on_policy:
            examples = self._student_responses(examples)
        return indices, self._to_device(collate(examples, self.pad_id)), on_policy

    def _student_responses(self, examples: list[TokenizedExample]) -> list[TokenizedExample]:
        """The same prompts with responses sampled from the current student (GKD-style on-policy data)."""
        budget = max(1, self.cfg.data.max_length - max(e.prompt_length for e in examples))
        generated = self.generate(examples, max_new_tokens=min(budget, self.cfg.max_new_tokens), sample=True)
        return [TokenizedExample(e.input_ids[: e.prompt_length] + g, e.prompt_length, e.record_index)
                for e, g in zip(examples, generated, strict=True)]

    def _update_loss(self, weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Loss of one micro-batch, its per-component values and the batch itself."""
        indices, batch, on_policy = self._training_batch()
        labels = batch["labels"][batch["loss_mask"]]
        with record_function("arkd.student_forward"):
            student = self._rows(self.student, self._student_head, batch)
        names = tuple(weights)
        if self.cfg.teacher_cache and not on_policy:
            top_idx, top_logp = self._cached_teacher(indices, batch)
            with record_function("arkd.loss"):
                loss, parts = losses.mixed_divergence_topk(
                    student.as_logits(), top_idx, top_logp, [float(weights[n]) for n in names], components=names,
                    temperature=self.cfg.temperature, labels=labels, component_kwargs=self._kwargs_for(names))
        else:
            teacher = self._teacher_rows(batch)
            with record_function("arkd.loss"):
                loss, parts = self.divergence(student, teacher, weights, labels)
        return loss, parts, batch

    def train_steps(self, weights: Mapping[str, float], n_steps: int) -> StepReport:
        """Run ``n_steps`` optimizer updates of Σ wᵢ·Dᵢ; an update whose loss or gradient is not finite is
        skipped (no optimizer step) and counted. Returns mean component values, the last batch's features and a
        record of each applied update."""
        if n_steps < 1:
            raise ValueError(f"n_steps={n_steps}: must be >= 1")
        unknown = [n for n in weights if n not in losses.COMPONENTS]
        if unknown:
            known = ", ".join(sorted(losses.COMPONENTS))
            raise ValueError(f"weights: unknown component {unknown[0]!r} (known: {known})")
        active = {n: float(w) for n, w in weights.items() if w != 0.0} or {next(iter(weights)): 0.0}
        totals: dict[str, Tensor] = {}
        loss_total = torch.zeros((), device=self.device)
        grad_norms = torch.zeros((), device=self.device)
        failed: list[int] = []
        applied: list[tuple[int, Tensor, float]] = []  # (update count, loss, lr); losses read once at the end
        batch: dict[str, Tensor] | None = None
        self.student.train()
        with self._own_rng():
            for _ in range(n_steps):
                self.optimizer.zero_grad(set_to_none=True)
                update_loss = torch.zeros((), device=self.device)
                for _ in range(self.cfg.grad_accum):
                    loss, parts, batch = self._update_loss(active)
                    with record_function("arkd.backward"):
                        (loss / self.cfg.grad_accum).backward()
                    update_loss += loss.detach() / self.cfg.grad_accum
                    for name, value in parts.items():
                        totals[name] = totals.get(name, torch.zeros((), device=self.device)) + value.detach()
                max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
                # One host sync per update: a non-finite update must be skipped before it reaches the weights.
                if not bool(torch.isfinite(update_loss + grad_norm).item()):
                    failed.append(self.updates)
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                lr = float(self.optimizer.param_groups[0]["lr"])
                with record_function("arkd.optimizer_step"):
                    self.optimizer.step()
                self.scheduler.step()
                self.updates += 1
                self.spent_updates += 1
                applied.append((self.updates, update_loss, lr))
                loss_total += update_loss
                grad_norms += grad_norm.detach()
        done = n_steps - len(failed)
        denominator = max(1, done * self.cfg.grad_accum)
        with record_function("arkd.features"):
            features = self.features(batch)
        features["grad_norm"] = grad_norms.item() / max(1, done)
        features["progress"] = min(1.0, self.updates / self.cfg.total_updates)
        return StepReport(components={k: v.item() / denominator for k, v in totals.items()}, features=features,
                          loss=loss_total.item() / max(1, done), n_updates=done, n_failed=len(failed),
                          failed_updates=failed, update_log=self._update_log(applied))

    @staticmethod
    def _update_log(applied: list[tuple[int, Tensor, float]]) -> list[UpdateRecord]:
        """The records of the applied updates, their losses fetched in one host sync rather than one each."""
        values = torch.stack([loss for _, loss, _ in applied]).tolist() if applied else []
        return [UpdateRecord(update=count, loss=float(value), lr=lr)
                for (count, _, lr), value in zip(applied, values, strict=True)]

    def features(self, batch: dict[str, Tensor] | None = None) -> dict[str, float]:
        """Teacher–student distribution features of the current student on (the first rows of) a training
        batch, by default the first one of the data; exact teacher even when training uses the cache."""
        if batch is None:
            batch = self._to_device(collate(self.data.train[: self.cfg.batch_size], self.pad_id))
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():  # the rows are cut before the logits are formed, so a fused head never forms them all
            student = self._rows(self.student, self._student_head, batch).first(FEATURE_ROWS).as_logits()
            teacher = self._teacher_rows(batch).first(FEATURE_ROWS).as_logits()
        self.student.train(was_training)
        labels = batch["labels"][batch["loss_mask"]][: student.shape[0]]
        return batch_features(student, teacher, labels=labels,
                              temperature=self.cfg.temperature, akl_mu=self.cfg.akl_mu)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, generate: bool = False, held_out: bool = False) -> dict[str, float]:
        """Token-weighted validation FKL, RKL, JSD, their symmetric mean ``val_divergence`` = ½(FKL + RKL) to
        the teacher, and student CE/perplexity on the references, on the first ``eval_size`` validation examples;
        with ``held_out`` the same as ``test_*`` on the ``test_size`` examples after them;
        with ``generate``, ROUGE-L (and the synthetic suite's metrics) of sampled generations (of the held-out
        examples when asked for and present). On the keyed tasks also the exact answer metrics of every key
        (``val_score``, ``val_validity``, ``val_head_recall``, ``val_tail_recall``, ``val_exact_kl``...,
        :mod:`arkd_env.eval.answers`), which involve no sampling."""
        with record_function("arkd.evaluate"):
            metrics = self._divergences("val", self._eval_batches, self._eval_teacher)
            if self._answers is not None:
                metrics.update(as_metrics(answer_scores(self.student, self._answers, self.vocab_size,
                                                        self.device, beta=self.cfg.data.keyed.score_beta)))
            if held_out and self._test_batches:
                metrics.update(self._divergences("test", self._test_batches, self._test_teacher))
            if generate and self.cfg.rouge_size > 0:
                start = self.cfg.eval_size if held_out and self._test_examples else 0
                metrics.update(self.generation_metrics(self.cfg.rouge_size, start=start))
            return metrics

    def _divergences(self, prefix: str, batches: list[dict[str, Tensor]], teacher_rows: list[_Rows]
                     ) -> dict[str, float]:
        self.student.eval()
        sums = dict.fromkeys(EVAL_COMPONENTS, 0.0)
        tokens = 0
        with torch.no_grad():
            for i, cpu_batch in enumerate(batches):
                batch = self._to_device(cpu_batch)
                if i >= len(teacher_rows):  # the teacher is frozen: its outputs on these batches never change
                    teacher_rows.append(self._teacher_rows(batch))
                student = self._rows(self.student, self._student_head, batch)
                labels = batch["labels"][batch["loss_mask"]]
                _, parts = self.divergence(student, teacher_rows[i], dict.fromkeys(EVAL_COMPONENTS, 1.0),
                                           labels, components=EVAL_COMPONENTS)
                n = int(labels.numel())
                tokens += n
                for name in EVAL_COMPONENTS:
                    sums[name] += float(parts[name].item()) * n
        self.student.train()
        metrics = {f"{prefix}_{name}": value / max(1, tokens) for name, value in sums.items()}
        metrics[f"{prefix}_ppl"] = math.exp(min(metrics[f"{prefix}_ce"], 50.0))
        # The symmetric KL favours neither objective, so a reward on it cannot be gamed by picking one of them.
        metrics[f"{prefix}_divergence"] = 0.5 * (metrics[f"{prefix}_fkl"] + metrics[f"{prefix}_rkl"])
        return metrics

    def generate(self, examples: list[TokenizedExample], max_new_tokens: int, sample: bool = True,
                 seed: int | None = None) -> list[list[int]]:
        """New token ids the student produces for each example's prompt (left-padded batch, up to <eos>)."""
        was_training = self.student.training
        self.student.eval()
        prompts = self._to_device(collate_prompts(examples, self.pad_id))
        with self._own_rng(seed):
            result = models.generate_new_tokens(self.student, prompts["input_ids"], prompts["attention_mask"],
                                                max_new_tokens, sample=sample, pad_token_id=self.pad_id,
                                                eos_token_id=self.tokenizer.eos_token_id)
        self.student.train(was_training)
        return result

    def _generate_texts(self, examples: list[TokenizedExample], sample: bool, seed: int) -> list[str]:
        texts: list[str] = []
        for i in range(0, len(examples), self.cfg.eval_batch_size):
            ids = self.generate(examples[i:i + self.cfg.eval_batch_size], self.cfg.max_new_tokens, sample=sample,
                                seed=seed)
            texts += self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts

    def generation_metrics(self, n: int, seed: int | None = None, start: int = 0) -> dict[str, float]:
        """ROUGE-L F (stemmed, best over references, ×100) of responses sampled at temperature 1 on ``n``
        validation examples from index ``start``. On the embedded suite also its metrics: exact match of greedy
        answers to the deterministic tasks, and answer-distribution metrics of the sampled answers to the open
        ones."""
        from arkd_env.eval.metrics import rouge_l_scores

        examples, records = self.data.val[start:start + n], self.data.val_records[start:start + n]
        seed = self.seed if seed is None else seed
        sampled = self._generate_texts(examples, sample=True, seed=seed)
        rouge = rouge_l_scores(sampled, [r["reference"] for r in records])
        metrics = {"rouge_l": float(np.mean(rouge)) if rouge else 0.0}
        if self.data.source == "synthetic":
            from arkd_env.assets.synthetic import DETERMINISTIC, suite_metrics

            greedy = self._generate_texts(examples, sample=False, seed=seed)
            answers = [g if r.get("kind") == DETERMINISTIC else s
                       for r, g, s in zip(records, greedy, sampled, strict=True)]
            metrics.update(suite_metrics(records, answers))
        elif self.data.source == "keyed":
            metrics.update(self._keyed_generation_metrics(examples, records, sampled, seed))
        return metrics

    def _keyed_generation_metrics(self, examples: list[TokenizedExample], records: list[dict[str, str]],
                                  sampled: list[str], seed: int) -> dict[str, float]:
        """Greedy exact match on the list tasks, and the share of sampled keyed answers that are invalid (a
        readable check on ``val_validity``, which is exact)."""
        from arkd_env.assets.synthetic import DETERMINISTIC, normalize_answer, suite_metrics

        listed = [i for i, r in enumerate(records) if r.get("kind") == DETERMINISTIC]
        metrics: dict[str, float] = {}
        if listed:
            greedy = self._generate_texts([examples[i] for i in listed], sample=False, seed=seed)
            scored = suite_metrics([records[i] for i in listed], greedy)
            metrics.update({k: v for k, v in scored.items() if k.startswith("exact_match")})
        if self._answers is not None:
            valid = {p.instruction: set(p.answers) for p in self._answers.prompts}
            keyed = [(r, s) for r, s in zip(records, sampled, strict=True) if r.get("instruction") in valid]
            if keyed:
                invalid = sum(normalize_answer(s).lower() not in valid[r["instruction"]] for r, s in keyed)
                metrics["invalid_rate"] = invalid / len(keyed)
        return metrics

    # ------------------------------------------------------------------ state
    def parameters_finite(self) -> bool:
        """Whether every student weight is finite (a skipped update keeps them so; an injected fault may not)."""
        return all(bool(torch.isfinite(p).all()) for p in self.student.parameters())

    def snapshot(self) -> dict[str, Any]:
        """The whole training state, copied: student, optimizer, scheduler, the engine's RNG and data position."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "student": {k: v.detach().clone() for k, v in self.student.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "updates": self.updates,
            "epoch": self._epoch,
            "cursor": self._cursor,
            "sampling_rng": self._sampling.get_state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Return to a state from :meth:`snapshot`; the next update is bit-identical."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"engine state version {state.get('version')!r}: this ARKD reads version {STATE_VERSION}")
        self.seed = int(state.get("seed", self.cfg.seed))  # states saved before the key existed are cfg.seed's
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.updates = int(state["updates"])
        self._epoch, self._cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self._epoch)
        self._sampling.set_state(state["sampling_rng"])

    def initial_state(self, seed: int) -> dict[str, Any]:
        """The state a fresh run on engine seed ``seed`` starts from, for :meth:`restore`: a student initialised
        with that seed, a new optimizer and schedule, and that seed's data order. This engine is not changed:
        only a student is built, by the assets' factory; teacher and data are shared."""
        student = self._new_student(seed)
        optimizer, scheduler = self._optimizer_for(student)
        return {"version": STATE_VERSION, "seed": seed,
                "student": {k: v.detach() for k, v in student.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "updates": 0, "epoch": 0, "cursor": 0, "sampling_rng": self._sampling_generator(seed).get_state()}

    def save_student(self, path: str | Path) -> Path:
        """A Hugging Face folder that plain ``from_pretrained`` and ``pipeline`` load and generate from as this
        engine does (<bos>, prompt template, greedy stop at <eos>: :mod:`arkd_env.assets.export`); an existing
        folder at ``path`` is replaced whole."""
        return save_student_folder(self.student, self.tokenizer, path, template=self.cfg.data.prompt_template,
                                   max_new_tokens=self.cfg.max_new_tokens)

"""ARKD's weighted divergence as the loss of a transformers ``Trainer`` (or any subclass, such as TRL's).

Batches follow the Hugging Face convention: ``labels`` are the input ids with ``-100`` wherever no loss applies
(padding, prompts, non-assistant turns: what TRL's collators produce), and the model shifts them itself, so
logits at position t are scored against the label at t + 1. The loss of a batch is the mixture
Σ wᵢ·Dᵢ(teacher ‖ student) over those positions (:func:`arkd_env.losses.mixed_divergence`), averaged per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from arkd_env import losses
from arkd_env.assets import models
from arkd_env.observation import batch_features, hidden_batch_features
from train.hf.callback import WeightingCallback

IGNORE_INDEX = -100
SYMMETRIC = {"fkl": 0.5, "rkl": 0.5}  # the evaluation loss: ½(FKL + RKL), the env's val_divergence
# Inputs the fused path can pass on to a model's base; any other (position_ids of a padding-free batch, images)
# goes through the plain forward so that nothing the model needs is dropped.
FUSED_INPUTS = {"input_ids", "attention_mask", "labels"}


def next_token_rows(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """``(targets, mask)`` of shape ``[B, T-1]``: the label each position's logits predict, and where a loss
    applies."""
    targets = labels[:, 1:]
    return targets.masked_fill(targets == ignore_index, 0), targets != ignore_index


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                      weights: Mapping[str, float], *, temperature: float = 1.0,
                      component_kwargs: Mapping[str, Mapping[str, float]] | None = None,
                      ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, dict[str, Tensor]]:
    """Σ wᵢ·Dᵢ of the student's ``[B, T, V]`` logits to the teacher's, on the positions ``labels`` mark.

    The two vocabularies are cut to the smaller one: checkpoints often pad their embedding matrix with rows no
    tokenizer id reaches, and the models must share a tokenizer anyway. Returns the differentiable total and the
    detached value of each component.
    """
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    targets, mask = next_token_rows(labels, ignore_index)
    return losses.mixed_divergence(student_logits[:, :-1, :vocab], teacher_logits[:, :-1, :vocab], dict(weights),
                                   mask=mask, temperature=temperature, labels=targets,
                                   component_kwargs=component_kwargs)


def check_weights(weights: Mapping[str, float], where: str = "weights") -> dict[str, float]:
    """``weights`` as floats, or one line naming the unknown component or the bad weight."""
    checked: dict[str, float] = {}
    for name, value in weights.items():
        if name not in losses.COMPONENTS:
            raise ValueError(f"{where}: unknown component {name!r} (known: {', '.join(sorted(losses.COMPONENTS))})")
        if not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{where}: {name}={value!r} must be a number >= 0")
        checked[name] = float(value)
    if not checked:
        raise ValueError(f"{where}: give at least one component, e.g. {{'fkl': 0.5, 'rkl': 0.5}}")
    return checked


class DistillationMixin:
    """``compute_loss`` for any ``transformers.Trainer`` subclass: put it first among the bases.

    ``teacher_model`` is frozen and moved to the trainer's device. ``weights`` is the mixture in force
    (``trainer.arkd_weights``), which a :class:`~train.hf.callback.WeightingCallback` among the trainer's
    callbacks changes as training goes; without one it stays fixed. In evaluation the loss is the symmetric
    ½(FKL + RKL) whatever the weights, so that ``eval_loss`` measures the student, not the current mixture.
    ``fused`` ("auto") scores the student's hidden states against its LM head chunk by chunk where the model has
    a plain linear head, never forming the full ``[tokens × vocabulary]`` logits.
    """

    # The loss is a per-token mean of each micro-batch; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga: bool | None = False

    def __init__(self, *args: Any, teacher_model: torch.nn.Module, weights: Mapping[str, float] | None = None,
                 temperature: float = 1.0, fused: bool | str = "auto",
                 component_kwargs: Mapping[str, Mapping[str, float]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        trainer: Any = self
        trainer.model_accepts_loss_kwargs = False  # older transformers read this instead of the flag above
        if temperature <= 0:
            raise ValueError(f"temperature={temperature!r}: must be > 0")
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused={fused!r}: must be True, False or 'auto'")
        self.teacher_model = teacher_model.to(trainer.args.device).eval().requires_grad_(False)
        self.arkd_weights = check_weights(weights or SYMMETRIC)
        self.arkd_temperature = float(temperature)
        self.arkd_component_kwargs = component_kwargs
        self.arkd_batch_features: dict[str, float] = {}  # the last batch's, when a callback asked for them
        self.arkd_want_features = False
        self.arkd_observation: dict[str, float] = {}  # the callback's last observation, by feature
        self._arkd_sums: dict[str, Tensor] = {}  # kept on the device: read once per log, not once per step
        self._arkd_count = 0
        self._heads = self._fused_heads(trainer.model, fused)
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, WeightingCallback):
                callback.bind(self)

    def _fused_heads(self, student: torch.nn.Module, fused: bool | str) -> tuple[Any, Any] | None:
        if fused is False:
            return None
        heads = (models.lm_head_parts(student), models.lm_head_parts(self.teacher_model))
        if heads[0] is None or heads[1] is None:
            if fused is True:
                raise ValueError("fused=True: the student or the teacher has no plain linear LM head to fuse")
            return None
        return heads

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        del num_items_in_batch  # per-token means already; see loss_is_scaled_for_ga
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError("the batch has no 'labels': use a collator that sets them, with -100 where no loss "
                             "applies (transformers' DataCollatorForLanguageModeling, or TRL's)")
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        weights = self.arkd_weights if model.training else SYMMETRIC
        if self._heads is not None and model.training and not return_outputs and set(inputs) <= FUSED_INPUTS \
                and model is getattr(self, "model", None):
            loss, parts = self._fused_loss(forward, labels, weights)
            outputs = None
        else:
            outputs = model(**forward)
            with torch.no_grad():
                teacher_logits = self.teacher_model(**forward).logits
            loss, parts = distillation_loss(outputs.logits, teacher_logits, labels, weights,
                                            temperature=self.arkd_temperature,
                                            component_kwargs=self.arkd_component_kwargs)
            if self.arkd_want_features and model.training:
                self._record_features(outputs.logits, teacher_logits, labels)
        if model.training:
            for name, value in parts.items():
                self._arkd_sums[name] = self._arkd_sums[name] + value if name in self._arkd_sums else value
            self._arkd_count += 1
        return (loss, outputs) if return_outputs else loss

    def _fused_loss(self, forward: dict[str, Any], labels: Tensor, weights: Mapping[str, float]
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        assert self._heads is not None
        student_head, teacher_head = self._heads
        ids, attention = forward["input_ids"], forward.get("attention_mask")
        student_hidden = student_head.hidden(ids, attention)[:, :-1]
        with torch.no_grad():
            teacher_hidden = teacher_head.hidden(ids, attention)[:, :-1]
        vocab = min(student_head.weight.shape[0], teacher_head.weight.shape[0])
        targets, mask = next_token_rows(labels)
        student_bias, teacher_bias = (None if head.bias is None else head.bias[:vocab]
                                      for head in (student_head, teacher_head))
        if self.arkd_want_features:  # only the feature rows' logits are formed, as in the engine
            self._set_features(hidden_batch_features(
                student_hidden, student_head.weight[:vocab], teacher_hidden, teacher_head.weight[:vocab], mask,
                targets, student_bias=student_bias, teacher_bias=teacher_bias, temperature=self.arkd_temperature))
        return losses.fused_linear_mixed_divergence(
            student_hidden, student_head.weight[:vocab], teacher_hidden, teacher_head.weight[:vocab], dict(weights),
            mask=mask, temperature=self.arkd_temperature, labels=targets, component_kwargs=self.arkd_component_kwargs,
            student_lm_head_bias=student_bias, teacher_lm_head_bias=teacher_bias)

    def _record_features(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> None:
        vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
        targets, mask = next_token_rows(labels)
        self._set_features(batch_features(student_logits[:, :-1, :vocab], teacher_logits[:, :-1, :vocab], mask,
                                          targets, temperature=self.arkd_temperature))

    def _set_features(self, features: dict[str, float]) -> None:
        self.arkd_batch_features = features
        self.arkd_want_features = False

    def arkd_log_values(self) -> dict[str, float]:
        """What the next log adds: the weights in force, each component's mean since the last log and the
        weighting callback's last observation."""
        values = {f"arkd/w_{name}": weight for name, weight in self.arkd_weights.items()}
        if {"fkl", "rkl"} <= set(self.arkd_weights):
            total = self.arkd_weights["fkl"] + self.arkd_weights["rkl"]
            values["arkd/alpha"] = self.arkd_weights["fkl"] / total if total > 0 else 0.5
        values.update({f"arkd/{name}": float(value) / max(1, self._arkd_count)
                       for name, value in self._arkd_sums.items()})
        values.update({f"arkd/obs/{name}": value for name, value in self.arkd_observation.items()})
        self._arkd_sums, self._arkd_count = {}, 0
        return values

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log, not an evaluation's
            logs = {**logs, **self.arkd_log_values()}
        super().log(logs, *args, **kwargs)  # type: ignore[misc]

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; on resuming, the weighting callback's state is read from the checkpoint first."""
        if resume_from_checkpoint:
            trainer: Any = self
            folder = (get_last_checkpoint(trainer.args.output_dir) if resume_from_checkpoint is True
                      else str(resume_from_checkpoint))
            for callback in trainer.callback_handler.callbacks:
                if isinstance(callback, WeightingCallback) and folder is not None:
                    callback.load_state(Path(folder))
        return super().train(resume_from_checkpoint, *args, **kwargs)  # type: ignore[misc]


class ARKDTrainer(DistillationMixin, Trainer):
    """A ``transformers.Trainer`` that distils ``teacher_model`` into its ``model`` with ARKD's weighted
    divergence; for TRL, mix :class:`DistillationMixin` into its trainer the same way."""

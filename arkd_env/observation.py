"""The weighting policy's observation, built from what any training loop has.

:class:`~arkd_env.env.DistillEnv` builds every observation with :func:`build_observation`, and so can a
transformers ``Trainer`` callback or a hand-written loop: the student's and the teacher's logits on the current
batch (:func:`batch_features`), the last validation metric and the one before it, the progress and the last
weights. A policy trained in the env therefore sees the same numbers, scaled the same way, wherever it runs.
The features, their scaling and their bounds are tabled in ``DistillEnv``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from arkd_env import losses

# name -> (lower bound, upper bound) after the scaling build_observation applies.
FEATURES: dict[str, tuple[float, float]] = {
    "progress": (0.0, 1.0),
    "fkl": (0.0, 10.0),
    "rkl": (0.0, 10.0),
    "akl_head_ratio": (0.0, 1.0),
    "akl_tail_ratio": (0.0, 1.0),
    "teacher_entropy": (0.0, 1.0),
    "student_entropy": (0.0, 1.0),
    "top1_agreement": (0.0, 1.0),
    "student_ce": (0.0, 10.0),
    "grad_norm": (0.0, 10.0),
    "val_metric": (0.0, 10.0),
    "val_delta": (-1.0, 1.0),
    "probe_gap": (-1.0, 1.0),
    "probe_gain": (-1.0, 1.0),
}
# Lookahead features: each step they run 2 × probe_updates extra updates (then undone), so only on request.
PROBE_FEATURES = ("probe_gap", "probe_gain")
DEFAULT_FEATURES = [f for f in FEATURES if f not in PROBE_FEATURES]
FEATURE_ROWS = 256  # token positions the batch features use: enough for stable means, and cheap
_LOG_SCALED = ("fkl", "rkl", "student_ce", "grad_norm")  # unbounded and heavy-tailed, so log(1 + x)
_ENTROPIES = ("teacher_entropy", "student_entropy")  # in nats, divided by log V into [0, 1]
_AS_IS = ("akl_head_ratio", "akl_tail_ratio", "top1_agreement")


def check_features(names: Sequence[str]) -> None:
    """Refuse a requested feature name that is neither known nor a weight (``w_<component>``)."""
    unknown = [f for f in names if f not in FEATURES and not f.startswith("w_")]
    if unknown:
        raise ValueError(f"features: unknown feature {unknown[0]!r} (known: {', '.join(FEATURES)})")


def observation_space(names: Sequence[str]) -> spaces.Box:
    """The ``Box`` of the observation :func:`build_observation` returns for these feature names; names not in
    :data:`FEATURES` (``w_<component>``, ``instance_<feature>``) lie in [0, 1]."""
    low = np.array([FEATURES.get(f, (0.0, 1.0))[0] for f in names], dtype=np.float32)
    high = np.array([FEATURES.get(f, (0.0, 1.0))[1] for f in names], dtype=np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def _feature_rows(leading: torch.Size, teacher_leading: torch.Size, mask: Tensor | None, labels: Tensor | None,
                  max_rows: int, device: torch.device) -> tuple[Tensor, ...]:
    """Indices (one tensor per leading dimension) of the first ``max_rows`` positions ``mask`` selects, in
    row-major order: indexing with them copies those rows only, never the whole (often non-contiguous) batch.
    Teacher, mask and labels must have the student's positions."""
    for name, shape in (("teacher", teacher_leading), ("mask", None if mask is None else mask.shape),
                        ("labels", None if labels is None else labels.shape)):
        if shape is not None and shape != leading:
            raise ValueError(f"{name}: positions {tuple(shape)} != the student's {tuple(leading)}")
    flat = (torch.arange(min(leading.numel(), max_rows), device=device) if mask is None
            else mask.to(device=device, dtype=torch.bool).reshape(-1).nonzero().squeeze(-1))
    return torch.unravel_index(flat[:max_rows], leading)


def batch_features(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                   labels: Tensor | None = None, *, temperature: float = 1.0, akl_mu: float = 0.5,
                   max_rows: int = FEATURE_ROWS) -> dict[str, float]:
    """Raw teacher–student features of one batch: ``fkl``, ``rkl``, ``akl_head_ratio``, ``akl_tail_ratio``,
    ``teacher_entropy``, ``student_entropy``, ``top1_agreement`` and, given ``labels``, ``student_ce``.

    ``student_logits`` and ``teacher_logits`` are ``[..., V]`` and aligned with ``labels`` (the logits at a
    position predict the label at that position: shift a causal LM's logits first); ``mask`` (the leading
    shape, True where the loss applies) selects positions. Teacher, mask and labels must share the student's
    leading shape (a ``ValueError`` names the one that does not). Only the first ``max_rows`` selected positions are
    used, in row-major order, as in the env.
    """
    vocab = student_logits.shape[-1]
    if teacher_logits.shape[-1] != vocab:
        raise ValueError(f"teacher_logits: vocabulary {teacher_logits.shape[-1]} != the student's {vocab}")
    rows = _feature_rows(student_logits.shape[:-1], teacher_logits.shape[:-1], mask, labels, max_rows,
                         student_logits.device)
    student, teacher = student_logits.detach()[rows].float(), teacher_logits.detach()[rows].float()
    targets = None if labels is None else labels.to(student.device)[rows]
    stats = losses.distribution_stats(student, teacher, temperature=temperature, mu=akl_mu)
    features = {k: float(v) for k, v in stats.items()}
    if targets is not None:
        ce = torch.nn.functional.cross_entropy(student, targets) if targets.numel() else torch.zeros(())
        features["student_ce"] = float(ce.item())
    return features


def hidden_batch_features(student_hidden: Tensor, student_head: Tensor, teacher_hidden: Tensor,
                          teacher_head: Tensor, mask: Tensor | None = None, labels: Tensor | None = None, *,
                          student_bias: Tensor | None = None, teacher_bias: Tensor | None = None,
                          temperature: float = 1.0, akl_mu: float = 0.5,
                          max_rows: int = FEATURE_ROWS) -> dict[str, float]:
    """:func:`batch_features` from last hidden states ``[..., H]`` and LM head weights ``[V, H]`` (a fused loss
    never forms the full logits): only the first ``max_rows`` selected positions are projected, so the cost is
    that of ``max_rows`` rows whatever the batch. ``mask`` and ``labels`` are as in :func:`batch_features`."""
    rows = _feature_rows(student_hidden.shape[:-1], teacher_hidden.shape[:-1], mask, labels, max_rows,
                         student_hidden.device)
    student = torch.nn.functional.linear(student_hidden.detach()[rows], student_head.detach(),
                                         None if student_bias is None else student_bias.detach())
    teacher = torch.nn.functional.linear(teacher_hidden.detach()[rows], teacher_head.detach(),
                                         None if teacher_bias is None else teacher_bias.detach())
    targets = None if labels is None else labels.to(student.device)[rows]
    return batch_features(student, teacher, labels=targets, temperature=temperature, akl_mu=akl_mu,
                          max_rows=max_rows)


def build_observation(names: Sequence[str], train: Mapping[str, float], *, val_metric: float,
                      previous_val_metric: float, progress: float, weights: Mapping[str, float],
                      vocab_size: int, extra: Mapping[str, float] | None = None) -> np.ndarray:
    """The observation of the features ``names``, scaled and clipped into :func:`observation_space`.

    ``train``: raw batch features (:func:`batch_features`, plus ``grad_norm`` if known); ``val_metric`` and
    ``previous_val_metric``: the reward's validation metric as a loss (lower is better) now and at the last
    observation; ``progress`` in [0, 1]; ``weights``: the last applied weights by component (each becomes
    ``w_<component>``); ``extra``: already scaled values by name (``probe_*``, ``instance_*``). A feature
    nothing provides is 0, as is any NaN or infinity.
    """
    log_vocab = math.log(max(2, vocab_size))
    raw: dict[str, float] = {
        **{k: math.log1p(max(0.0, train.get(k, 0.0))) for k in _LOG_SCALED},
        **{k: train.get(k, 0.0) / log_vocab for k in _ENTROPIES},
        **{k: train.get(k, 0.0) for k in _AS_IS},
        "progress": progress,
        "val_metric": math.log1p(abs(val_metric)),
        "val_delta": (previous_val_metric - val_metric) / max(abs(previous_val_metric), 1e-8),
        **{f"w_{k}": v for k, v in weights.items()},
        **(extra or {}),
    }
    space = observation_space(names)
    values = np.array([raw.get(f, 0.0) for f in names], dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(values, space.low, space.high).astype(np.float32)

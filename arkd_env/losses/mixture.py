"""The weighted mixture ``sum_i w_i * D_i`` on full logits, naive or chunked.

One entry point for both full-logit paths, so a caller switches between plain autograd (fast, holds
every ``[N, V]`` intermediate) and the chunked Function (bounded memory) with one argument and gets
the same numbers and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from arkd_env.losses.chunked import ChunkedLogitsFunction
from arkd_env.losses.plan import (
    WeightsLike,
    build_mix,
    check_pair_shapes,
    per_component,
    plan_rows,
    values_from_logits,
)


def mixed_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: WeightsLike,
    components: Sequence[str] | None = None,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
    component_kwargs: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``sum_i weights[i] * D_i`` over named components, in one pass sharing the softmaxes.

    Args:
        student_logits, teacher_logits: ``[..., V]`` (same shape).
        weights: one float per component (sequence or 1-D tensor, in ``components`` order), or a
            name -> weight mapping (missing names weigh 0). A tensor weight that requires grad gets
            ``d total / d w_i = D_i`` on every path.
        components: names in :data:`~arkd_env.losses.COMPONENTS`; ``None`` means the mapping's keys
            (or fkl, rkl).
        mask: positions that count (broadcastable to ``[...]``); ``None`` = all.
        temperature: softmax temperature of both models (``"ce"`` always uses T = 1).
        labels: ``[...]`` long targets for ``"ce"`` (-100 ignored; ``"ce"`` is averaged over the
            unmasked positions that carry a label).
        chunk_size: ``None`` for the naive path; an int evaluates token chunks of that size inside a
            custom autograd Function (same values and gradients, bounded memory).
        component_kwargs: per-component parameters, e.g. ``{"akl": {"mu": 0.6}}``.

    Returns:
        ``(total, per_component)``: the differentiable scalar and the detached per-component means.
    """
    check_pair_shapes(student_logits, teacher_logits)
    device = student_logits.device
    mix = build_mix(weights, components, component_kwargs, temperature, device)
    vocab = student_logits.shape[-1]
    rows = plan_rows(student_logits.shape[:-1], mask, labels, mix, device)
    student2d = student_logits.reshape(-1, vocab)
    teacher2d = teacher_logits.detach().reshape(-1, vocab)
    if chunk_size is None:
        values = values_from_logits(rows.select_all(student2d), rows.select_all(teacher2d), rows.labels, mix)
        means = values.sum(0) / rows.denominators
        return (means * mix.weights).sum(), per_component(means, mix)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: must be a positive integer or None")
    want_grad = torch.is_grad_enabled() and student_logits.requires_grad
    total, means = ChunkedLogitsFunction.apply(
        student2d, mix.weights, teacher2d, rows, mix, int(chunk_size), want_grad
    )
    return total, per_component(means, mix)

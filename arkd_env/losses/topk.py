"""The teacher top-k cache path: the mixture against ``k`` cached teacher log-probabilities per position.

Caching ``k`` entries plus one tail bucket instead of ``V`` logits is what lets a teacher's outputs be
stored once and reused across epochs; both distributions are collapsed onto the same ``k + 1``
buckets so every component stays a proper divergence between two distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from arkd_env.losses.logprobs import LOG_FLOOR, NO_GRAD_CHUNK_ROWS, check_temperature, floor_logp, log_probs
from arkd_env.losses.pair import Pair
from arkd_env.losses.plan import WeightsLike, build_mix, evaluate, per_component, plan_rows


def topk_teacher_logprobs(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The ``k`` most probable entries of ``softmax(teacher_logits / T)`` per position.

    Returns ``(indices [N, k] long, logprobs [N, k] float32)`` with the leading dims flattened into N,
    sorted by descending probability. Computed in row chunks to bound memory; no gradient.
    """
    check_temperature(temperature)
    vocab = teacher_logits.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"k={k!r}: must lie in [1, {vocab}] (the vocabulary size)")
    flat = teacher_logits.detach().reshape(-1, vocab)
    n = flat.shape[0]
    indices = torch.empty((n, k), dtype=torch.long, device=flat.device)
    logprobs = torch.empty((n, k), dtype=torch.float32, device=flat.device)
    with torch.no_grad():
        for start in range(0, n, NO_GRAD_CHUNK_ROWS):
            end = min(start + NO_GRAD_CHUNK_ROWS, n)
            lp = torch.log_softmax(flat[start:end].float() / temperature, dim=-1)
            values, idx = lp.topk(k, dim=-1)
            indices[start:end] = idx
            logprobs[start:end] = values
    return indices, logprobs


def _student_buckets(ls: Tensor, indices: Tensor) -> Tensor:
    """Student log-probabilities on the k teacher entries plus the tail bucket: [n, k + 1]."""
    top = ls.gather(-1, indices)
    if indices.shape[-1] >= ls.shape[-1]:
        tail = torch.full_like(top[:, :1], LOG_FLOOR)
    else:
        in_top = torch.zeros_like(ls, dtype=torch.bool).scatter_(-1, indices, True)
        # ls is floored, so every row keeps a finite entry and logsumexp has a finite gradient.
        tail = torch.logsumexp(ls.masked_fill(in_top, float("-inf")), dim=-1, keepdim=True)
    return torch.cat([top, tail], dim=-1)


def _teacher_buckets(logprobs: Tensor, vocab: int) -> Tensor:
    """Teacher top-k log-probabilities plus the tail bucket log(1 - sum top-k): [n, k + 1].

    The tail mass is recovered as 1 - sum(top-k), which float32 only knows to about 1e-7, so it is
    floored at float32 eps when k < V (an honest zero would make RKL infinite); with k = V both tail
    buckets are empty.
    """
    top = floor_logp(logprobs.detach().float())
    if logprobs.shape[-1] >= vocab:
        tail = torch.full_like(top[:, :1], LOG_FLOOR)
    else:
        covered = torch.logsumexp(top, dim=-1, keepdim=True)
        mass = (-torch.expm1(covered)).clamp(min=torch.finfo(torch.float32).eps)
        tail = mass.log()
    return torch.cat([top, tail], dim=-1)


def mixed_divergence_topk(
    student_logits: Tensor,
    teacher_topk_indices: Tensor,
    teacher_topk_logprobs: Tensor,
    weights: WeightsLike,
    components: Sequence[str] | None = None,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    component_kwargs: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`~arkd_env.losses.mixed_divergence` against a cached teacher (:func:`topk_teacher_logprobs`).

    Both distributions are collapsed onto ``k + 1`` buckets: the teacher's ``k`` top entries and one
    tail bucket holding the remaining mass, and every component is evaluated on those buckets (exact
    when ``k = V``). ``"ce"`` still uses the full student distribution. ``temperature`` applies to the
    student; the cache must have been built with the same temperature. Cache tensors may be
    ``[N, k]`` or ``[..., k]`` with the student's leading dims.
    """
    vocab = student_logits.shape[-1]
    lead = student_logits.shape[:-1]
    n_total = math.prod(lead)
    k = teacher_topk_indices.shape[-1]
    indices = teacher_topk_indices.reshape(-1, k).long()
    logprobs = teacher_topk_logprobs.reshape(-1, k)
    if indices.shape[0] != n_total or tuple(logprobs.shape) != tuple(indices.shape):
        raise ValueError(f"teacher cache shapes {tuple(teacher_topk_indices.shape)}/"
                         f"{tuple(teacher_topk_logprobs.shape)} do not match {n_total} student positions")
    device = student_logits.device
    mix = build_mix(weights, components, component_kwargs, temperature, device)
    rows = plan_rows(lead, mask, labels, mix, device)
    student = rows.select_all(student_logits.reshape(-1, vocab))
    indices = rows.select_all(indices.to(device))
    logprobs = rows.select_all(logprobs.to(device))
    ls = log_probs(student, temperature)
    pair = Pair(_student_buckets(ls, indices), _teacher_buckets(logprobs, vocab))

    def label_logp() -> Tensor:
        return ls if temperature == 1.0 else log_probs(student, 1.0)

    values = evaluate(pair, mix, rows.labels, label_logp)
    means = values.sum(0) / rows.denominators
    return (means * mix.weights).sum(), per_component(means, mix)

"""The teacher/student pair of one chunk and the AKL head/tail split both divergences and statistics read.

A mixture evaluates several components on the same rows; holding their common ``[N, V]``
intermediates here means each is built at most once per chunk instead of once per component.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from arkd_env.losses.logprobs import floor_logp, rowdot


@dataclass(frozen=True)
class HeadTailSplit:
    """The AKL split of one batch of distributions.

    ``head`` is a bool mask over the vocabulary; ``head_ratio``/``tail_ratio`` are
    ``g_head / (g_head + g_tail)`` and ``g_tail / (g_head + g_tail)`` per token (both 0.5 when p = q).
    """

    head: Tensor
    head_ratio: Tensor
    tail_ratio: Tensor


def head_tail_split(p: Tensor, q: Tensor, mu: float) -> HeadTailSplit:
    """AKL (Wu et al., COLING 2025): sort p descending; the head is every entry whose cumulative
    teacher mass (itself included) is <= mu, plus the top-1 entry always; the tail is the rest."""
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"akl split: mu={mu!r} must lie in (0, 1]")
    with torch.no_grad():
        sorted_p, order = torch.sort(p, dim=-1, descending=True)
        head_sorted = sorted_p.cumsum(dim=-1) <= mu
        head_sorted[..., 0] = True
        head = torch.empty_like(head_sorted).scatter_(-1, order, head_sorted)
        gap = (p - q).abs()
        g_head = gap.masked_fill(~head, 0.0).sum(-1)
        g_tail = gap.masked_fill(head, 0.0).sum(-1)
        total = g_head + g_tail
        # p == q exactly: both KLs vanish, so any convex weighting is right; 0.5 keeps the sum at 1.
        safe = torch.where(total > 0, total, torch.ones_like(total))
        half = torch.full_like(total, 0.5)
        head_ratio = torch.where(total > 0, g_head / safe, half)
        tail_ratio = torch.where(total > 0, g_tail / safe, half)
    return HeadTailSplit(head=head, head_ratio=head_ratio, tail_ratio=tail_ratio)


class Pair:
    """Both log-distributions of one chunk plus lazily shared intermediates.

    The components of one mixture read ``p``, ``q``, ``log p - log q`` and the AKL split from here,
    so each [N, V] intermediate is built at most once per chunk.
    """

    def __init__(self, student_logp: Tensor, teacher_logp: Tensor, floored: bool = False) -> None:
        # ``floored``: the caller already applied floor_logp (saves one pass over [N, V]).
        self.ls = student_logp if floored else floor_logp(student_logp)
        self.lt = teacher_logp.detach() if floored else floor_logp(teacher_logp.detach())
        self._splits: dict[float, HeadTailSplit] = {}

    @cached_property
    def p(self) -> Tensor:
        return self.lt.exp()

    @cached_property
    def q(self) -> Tensor:
        return self.ls.exp()

    @cached_property
    def diff(self) -> Tensor:
        """log p - log q (finite thanks to the floor)."""
        return self.lt - self.ls

    @cached_property
    def fkl(self) -> Tensor:
        return rowdot(self.p, self.diff)

    @cached_property
    def rkl(self) -> Tensor:
        return -rowdot(self.q, self.diff)

    def split(self, mu: float) -> HeadTailSplit:
        """The split at ``mu``, computed once per chunk however many components (akl, heads, tails) ask."""
        if mu not in self._splits:
            self._splits[mu] = head_tail_split(self.p, self.q.detach(), mu)
        return self._splits[mu]

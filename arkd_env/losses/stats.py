"""Gradient-free statistics of a teacher/student pair, for the environment's features and for logging.

They reuse the divergences' Pair so that the FKL/RKL an agent observes are the very numbers the loss
would train on, and run in row chunks because they are computed on whole evaluation batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arkd_env.losses.logprobs import NO_GRAD_CHUNK_ROWS, check_temperature, log_probs, rowdot
from arkd_env.losses.pair import HeadTailSplit, Pair, head_tail_split
from arkd_env.losses.plan import check_pair_shapes, flat_mask


def akl_split(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
              mu: float = 0.5) -> HeadTailSplit:
    """The AKL head/tail split of every position of ``[..., V]`` logits (no gradient), to inspect which
    entries the akl and head/tail components treat as head."""
    check_temperature(temperature)
    with torch.no_grad():
        p = log_probs(teacher_logits, temperature).exp()
        q = log_probs(student_logits, temperature).exp()
        return head_tail_split(p, q, mu)


def distribution_stats(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                       temperature: float = 1.0, mu: float = 0.5) -> dict[str, float]:
    """Means over unmasked positions of: fkl, rkl, akl_head_ratio, akl_tail_ratio, teacher_entropy,
    student_entropy (nats, at temperature T) and top1_agreement (argmax equal). No gradient; chunked
    over positions so at most a few ``[1024, V]`` tensors exist at once. All 0.0 with no position."""
    check_pair_shapes(student_logits, teacher_logits)
    check_temperature(temperature)
    keys = ("fkl", "rkl", "akl_head_ratio", "akl_tail_ratio", "teacher_entropy", "student_entropy",
            "top1_agreement")
    vocab = student_logits.shape[-1]
    device = student_logits.device
    flat = flat_mask(mask, student_logits.shape[:-1], device)
    index = None if flat is None else flat.nonzero().squeeze(-1)
    student2d = student_logits.detach().reshape(-1, vocab)
    teacher2d = teacher_logits.detach().reshape(-1, vocab)
    n = student2d.shape[0] if index is None else int(index.numel())
    # float64 sums: thousands of float32 per-token values would otherwise lose the low digits.
    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, n, NO_GRAD_CHUNK_ROWS):
            end = min(start + NO_GRAD_CHUNK_ROWS, n)
            rows = slice(start, end) if index is None else index[start:end]
            s, t = student2d[rows], teacher2d[rows]
            pair = Pair(log_probs(s, temperature), log_probs(t, temperature))
            split = pair.split(mu)
            columns = [
                pair.fkl, pair.rkl, split.head_ratio, split.tail_ratio,
                -rowdot(pair.p, pair.lt), -rowdot(pair.q, pair.ls),
                (s.argmax(-1) == t.argmax(-1)).float(),
            ]
            sums += torch.stack([c.double().sum() for c in columns])
    means = (sums / max(n, 1)).tolist()
    return dict(zip(keys, means, strict=True))

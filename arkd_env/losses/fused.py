"""The fused-linear path: the mixture scored from hidden states and LM-head weights, chunk by chunk.

No ``[N, V]`` tensor of either model ever exists: each chunk's logits are projected, scored,
differentiated and dropped, and the gradients of the student's hidden states, LM-head weight and
bias are accumulated in that same pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from arkd_env.losses.chunked import run_chunks, scaled
from arkd_env.losses.plan import Mix, Rows, WeightsLike, build_mix, per_component, plan_rows


class _FusedLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, weights: Tensor,
        teacher_hidden: Tensor, teacher_weight: Tensor, teacher_bias: Tensor | None,
        rows: Rows, mix: Mix, chunk_size: int, want_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        grad_hidden = torch.zeros_like(hidden) if want_grad else None
        # float32 accumulators: a bf16 weight gradient summed over many chunks would lose precision.
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        )
        grad_bias = (
            torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            if want_grad and bias is not None else None
        )
        chunk_hidden: dict[int, Tensor] = {}

        def load(start: int, end: int) -> tuple[Tensor, Tensor]:
            h = rows.take(hidden, start, end)
            chunk_hidden[start] = h  # the sink needs it for the weight gradient; gathered once
            student_logits = torch.nn.functional.linear(h, weight, bias)
            teacher_logits = torch.nn.functional.linear(rows.take(teacher_hidden, start, end), teacher_weight,
                                                        teacher_bias)
            return student_logits, teacher_logits

        def sink(start: int, end: int, grad: Tensor) -> None:
            assert grad_hidden is not None and grad_weight is not None
            h = chunk_hidden.pop(start)
            g = grad.to(weight.dtype)
            gh = g @ weight
            if rows.index is None:
                grad_hidden[start:end] = gh
            else:
                grad_hidden.index_copy_(0, rows.index[start:end], gh.to(grad_hidden.dtype))
            if weight.dtype == torch.float32:
                grad_weight.addmm_(g.t(), h)
            else:
                grad_weight.add_((g.t() @ h.to(g.dtype)).float())
            if grad_bias is not None:
                grad_bias.add_(grad.sum(0))

        sums = run_chunks(rows, chunk_size, load, mix, sink if want_grad else None)
        chunk_hidden.clear()
        means = sums / rows.denominators
        total = (means * weights.detach()).sum()
        ctx.grads = (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None or bias is None else grad_bias.to(bias.dtype),
        )
        ctx.means = means
        ctx.mark_non_differentiable(means)
        return total, means

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_means: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.grads
        needs = ctx.needs_input_grad
        out_hidden = scaled(grad_hidden, grad_total) if needs[0] and grad_hidden is not None else None
        out_weight = scaled(grad_weight, grad_total) if needs[1] and grad_weight is not None else None
        out_bias = scaled(grad_bias, grad_total) if needs[2] and grad_bias is not None else None
        out_weights = ctx.means * grad_total if needs[3] else None
        return out_hidden, out_weight, out_bias, out_weights, None, None, None, None, None, None, None


def fused_linear_mixed_divergence(
    student_hidden: Tensor,
    student_lm_head_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_lm_head_weight: Tensor,
    weights: WeightsLike,
    components: Sequence[str] | None = None,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
    component_kwargs: Mapping[str, Mapping[str, float]] | None = None,
    student_lm_head_bias: Tensor | None = None,
    teacher_lm_head_bias: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`~arkd_env.losses.mixed_divergence` of ``student_hidden @ W_s.T (+ b_s)`` against the
    teacher's logits, without ever forming the full logits of either model.

    Token chunks of ``chunk_size`` rows (default :func:`auto_chunk_size`) are projected, scored and
    differentiated one at a time
    inside a custom autograd Function; the gradients w.r.t. ``student_hidden``,
    ``student_lm_head_weight`` and ``student_lm_head_bias`` are accumulated in that same pass
    (weight gradient in float32), so peak memory is a few ``[chunk_size, V]`` tensors plus one
    ``[V, H]`` gradient (a smaller chunk saves memory, a larger one is faster). Teacher tensors are detached.
    Shapes: ``student_hidden [..., H]``, ``teacher_hidden [..., Ht]`` with the same leading dims,
    weights ``[V, H]``/``[V, Ht]``.
    """
    lead = student_hidden.shape[:-1]
    if tuple(teacher_hidden.shape[:-1]) != tuple(lead):
        raise ValueError(f"teacher_hidden leading shape {tuple(teacher_hidden.shape[:-1])} != "
                         f"student_hidden leading shape {tuple(lead)}")
    vocab, hidden_size = student_lm_head_weight.shape
    if student_hidden.shape[-1] != hidden_size:
        raise ValueError(f"student_hidden size {student_hidden.shape[-1]} != student_lm_head_weight columns "
                         f"{hidden_size}")
    if tuple(teacher_lm_head_weight.shape) != (vocab, teacher_hidden.shape[-1]):
        raise ValueError(f"teacher_lm_head_weight shape {tuple(teacher_lm_head_weight.shape)} does not match "
                         f"vocab {vocab} and teacher_hidden size {teacher_hidden.shape[-1]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: must be a positive integer or None (automatic)")
    device = student_hidden.device
    mix = build_mix(weights, components, component_kwargs, temperature, device)
    rows = plan_rows(lead, mask, labels, mix, device)
    if chunk_size is None:
        chunk_size = auto_chunk_size(rows.n, vocab, max(hidden_size, teacher_hidden.shape[-1]))
    params = [student_hidden, student_lm_head_weight, student_lm_head_bias]
    want_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params)
    total, means = _FusedLinearFunction.apply(
        student_hidden.reshape(-1, hidden_size),
        student_lm_head_weight,
        student_lm_head_bias,
        mix.weights,
        teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1]),
        teacher_lm_head_weight.detach(),
        None if teacher_lm_head_bias is None else teacher_lm_head_bias.detach(),
        rows,
        mix,
        int(chunk_size),
        want_grad,
    )
    return total, per_component(means, mix)


def auto_chunk_size(n_rows: int, vocab: int, hidden: int) -> int:
    """Rows per chunk such that one chunk's ``[rows, V]`` logits cost about what the ``[N, H]`` hidden states
    cost (Liger-Kernel's rule): the power of two at or above ``ceil(N / ceil(V / H))``.

    A fixed chunk is wrong at one end or the other: 1024 rows of a 49k vocabulary take more memory than the
    hidden states they come from, while a small vocabulary can afford whole batches at once."""
    per_row = max(1, -(-vocab // max(1, hidden)))  # ceil(V / H): logits per row, in hidden-state sizes
    rows = max(1, -(-n_rows // per_row))
    return 1 << (rows - 1).bit_length()

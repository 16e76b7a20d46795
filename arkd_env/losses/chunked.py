"""The chunk loop and the chunked-logits autograd Function.

Scoring token chunks one at a time and differentiating each chunk right away keeps only the
``[N, V]`` gradient of the student logits alive, never the autograd graph of every softmax; the loop
is shared with the fused-linear path, which differs only in how a chunk's logits are loaded and where
its gradient goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from arkd_env.losses.plan import Mix, Rows, values_from_logits

Loader = Callable[[int, int], tuple[Tensor, Tensor]]
"""``load(start, end) -> (student_logits, teacher_logits)`` of unmasked rows ``start:end``."""

GradSink = Callable[[int, int, Tensor], None]
"""``sink(start, end, grad)`` receives d(total)/d(student logits) of rows ``start:end``."""


def run_chunks(rows: Rows, chunk_size: int, load: Loader, mix: Mix, sink: GradSink | None) -> Tensor:
    """Sum of per-token values [K] over all rows; with a ``sink`` also hand each chunk's gradient to it.

    The gradient is taken in the forward pass, with the weights already divided by the denominators,
    so backward only has to scale it by the upstream gradient.
    """
    k = len(mix.entries)
    device = rows.denominators.device
    sums = torch.zeros(k, dtype=torch.float32, device=device)
    coef = mix.weights.detach() / rows.denominators
    for start in range(0, rows.n, chunk_size):
        end = min(start + chunk_size, rows.n)
        student, teacher = load(start, end)
        labels = None if rows.labels is None else rows.labels[start:end]
        if sink is not None:
            with torch.enable_grad():
                leaf = student.detach().requires_grad_(True)
                values = values_from_logits(leaf, teacher, labels, mix)
                objective = (values.sum(0) * coef).sum()
                (grad,) = torch.autograd.grad(objective, leaf, allow_unused=True)
            sink(start, end, torch.zeros_like(leaf) if grad is None else grad)
        else:
            with torch.no_grad():
                values = values_from_logits(student, teacher, labels, mix)
        sums += values.detach().sum(0)
        # Drop this chunk's [chunk, V] tensors before the next chunk allocates its own.
        del student, teacher, values
    return sums


def scaled(grad: Tensor, grad_output: Tensor) -> Tensor:
    """``grad * grad_output``, skipping the full-size multiply in the usual ``loss.backward()`` case."""
    if grad_output.numel() == 1 and float(grad_output) == 1.0:
        return grad
    return grad * grad_output.to(grad.dtype)


class ChunkedLogitsFunction(torch.autograd.Function):
    """``(total, means)`` of full student logits ``[N, V]``; the gradient buffer is the only saved state."""

    @staticmethod
    def forward(
        ctx: Any, student: Tensor, weights: Tensor, teacher: Tensor, rows: Rows, mix: Mix, chunk_size: int,
        want_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        grad_buffer = torch.zeros_like(student) if want_grad else None

        def load(start: int, end: int) -> tuple[Tensor, Tensor]:
            return rows.take(student, start, end), rows.take(teacher, start, end)

        def sink(start: int, end: int, grad: Tensor) -> None:
            assert grad_buffer is not None
            if rows.index is None:
                grad_buffer[start:end] = grad
            else:
                grad_buffer.index_copy_(0, rows.index[start:end], grad.to(grad_buffer.dtype))

        sums = run_chunks(rows, chunk_size, load, mix, sink if want_grad else None)
        means = sums / rows.denominators
        total = (means * weights.detach()).sum()
        ctx.grad_buffer = grad_buffer
        ctx.means = means
        ctx.mark_non_differentiable(means)
        return total, means

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_means: Tensor) -> tuple[Tensor | None, ...]:
        grad_student = None
        if ctx.needs_input_grad[0] and ctx.grad_buffer is not None:
            grad_student = scaled(ctx.grad_buffer, grad_total)
        # d total / d w_i = D_i, so a learned weight vector gets the component means as its gradient.
        grad_weights = ctx.means * grad_total if ctx.needs_input_grad[1] else None
        return grad_student, grad_weights, None, None, None, None, None

"""The numeric conventions every evaluation path shares: float32 log-probabilities with the -inf floor.

Kept apart so the naive, chunked, fused and top-k paths cannot drift apart on how a logit becomes a
log-probability: they all go through :func:`log_probs` and :func:`floor_logp`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_FLOOR = -1.0e4
"""Log-probabilities are clamped here; ``exp(LOG_FLOOR)`` underflows to exactly 0 in float32."""

IGNORE_INDEX = -100
"""The label value that marks a position without a target (the Hugging Face convention)."""

NO_GRAD_CHUNK_ROWS = 1024
"""Rows per chunk of the passes that need no gradient (statistics, top-k cache): bounds their memory."""


def check_temperature(temperature: float) -> None:
    """Reject a temperature that would turn every softmax into NaN or a one-hot before any work is done."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r}: must be a positive finite number")


def check_unit(component: str, key: str, value: float) -> None:
    """Reject a mixing coefficient outside [0, 1], where the log-space mixture would take the log of a negative."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{component}: {key}={value!r} must lie in [0, 1]")


def floor_logp(logp: Tensor) -> Tensor:
    """Clamp at :data:`LOG_FLOOR` so -inf entries become finite (0 mass, 0 gradient, no NaN)."""
    # The min is a cheap reduction; the clamp (a full copy) only happens when it is needed.
    if logp.numel() == 0 or float(logp.detach().amin()) >= LOG_FLOOR:
        return logp
    return logp.clamp(min=LOG_FLOOR)


def log_probs(logits: Tensor, temperature: float) -> Tensor:
    """float32 log-softmax of ``logits / temperature`` with the -inf floor, whatever the input dtype, so that
    half-precision models are scored with the same arithmetic as float32 ones."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    return floor_logp(torch.log_softmax(x, dim=-1))


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Sum over the vocabulary of ``a * b`` without materialising the ``[N, V]`` product."""
    return torch.einsum("...v,...v->...", a, b)

"""Property-based tests of every divergence: non-negativity, zero at equality, invariance to masked positions
and to the chunk size, and finite values and gradients for extreme logits (±1e4, -inf, float16/bfloat16)."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arkd_env import losses as L

PARTS = ("fkl_head", "fkl_tail", "rkl_head", "rkl_tail")  # pieces of FKL/RKL: each may be negative alone
DIVERGENCES = ("fkl", "rkl", "skew_fkl", "skew_rkl", "jsd", "tvd", "akl", "todi", "ab", *PARTS)
NON_NEGATIVE = tuple(n for n in DIVERGENCES if n not in PARTS)
PARAMS: dict[str, dict[str, float]] = {"skew_fkl": {"alpha": 0.25}, "jsd": {"beta": 0.3}, "akl": {"mu": 0.7},
                                       "ab": {"alpha": 0.6, "beta": 0.3}}
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

names = st.sampled_from(DIVERGENCES)
shapes = st.tuples(st.integers(1, 7), st.integers(2, 11))  # (token rows, vocabulary)
seeds = st.integers(0, 2**20)
scales = st.sampled_from([0.1, 1.0, 5.0, 30.0])
temperatures = st.sampled_from([0.5, 1.0, 2.0])


def value(name: str, s: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
    params = {name: PARAMS[name]} if name in PARAMS else None
    total, _ = L.mixed_divergence(s, t, [1.0], (name,), component_kwargs=params, **kw)
    return total


def logits(shape: tuple[int, int], seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale, torch.randn(*shape, generator=gen) * scale


def grad_of(total: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(total, [leaf], allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


@SETTINGS
@given(name=st.sampled_from(NON_NEGATIVE), shape=shapes, seed=seeds, scale=scales, temperature=temperatures)
def test_non_negative(name: str, shape: tuple[int, int], seed: int, scale: float, temperature: float) -> None:
    s, t = logits(shape, seed, scale)
    assert value(name, s, t, temperature=temperature).item() >= -1e-5


@SETTINGS
@given(name=names, shape=shapes, seed=seeds, scale=scales, temperature=temperatures)
def test_zero_at_equality(name: str, shape: tuple[int, int], seed: int, scale: float, temperature: float) -> None:
    s, _ = logits(shape, seed, scale)
    shifted = s + 3.0  # the same distributions: softmax ignores a constant shift
    assert abs(value(name, s, shifted, temperature=temperature).item()) <= 1e-5


@SETTINGS
@given(name=names, shape=shapes, seed=seeds, chunk=st.integers(1, 8),
       garbage=st.sampled_from([1e4, -1e4, float("-inf"), float("nan")]))
def test_masked_positions_change_neither_value_nor_gradient(name: str, shape: tuple[int, int], seed: int,
                                                             chunk: int, garbage: float) -> None:
    s, t = logits(shape, seed)
    mask = torch.rand(shape[0], generator=torch.Generator().manual_seed(seed + 1)) > 0.4
    mask[0] = True
    dirty_s, dirty_t = s.clone(), t.clone()
    dirty_s[~mask], dirty_t[~mask] = garbage, -garbage
    for chunk_size in (None, chunk):
        a, b = s.clone().requires_grad_(True), dirty_s.clone().requires_grad_(True)
        clean = value(name, a, t, mask=mask, chunk_size=chunk_size)
        dirty = value(name, b, dirty_t, mask=mask, chunk_size=chunk_size)
        torch.testing.assert_close(dirty, clean, rtol=1e-5, atol=1e-6)
        grad_dirty = grad_of(dirty, b)
        torch.testing.assert_close(grad_dirty[mask], grad_of(clean, a)[mask], rtol=1e-5, atol=1e-6)
        assert torch.all(grad_dirty[~mask] == 0)


@SETTINGS
@given(name=names, shape=shapes, seed=seeds, chunks=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       temperature=temperatures)
def test_invariant_to_chunk_size(name: str, shape: tuple[int, int], seed: int, chunks: tuple[int, int],
                                 temperature: float) -> None:
    s, t = logits(shape, seed, 3.0)
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    first = value(name, a, t, chunk_size=chunks[0], temperature=temperature)
    second = value(name, b, t, chunk_size=chunks[1], temperature=temperature)
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_of(first, a), grad_of(second, b), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(name=st.sampled_from((*DIVERGENCES, "ce")), shape=shapes, seed=seeds,
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       extreme=st.sampled_from([1e4, -1e4, float("-inf")]), share=st.floats(0.1, 0.9),
       chunk_size=st.sampled_from([None, 1, 4]))
def test_extreme_logits_give_finite_values_and_gradients(name: str, shape: tuple[int, int], seed: int,
                                                          dtype: torch.dtype, extreme: float, share: float,
                                                          chunk_size: int | None) -> None:
    s, t = logits(shape, seed, 10.0)
    gen = torch.Generator().manual_seed(seed + 2)
    for x in (s, t):  # a share of the entries of both models become extreme; every row keeps a finite one
        hit = torch.rand(shape, generator=gen) < share
        hit[:, 0] = False
        x[hit] = extreme
    leaf = s.to(dtype).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0],), generator=gen)
    total = value(name, leaf, t.to(dtype), labels=labels, chunk_size=chunk_size)
    assert torch.isfinite(total).item(), total
    grad = grad_of(total, leaf)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


@SETTINGS
@given(shape=shapes, seed=seeds, chunk=st.integers(1, 8), extreme=st.sampled_from([1e4, -1e4]))
def test_fused_path_is_finite_for_extreme_hidden_states(shape: tuple[int, int], seed: int, chunk: int,
                                                        extreme: float) -> None:
    rows, vocab = shape
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, 4, generator=gen)
    hidden[0, 0] = extreme  # logits of that row reach ±1e4 and beyond
    hidden.requires_grad_(True)
    head = torch.randn(vocab, 4, generator=gen, requires_grad=True)
    total, _ = L.fused_linear_mixed_divergence(hidden, head, torch.randn(rows, 3, generator=gen),
                                               torch.randn(vocab, 3, generator=gen), [0.5, 0.5], chunk_size=chunk)
    assert torch.isfinite(total).item()
    grads = torch.autograd.grad(total, [hidden, head])
    assert all(torch.isfinite(g).all() for g in grads)

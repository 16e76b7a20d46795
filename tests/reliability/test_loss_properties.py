"""Property-based tests of every divergence: non-negativity and bounds, zero at equality, invariance to masked
positions, chunked and fused paths equal to the naive one, and finite values and gradients for extreme logits
(±1e4, -inf, float16/bfloat16). Component parameters are drawn too, because each property must hold over the
whole range a component accepts, not at one setting. Hand-computed values live in tests/test_losses.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arkd_env import losses as L

PARTS = ("fkl_head", "fkl_tail", "rkl_head", "rkl_tail")  # pieces of FKL/RKL: each may be negative alone
DIVERGENCES = ("fkl", "rkl", "skew_fkl", "skew_rkl", "jsd", "tvd", "akl", "todi", "ab", *PARTS)
NON_NEGATIVE = tuple(n for n in DIVERGENCES if n not in PARTS)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
# Tests parametrized over the components draw fewer examples each: every component gets its own share
# instead of hoping a shared budget of draws reaches it.
PER_COMPONENT = settings(max_examples=10, deadline=None, derandomize=True)

Case = tuple[str, dict[str, float]]  # a component name and its parameters

_unit = st.floats(0.0, 1.0)
_mu = st.fixed_dictionaries({"mu": st.floats(0.05, 1.0)})
PARAMETERS: dict[str, st.SearchStrategy[dict[str, float]]] = {
    "skew_fkl": st.fixed_dictionaries({"alpha": _unit}),
    "skew_rkl": st.fixed_dictionaries({"alpha": _unit}),
    "jsd": st.fixed_dictionaries({"beta": _unit}),
    "ab": st.fixed_dictionaries({"alpha": _unit, "beta": _unit}),
    **{name: _mu for name in ("akl", *PARTS)},
}


def draw_case(data: st.DataObject, name: str) -> Case:
    return name, data.draw(PARAMETERS.get(name, st.just({})), label="params")


shapes = st.tuples(st.integers(1, 7), st.integers(2, 11))  # (token rows, vocabulary)
seeds = st.integers(0, 2**20)
scales = st.sampled_from([0.1, 1.0, 5.0, 30.0])
temperatures = st.sampled_from([0.5, 1.0, 2.0])


def value(case: Case, s: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
    name, params = case
    total, _ = L.mixed_divergence(s, t, [1.0], (name,), component_kwargs={name: params} if params else None, **kw)
    return total


def logits(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale, torch.randn(*shape, generator=gen) * scale


def grad_of(total: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(total, [leaf], allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


@pytest.mark.parametrize("name", NON_NEGATIVE)
@PER_COMPONENT
@given(data=st.data(), shape=shapes, seed=seeds, scale=scales, temperature=temperatures)
def test_non_negative_and_bounded(name: str, data: st.DataObject, shape: tuple[int, int], seed: int, scale: float,
                                  temperature: float) -> None:
    case = draw_case(data, name)
    s, t = logits(shape, seed, scale)
    got = value(case, s, t, temperature=temperature).item()
    assert got >= -1e-6
    params = case[1]
    if name == "tvd":
        assert got <= 1.0 + 1e-6
    beta = params.get("beta", 0.0)
    if name == "jsd" and 0.0 < beta < 1.0:  # bounded by the entropy of the (beta, 1 - beta) coin
        assert got <= -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta)) + 1e-5


@pytest.mark.parametrize("name", DIVERGENCES)
@PER_COMPONENT
@given(data=st.data(), shape=shapes, seed=seeds, scale=scales, temperature=temperatures)
def test_zero_at_equality(name: str, data: st.DataObject, shape: tuple[int, int], seed: int, scale: float,
                          temperature: float) -> None:
    s, _ = logits(shape, seed, scale)
    shifted = s + 3.0  # the same distributions: softmax ignores a constant shift
    assert abs(value(draw_case(data, name), s, shifted, temperature=temperature).item()) <= 1e-5


@pytest.mark.parametrize("name", DIVERGENCES)
@PER_COMPONENT
@given(data=st.data(), batch=st.integers(1, 3), shape=shapes, seed=seeds, chunk=st.integers(1, 8),
       garbage=st.sampled_from([1e4, -1e4, 3e38, -3e38, float("inf"), float("-inf"), float("nan")]))
def test_masked_positions_change_neither_value_nor_gradient(name: str, data: st.DataObject, batch: int,
                                                             shape: tuple[int, int], seed: int, chunk: int,
                                                             garbage: float) -> None:
    case = draw_case(data, name)
    rows, vocab = shape
    s, t = logits((batch, rows, vocab), seed)
    mask = torch.rand(batch, rows, generator=torch.Generator().manual_seed(seed + 1)) > 0.4
    mask[0, 0] = True
    dirty_s, dirty_t = s.clone(), t.clone()
    dirty_s[~mask], dirty_t[~mask] = garbage, -garbage
    # The masked mean must be the plain mean over the kept rows: right values and right denominator.
    kept = s[mask].requires_grad_(True)
    reference = value(case, kept, t[mask])
    reference_grad = grad_of(reference, kept)
    for chunk_size in (None, chunk):
        leaf = dirty_s.clone().requires_grad_(True)
        dirty = value(case, leaf, dirty_t, mask=mask, chunk_size=chunk_size)
        torch.testing.assert_close(dirty, reference, rtol=1e-5, atol=1e-6)
        grad = grad_of(dirty, leaf)
        torch.testing.assert_close(grad[mask], reference_grad, rtol=1e-5, atol=1e-6)
        assert torch.all(grad[~mask] == 0)


@pytest.mark.parametrize("name", DIVERGENCES)
@PER_COMPONENT
@given(data=st.data(), shape=shapes, seed=seeds, chunk=st.integers(1, 10), scale=st.floats(0.1, 8.0),
       temperature=st.floats(0.5, 3.0), masked=st.booleans())
def test_chunked_equals_naive(name: str, data: st.DataObject, shape: tuple[int, int], seed: int, chunk: int,
                              scale: float, temperature: float, masked: bool) -> None:
    case = draw_case(data, name)
    s, t = logits(shape, seed, scale)
    mask = torch.rand(shape[0], generator=torch.Generator().manual_seed(seed + 1)) > 0.4 if masked else None
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    naive = value(case, a, t, mask=mask, temperature=temperature)
    chunked = value(case, b, t, mask=mask, temperature=temperature, chunk_size=chunk)
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_of(chunked, b), grad_of(naive, a), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(rows=st.integers(1, 8), vocab=st.integers(2, 10), chunk=st.integers(1, 9), seed=seeds,
       w_fkl=st.floats(0.0, 1.0))
def test_fused_equals_naive(rows: int, vocab: int, chunk: int, seed: int, w_fkl: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    hs = torch.randn(rows, 5, generator=gen, requires_grad=True)
    w = torch.randn(vocab, 5, generator=gen, requires_grad=True)
    ht, wt = torch.randn(rows, 3, generator=gen), torch.randn(vocab, 3, generator=gen)
    mask = torch.rand(rows, generator=gen) > 0.3
    weights = [w_fkl, 1.0 - w_fkl]
    fused, _ = L.fused_linear_mixed_divergence(hs, w, ht, wt, weights, mask=mask, chunk_size=chunk)
    naive, _ = L.mixed_divergence(hs @ w.T, ht @ wt.T, weights, mask=mask)
    torch.testing.assert_close(fused, naive, rtol=1e-5, atol=1e-6)
    for got, want in zip(torch.autograd.grad(fused, [hs, w]), torch.autograd.grad(naive, [hs, w]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", (*DIVERGENCES, "ce"))
@PER_COMPONENT
@given(data=st.data(), shape=shapes, seed=seeds, dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       extreme=st.sampled_from([1e4, -1e4, float("-inf")]), share=st.floats(0.1, 0.9),
       chunk_size=st.sampled_from([None, 1, 4]))
def test_extreme_logits_give_finite_values_and_gradients(name: str, data: st.DataObject, shape: tuple[int, int],
                                                          seed: int, dtype: torch.dtype, extreme: float,
                                                          share: float, chunk_size: int | None) -> None:
    case = draw_case(data, name)
    s, t = logits(shape, seed, 10.0)
    gen = torch.Generator().manual_seed(seed + 2)
    for x in (s, t):  # a share of the entries of both models become extreme; every row keeps a finite one
        hit = torch.rand(shape, generator=gen) < share
        hit[:, 0] = False
        x[hit] = extreme
    leaf = s.to(dtype).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0],), generator=gen)
    total = value(case, leaf, t.to(dtype), labels=labels, chunk_size=chunk_size)
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

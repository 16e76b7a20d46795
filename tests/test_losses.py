"""Tests of arkd_env.losses: hand-computed values, API behaviour, -inf handling, and parity of the fast
paths (chunked, fused-linear, top-k cache) with the naive one. The properties that must hold for any
input (non-negativity, zero at equality, masking, chunk-size invariance) are hypothesis tests in
tests/reliability/test_loss_properties.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from arkd_env import losses as L

ALL_DIVERGENCES = [
    "fkl", "rkl", "skew_fkl", "skew_rkl", "jsd", "tvd", "akl", "todi", "ab",
    "fkl_head", "fkl_tail", "rkl_head", "rkl_tail",
]
ALL_COMPONENTS = [*ALL_DIVERGENCES, "ce"]
# Non-default parameters so that parameter plumbing is exercised too.
KWARGS: dict[str, dict[str, float]] = {
    "skew_fkl": {"alpha": 0.2},
    "skew_rkl": {"alpha": 0.3},
    "jsd": {"beta": 0.4},
    "akl": {"mu": 0.6},
    "ab": {"alpha": 0.7, "beta": 0.4},
    "fkl_head": {"mu": 0.6},
    "fkl_tail": {"mu": 0.6},
    "rkl_head": {"mu": 0.6},
    "rkl_tail": {"mu": 0.6},
}

# ---------------------------------------------------------------------------------------------
# Pure-python references on explicit probability vectors (no torch, no code shared with losses)
# ---------------------------------------------------------------------------------------------

P = [0.6, 0.25, 0.15]  # teacher
Q = [0.2, 0.5, 0.3]  # student


def kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def head_set(p: list[float], mu: float) -> set[int]:
    order = sorted(range(len(p)), key=lambda i: -p[i])
    head, cum = {order[0]}, 0.0
    for i in order:
        cum += p[i]
        if cum <= mu:
            head.add(i)
    return head


def ref_value(name: str, p: list[float], q: list[float], **kw: float) -> float:
    v = range(len(p))
    if name == "fkl":
        return kl(p, q)
    if name == "rkl":
        return kl(q, p)
    if name == "skew_fkl":
        a = kw.get("alpha", 0.1)
        return kl(p, [a * p[i] + (1 - a) * q[i] for i in v])
    if name == "skew_rkl":
        a = kw.get("alpha", 0.1)
        return kl(q, [a * q[i] + (1 - a) * p[i] for i in v])
    if name == "jsd":
        b = kw.get("beta", 0.5)
        m = [b * p[i] + (1 - b) * q[i] for i in v]
        return b * kl(p, m) + (1 - b) * kl(q, m)
    if name == "tvd":
        return 0.5 * sum(abs(p[i] - q[i]) for i in v)
    if name in ("akl", "fkl_head", "fkl_tail", "rkl_head", "rkl_tail"):
        head = head_set(p, kw.get("mu", 0.5))
        fh = sum(p[i] * math.log(p[i] / q[i]) for i in head)
        ft = sum(p[i] * math.log(p[i] / q[i]) for i in v if i not in head)
        rh = sum(q[i] * math.log(q[i] / p[i]) for i in head)
        rt = sum(q[i] * math.log(q[i] / p[i]) for i in v if i not in head)
        if name != "akl":
            return {"fkl_head": fh, "fkl_tail": ft, "rkl_head": rh, "rkl_tail": rt}[name]
        gh = sum(abs(p[i] - q[i]) for i in head)
        gt = sum(abs(p[i] - q[i]) for i in v if i not in head)
        return gh / (gh + gt) * (fh + ft) + gt / (gh + gt) * (rh + rt)
    if name == "todi":
        total = 0.0
        for i in v:
            w = 1 / (1 + math.exp(-(math.log(p[i]) - math.log(q[i]))))
            total += w * p[i] * math.log(p[i] / q[i]) + (1 - w) * q[i] * math.log(q[i] / p[i])
        return total
    if name == "ab":
        a, b = kw.get("alpha", 0.5), kw.get("beta", 0.5)
        return ref_ab(p, q, a, b)
    raise KeyError(name)


def ref_ab(p: list[float], q: list[float], a: float, b: float) -> float:
    """Cichocki's alpha-beta divergence with its limits written out one case at a time."""
    pairs = list(zip(p, q, strict=True))
    if a == 0 and b == 0:
        return sum(0.5 * (math.log(x) - math.log(y)) ** 2 for x, y in pairs)
    if a + b == 0:
        return sum(math.log(y**a / x**a) + x**a / y**a - 1 for x, y in pairs) / a**2
    if b == 0:
        return sum(x**a * math.log(x**a / y**a) - x**a + y**a for x, y in pairs) / a**2
    if a == 0:
        return sum(y**b * math.log(y**b / x**b) - y**b + x**b for x, y in pairs) / b**2
    s = a + b
    return -sum(x**a * y**b - a / s * x**s - b / s * y**s for x, y in pairs) / (a * b)


def logits_of(probs: list[float], shift: float = 0.0) -> torch.Tensor:
    return torch.tensor([math.log(x) + shift for x in probs], dtype=torch.float32)


def call(name: str, s: torch.Tensor, t: torch.Tensor, params: dict[str, float] | None = None,
         mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    total, _ = L.mixed_divergence(s, t, [1.0], (name,), mask=mask, temperature=temperature,
                                  component_kwargs={name: params} if params else None)
    return total


# ---------------------------------------------------------------------------------------------
# Exact values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_DIVERGENCES)
def test_exact_value_on_hand_distribution(name: str) -> None:
    # Logits are shifted by an arbitrary constant: softmax must remove it.
    s, t = logits_of(Q, 1.3), logits_of(P, -0.7)
    got = call(name, s, t)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(ref_value(name, P, Q), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(("name", "kw"), [
    ("skew_fkl", {"alpha": 0.35}), ("skew_rkl", {"alpha": 0.8}), ("jsd", {"beta": 0.2}),
    ("akl", {"mu": 0.9}), ("fkl_head", {"mu": 0.9}), ("rkl_tail", {"mu": 0.9}),
    ("ab", {"alpha": 0.3, "beta": 0.9}), ("ab", {"alpha": 1.0, "beta": 0.0}),
    ("ab", {"alpha": 0.0, "beta": 1.0}), ("ab", {"alpha": 0.0, "beta": 0.0}),
    ("ab", {"alpha": 2.0, "beta": 0.0}), ("ab", {"alpha": 0.0, "beta": 0.5}),
    ("ab", {"alpha": 0.5, "beta": -0.5}), ("ab", {"alpha": 1.5, "beta": -0.4}),
])
def test_exact_value_with_parameters(name: str, kw: dict[str, float]) -> None:
    got = call(name, logits_of(Q), logits_of(P), kw)
    assert got.item() == pytest.approx(ref_value(name, P, Q, **kw), rel=1e-5, abs=1e-7)


def test_mask_and_temperature_pass_through() -> None:
    # The second row is the reverse pair: counting it would change the value.
    s, t = torch.stack([logits_of(Q), logits_of(P)]), torch.stack([logits_of(P), logits_of(Q)])
    mask = torch.tensor([True, False])
    assert call("fkl", s, t, {}, mask).item() == pytest.approx(kl(P, Q), rel=1e-5)

    def at_temperature(d: list[float], temperature: float) -> list[float]:
        raw = [x ** (1 / temperature) for x in d]
        return [x / sum(raw) for x in raw]

    got = call("fkl", s, t, {}, mask, 2.0).item()
    assert got == pytest.approx(kl(at_temperature(P, 2.0), at_temperature(Q, 2.0)), rel=1e-5)


def test_ab_reduces_to_fkl_and_rkl_and_is_continuous_at_its_limits() -> None:
    s, t = torch.randn(4, 9), torch.randn(4, 9)
    fkl_like = call("ab", s, t, {"alpha": 1.0, "beta": 0.0})
    rkl_like = call("ab", s, t, {"alpha": 0.0, "beta": 1.0})
    torch.testing.assert_close(fkl_like, call("fkl", s, t), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(rkl_like, call("rkl", s, t), rtol=1e-5, atol=1e-7)
    for a, b in [(1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.6, -0.6)]:
        exact = call("ab", s, t, {"alpha": a, "beta": b}).item()
        near = call("ab", s, t, {"alpha": a + 3e-5, "beta": b + 2e-5}).item()
        assert near == pytest.approx(exact, rel=1e-3, abs=1e-6), (a, b)


def test_jsd_matches_trl_generalized_jsd_formula() -> None:
    """Re-implementation of TRL GKDTrainer.generalized_jsd_loss as documented: the mixture
    log m = logsumexp(log q + log(1 - beta), log p + log beta), loss = beta*KL(p||m) + (1-beta)*KL(q||m),
    "batchmean" over the labelled tokens; beta = 0 -> KL(p||q), beta = 1 -> KL(q||p)."""
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 13) * 2, torch.randn(2, 5, 13) * 2
    labels = torch.randint(0, 13, (2, 5))
    labels[0, :2] = -100

    def trl_like(beta: float, temperature: float) -> torch.Tensor:
        lq = torch.log_softmax(s / temperature, -1).double()
        lp = torch.log_softmax(t / temperature, -1).double()
        if beta == 0:
            per = (lp.exp() * (lp - lq)).sum(-1)
        elif beta == 1:
            per = (lq.exp() * (lq - lp)).sum(-1)
        else:
            log_m = torch.logsumexp(torch.stack([lq + math.log(1 - beta), lp + math.log(beta)]), dim=0)
            kl_teacher = (lp.exp() * (lp - log_m)).sum(-1)
            kl_student = (lq.exp() * (lq - log_m)).sum(-1)
            per = beta * kl_teacher + (1 - beta) * kl_student
        keep = labels != -100
        return (per[keep].sum() / keep.sum()).float()

    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for temperature in (1.0, 2.0):
            ours = call("jsd", s, t, {"beta": beta}, mask=labels != -100, temperature=temperature)
            torch.testing.assert_close(ours, trl_like(beta, temperature), rtol=1e-5, atol=1e-7)


def test_cross_entropy_component_ignores_minus_100_and_uses_t1() -> None:
    s = torch.stack([logits_of(Q), logits_of(P), logits_of(Q)])
    t = torch.zeros_like(s)
    labels = torch.tensor([1, -100, 0])
    expected = (-math.log(Q[1]) - math.log(Q[0])) / 2  # mean over the two labelled positions
    for temperature in (1.0, 3.0):
        total, parts = L.mixed_divergence(s, t, {"ce": 1.0}, labels=labels, temperature=temperature)
        assert total.item() == pytest.approx(expected, rel=1e-6)
        assert parts["ce"].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        L.mixed_divergence(s, t, {"ce": 1.0})


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def test_head_tail_parts_sum_to_fkl_and_rkl() -> None:
    torch.manual_seed(4)
    s, t = torch.randn(5, 23), torch.randn(5, 23) * 2
    for mu in (0.3, 0.5, 0.95):
        for whole in ("fkl", "rkl"):
            head = call(f"{whole}_head", s, t, {"mu": mu})
            tail = call(f"{whole}_tail", s, t, {"mu": mu})
            torch.testing.assert_close(head + tail, call(whole, s, t))


def test_akl_ratios_sum_to_one_and_top1_is_head() -> None:
    torch.manual_seed(5)
    s, t = torch.randn(4, 6, 19), torch.randn(4, 6, 19) * 4
    split = L.akl_split(s, t, mu=0.5)
    torch.testing.assert_close(split.head_ratio + split.tail_ratio, torch.ones(4, 6))
    assert bool(split.head.gather(-1, t.argmax(-1, keepdim=True)).all())
    same = L.akl_split(t, t)  # p == q: both gaps are zero, ratios fall back to 1/2
    torch.testing.assert_close(same.head_ratio, torch.full((4, 6), 0.5))


def test_mixed_divergence_fkl_only_and_rkl_only_limits() -> None:
    torch.manual_seed(6)
    t = torch.randn(3, 7, 29)
    for weights, reference in (([1.0, 0.0], "fkl"), ([0.0, 1.0], "rkl")):
        s1 = torch.randn(3, 7, 29, requires_grad=True)
        s2 = s1.detach().clone().requires_grad_(True)
        total, parts = L.mixed_divergence(s1, t, weights)
        ref = call(reference, s2, t)
        torch.testing.assert_close(total, ref)
        total.backward()
        ref.backward()
        assert s1.grad is not None and s2.grad is not None
        torch.testing.assert_close(s1.grad, s2.grad)
        assert set(parts) == {"fkl", "rkl"} and not parts["fkl"].requires_grad


def test_weights_as_mapping_sequence_and_tensor_agree_and_tensor_gets_gradient() -> None:
    torch.manual_seed(7)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    a, _ = L.mixed_divergence(s, t, {"rkl": 0.25, "fkl": 0.75})
    b, _ = L.mixed_divergence(s, t, [0.75, 0.25])
    w = torch.tensor([0.75, 0.25], requires_grad=True)
    for chunk in (None, 3):
        c, parts = L.mixed_divergence(s, t, w, chunk_size=chunk)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
        (grad,) = torch.autograd.grad(c, w)
        torch.testing.assert_close(grad, torch.stack([parts["fkl"], parts["rkl"]]))


def test_mask_accepts_int_and_broadcasts_and_all_masked_gives_zero() -> None:
    s, t = torch.randn(3, 4, 9, requires_grad=True), torch.randn(3, 4, 9)
    by_row = call("fkl", s, t, mask=torch.tensor([1, 0, 0, 1]))  # broadcast over the batch dim
    explicit = call("fkl", s, t, mask=torch.tensor([1, 0, 0, 1]).bool().expand(3, 4))
    torch.testing.assert_close(by_row, explicit)
    for chunk in (None, 2):
        total, parts = L.mixed_divergence(s, t, [0.5, 0.5], mask=torch.zeros(3, 4), chunk_size=chunk)
        assert total.item() == 0.0 and parts["fkl"].item() == 0.0
        total.backward()
        assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", ALL_DIVERGENCES)
def test_temperature_scales_logits(name: str) -> None:
    torch.manual_seed(9)
    s, t = torch.randn(5, 12) * 3, torch.randn(5, 12) * 3
    kw = KWARGS.get(name, {})
    torch.testing.assert_close(call(name, s, t, kw, temperature=2.5), call(name, s / 2.5, t / 2.5, kw),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_DIVERGENCES)
def test_minus_inf_vocabulary_entries(name: str) -> None:
    """Entries that are -inf for both models are the same as entries that do not exist."""
    torch.manual_seed(10)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    pad = torch.full((4, 3), float("-inf"))
    kw = KWARGS.get(name, {})
    ref = call(name, s, t, kw)
    leaf = torch.cat([s, pad], -1).requires_grad_(True)
    got = call(name, leaf, torch.cat([t, pad], -1), kw)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    got.backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and (leaf.grad[:, 10:] == 0).all()


def test_minus_inf_on_one_side_only_stays_finite() -> None:
    s, t = torch.randn(3, 8), torch.randn(3, 8)
    s[:, 0] = float("-inf")  # the student puts no mass where the teacher does: FKL is (softly) huge
    t[:, 1] = float("-inf")  # and the teacher none where the student does: RKL is huge
    for name in ALL_DIVERGENCES:
        leaf = s.clone().requires_grad_(True)
        value = call(name, leaf, t, KWARGS.get(name))
        value.backward()
        assert torch.isfinite(value), name
        assert leaf.grad is not None and not torch.isnan(leaf.grad).any(), name
    assert call("fkl", s, t).item() > 100 and call("rkl", s, t).item() > 100


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_use_float32_math(dtype: torch.dtype) -> None:
    torch.manual_seed(11)
    s, t = (torch.randn(6, 40) * 4).to(dtype), (torch.randn(6, 40) * 4).to(dtype)
    leaf = s.clone().requires_grad_(True)
    value, _ = L.mixed_divergence(leaf, t, [0.5, 0.5])
    assert value.dtype == torch.float32
    reference, _ = L.mixed_divergence(s.float(), t.float(), [0.5, 0.5])
    torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-7)
    value.backward()
    assert leaf.grad is not None and leaf.grad.dtype == dtype


def test_teacher_never_gets_gradient() -> None:
    s = torch.randn(3, 9, requires_grad=True)
    t = torch.randn(3, 9, requires_grad=True)
    for chunk in (None, 2):
        total, _ = L.mixed_divergence(s, t, [1.0] * len(ALL_DIVERGENCES), ALL_DIVERGENCES, chunk_size=chunk,
                                      component_kwargs=KWARGS)
        total.backward()
    assert t.grad is None
    hs, w = torch.randn(3, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    ht, wt = torch.randn(3, 5, requires_grad=True), torch.randn(9, 5, requires_grad=True)
    total, _ = L.fused_linear_mixed_divergence(hs, w, ht, wt, [0.5, 0.5], chunk_size=2)
    total.backward()
    assert ht.grad is None and wt.grad is None and hs.grad is not None and w.grad is not None


def test_errors_name_the_value_at_fault() -> None:
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="unknown component 'nope'"):
        L.mixed_divergence(s, t, [1.0], ("nope",))
    with pytest.raises(ValueError, match="weights has 1 entries"):
        L.mixed_divergence(s, t, [1.0])
    with pytest.raises(ValueError, match="'zzz'"):
        L.mixed_divergence(s, t, {"fkl": 1.0, "zzz": 1.0}, components=("fkl", "rkl"))
    with pytest.raises(ValueError, match="temperature"):
        call("fkl", s, t, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        call("skew_fkl", s, t, {"alpha": 1.5})
    with pytest.raises(ValueError, match="unknown parameter 'gamma'"):
        L.mixed_divergence(s, t, [1.0], ("akl",), component_kwargs={"akl": {"gamma": 1.0}})
    with pytest.raises(ValueError, match="teacher_logits shape"):
        call("fkl", s, torch.randn(2, 6))
    with pytest.raises(ValueError, match="chunk_size"):
        L.mixed_divergence(s, t, [0.5, 0.5], chunk_size=0)


def test_register_component_is_usable_on_every_path() -> None:
    def squared_gap(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
        return ((student_logp.exp() - teacher_logp.exp()) ** 2).sum(-1)

    L.register_component("test_sq", squared_gap)
    try:
        with pytest.raises(ValueError, match="already exists"):
            L.register_component("test_sq", squared_gap)
        torch.manual_seed(12)
        s, t = torch.randn(7, 6), torch.randn(7, 6)
        p, q = torch.softmax(t, -1), torch.softmax(s, -1)
        expected = ((p - q) ** 2).sum(-1).mean()
        for chunk in (None, 3):
            total, parts = L.mixed_divergence(s, t, {"test_sq": 2.0}, chunk_size=chunk)
            torch.testing.assert_close(parts["test_sq"], expected)
            torch.testing.assert_close(total, 2 * expected)
    finally:
        L.COMPONENTS.pop("test_sq")


# ---------------------------------------------------------------------------------------------
# Chunked and fused-linear paths equal the naive one
# ---------------------------------------------------------------------------------------------


def _grads(total: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(total, leaves))


@pytest.mark.parametrize(("chunk", "temperature"), [(1, 1.7), (3, 1.0), (7, 1.7), (64, 0.8)])
def test_chunked_and_fused_match_naive(chunk: int, temperature: float) -> None:
    gen = torch.Generator().manual_seed(13 + chunk)
    b, n, h, ht, v = 3, 5, 8, 6, 37  # N = 15 positions, not a multiple of the chunk sizes
    hs = torch.randn(b, n, h, generator=gen, requires_grad=True)
    w = (torch.randn(v, h, generator=gen) * 0.7).requires_grad_(True)
    bias = (torch.randn(v, generator=gen) * 0.1).requires_grad_(True)
    hid_t, w_t = torch.randn(b, n, ht, generator=gen), torch.randn(v, ht, generator=gen)
    bias_t = torch.randn(v, generator=gen)
    mask = torch.rand(b, n, generator=gen) > 0.3
    labels = torch.randint(0, v, (b, n), generator=gen)
    labels[0, 1] = -100
    weights = torch.rand(len(ALL_COMPONENTS), generator=gen)
    kwargs: dict[str, Any] = {"components": ALL_COMPONENTS, "mask": mask, "temperature": temperature,
                              "labels": labels, "component_kwargs": KWARGS}

    s_logits = torch.nn.functional.linear(hs, w, bias)
    t_logits = torch.nn.functional.linear(hid_t, w_t, bias_t)
    naive, naive_parts = L.mixed_divergence(s_logits, t_logits, weights, **kwargs)
    naive_grads = _grads(naive, [hs, w, bias])

    s_leaf = s_logits.detach().requires_grad_(True)
    ref_leaf = s_logits.detach().requires_grad_(True)
    ref_total, _ = L.mixed_divergence(ref_leaf, t_logits, weights, **kwargs)
    chunked, chunked_parts = L.mixed_divergence(s_leaf, t_logits, weights, chunk_size=chunk, **kwargs)
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-7)
    chunked_grad, ref_grad = _grads(chunked, [s_leaf])[0], _grads(ref_total, [ref_leaf])[0]
    torch.testing.assert_close(chunked_grad, ref_grad, rtol=1e-5, atol=1e-7)

    fused, fused_parts = L.fused_linear_mixed_divergence(
        hs, w, hid_t, w_t, weights, chunk_size=chunk, student_lm_head_bias=bias, teacher_lm_head_bias=bias_t,
        **kwargs)
    torch.testing.assert_close(fused, naive, rtol=1e-5, atol=1e-7)
    for got, want in zip(_grads(fused, [hs, w, bias]), naive_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name in ALL_COMPONENTS:
        torch.testing.assert_close(chunked_parts[name], naive_parts[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(fused_parts[name], naive_parts[name], rtol=1e-5, atol=1e-7)


def test_fused_without_grad_and_without_mask() -> None:
    torch.manual_seed(14)
    hs, w, ht, wt = torch.randn(10, 4), torch.randn(21, 4), torch.randn(10, 3), torch.randn(21, 3)
    with torch.no_grad():
        fused, _ = L.fused_linear_mixed_divergence(hs, w, ht, wt, [0.3, 0.7], chunk_size=4)
    naive, _ = L.mixed_divergence(hs @ w.T, ht @ wt.T, [0.3, 0.7])
    torch.testing.assert_close(fused, naive)


def test_fused_scales_gradient_by_upstream_gradient() -> None:
    torch.manual_seed(15)
    hs, w = torch.randn(6, 4, requires_grad=True), torch.randn(13, 4, requires_grad=True)
    ht, wt = torch.randn(6, 4), torch.randn(13, 4)
    fused, _ = L.fused_linear_mixed_divergence(hs, w, ht, wt, [0.5, 0.5], chunk_size=4)
    naive, _ = L.mixed_divergence(hs @ w.T, ht @ wt.T, [0.5, 0.5])
    for got, want in zip(_grads(3.0 * fused, [hs, w]), _grads(3.0 * naive, [hs, w]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Top-k teacher cache
# ---------------------------------------------------------------------------------------------


def test_topk_cache_is_exact_when_k_is_vocabulary() -> None:
    torch.manual_seed(16)
    s, t = torch.randn(2, 4, 12, requires_grad=True), torch.randn(2, 4, 12) * 2
    mask = torch.rand(2, 4) > 0.25
    labels = torch.randint(0, 12, (2, 4))
    idx, lp = L.topk_teacher_logprobs(t, 12, temperature=1.5)
    assert idx.shape == (8, 12) and lp.dtype == torch.float32
    kwargs: dict[str, Any] = {"components": ALL_COMPONENTS, "mask": mask, "temperature": 1.5,
                              "labels": labels, "component_kwargs": KWARGS}
    weights = torch.rand(len(ALL_COMPONENTS))
    cached, cached_parts = L.mixed_divergence_topk(s, idx, lp, weights, **kwargs)
    exact, exact_parts = L.mixed_divergence(s, t, weights, **kwargs)
    torch.testing.assert_close(cached, exact, rtol=1e-5, atol=1e-6)
    for name in ALL_COMPONENTS:
        torch.testing.assert_close(cached_parts[name], exact_parts[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grads(cached, [s])[0], _grads(exact, [s])[0], rtol=1e-4, atol=1e-6)


def test_topk_cache_error_is_small_when_k_covers_most_mass() -> None:
    torch.manual_seed(17)
    v = 300
    t = torch.randn(16, v)
    t[:, :10] += 9.0  # ten entries hold almost all teacher mass
    s = t + 0.3 * torch.randn(16, v)
    idx, lp = L.topk_teacher_logprobs(t, 10)
    assert float(lp.exp().sum(-1).min()) > 0.99
    for name in ("fkl", "rkl", "jsd", "tvd", "akl"):
        cached, _ = L.mixed_divergence_topk(s, idx, lp, [1.0], (name,))
        exact = call(name, s, t)
        assert abs(cached.item() - exact.item()) <= 0.05 * exact.item() + 1e-4, name
    # collapsing onto buckets can only lose information: the FKL of the buckets is a lower bound
    cached_fkl, _ = L.mixed_divergence_topk(s, idx, lp, [1.0], ("fkl",))
    assert cached_fkl.item() <= call("fkl", s, t).item() + 1e-6


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_distribution_stats_hand_values() -> None:
    s = torch.stack([logits_of(Q), logits_of(P), logits_of(Q)])
    t = torch.stack([logits_of(P), logits_of(P), logits_of(Q)])
    mask = torch.tensor([True, True, False])
    stats = L.distribution_stats(s, t, mask=mask)
    entropy = lambda d: -sum(x * math.log(x) for x in d)  # noqa: E731
    assert stats["fkl"] == pytest.approx(kl(P, Q) / 2, rel=1e-5)
    assert stats["rkl"] == pytest.approx(kl(Q, P) / 2, rel=1e-5)
    assert stats["teacher_entropy"] == pytest.approx(entropy(P), rel=1e-5)
    assert stats["student_entropy"] == pytest.approx((entropy(Q) + entropy(P)) / 2, rel=1e-5)
    assert stats["top1_agreement"] == pytest.approx(0.5)
    assert stats["akl_head_ratio"] + stats["akl_tail_ratio"] == pytest.approx(1.0)
    gh, gt = abs(P[0] - Q[0]), abs(P[1] - Q[1]) + abs(P[2] - Q[2])  # head = {0} at mu = 0.5
    assert stats["akl_head_ratio"] == pytest.approx((gh / (gh + gt) + 0.5) / 2, rel=1e-5)
    assert all(v == 0.0 for v in L.distribution_stats(s, t, mask=torch.zeros(3)).values())


@pytest.mark.parametrize(("n", "vocab", "hidden", "expected"), [
    (4096, 49152, 576, 64),  # ceil(V/H) = 86 logits per hidden row: 4096 / 86 -> 48 -> 64
    (1024, 32000, 2048, 64),
    (100, 100, 32, 32),
    (0, 10, 10, 1),
    (5, 8, 64, 8),  # a vocabulary smaller than H: every row in one chunk
])
def test_auto_chunk_size_is_ligers_rule(n: int, vocab: int, hidden: int, expected: int) -> None:
    assert L.auto_chunk_size(n, vocab, hidden) == expected


def test_fused_default_chunk_gives_the_explicit_chunks_result() -> None:
    torch.manual_seed(0)
    h, w = torch.randn(40, 6, requires_grad=True), torch.randn(50, 6, requires_grad=True)
    th, tw = torch.randn(40, 5), torch.randn(50, 5)
    auto, _ = L.fused_linear_mixed_divergence(h, w, th, tw, [0.3, 0.7], ("fkl", "rkl"))
    (grad_auto,) = torch.autograd.grad(auto, [h])
    fixed, _ = L.fused_linear_mixed_divergence(h, w, th, tw, [0.3, 0.7], ("fkl", "rkl"), chunk_size=3)
    (grad_fixed,) = torch.autograd.grad(fixed, [h])
    assert auto.item() == pytest.approx(fixed.item(), rel=1e-5)
    assert torch.allclose(grad_auto, grad_fixed, atol=1e-6)
    assert L.auto_chunk_size(40, 50, 6) == 8  # so the default really chunked, differently from 3

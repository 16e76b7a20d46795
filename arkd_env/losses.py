"""Divergences between a teacher's and a student's next-token distributions.

Conventions (shared by every function here):

* ``p = softmax(teacher_logits / T)`` is the teacher, ``q = softmax(student_logits / T)`` the student,
  both computed in float32 whatever the input dtype; the teacher never receives a gradient.
* Logits have shape ``[..., V]``. A divergence is summed over the vocabulary and averaged over the
  token positions where ``mask`` is true (``mask`` broadcastable to ``[...]``, bool or 0/1,
  ``None`` = every position). With no unmasked position the result is ``0.0``, never NaN. Masked
  positions are dropped before any arithmetic, so garbage there cannot leak into values or gradients.
* ``-inf`` logits (a masked vocabulary) follow ``0 * log 0 = 0``: log-probabilities are clamped at
  :data:`LOG_FLOOR`, whose ``exp`` is exactly 0 in float32. Where only one side puts zero mass on an
  entry the true KL is infinite; the clamp turns that into a large finite penalty (about
  ``1e4 * mass``) instead of ``inf``/NaN gradients.
* Temperature divides the logits only; no ``T**2`` factor is applied (the caller may scale).

Three evaluation paths give the same numbers and gradients:

* naive: :func:`mixed_divergence` with ``chunk_size=None`` (plain autograd on full ``[N, V]`` tensors);
* chunked: ``chunk_size=int`` evaluates token chunks inside a custom autograd Function that keeps
  only the ``[N, V]`` gradient of the student logits, never the whole graph;
* fused-linear: :func:`fused_linear_mixed_divergence` forms the logits of both models chunk by chunk
  from hidden states and LM-head weights and accumulates the gradients of the student's hidden
  states, LM-head weight and bias in the same pass, so no ``[N, V]`` tensor ever exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "COMPONENTS",
    "IGNORE_INDEX",
    "LOG_FLOOR",
    "HeadTailSplit",
    "ab_divergence",
    "akl",
    "akl_split",
    "cross_entropy_component",
    "distribution_stats",
    "fkl_head",
    "fkl_tail",
    "forward_kl",
    "fused_linear_mixed_divergence",
    "jsd",
    "mixed_divergence",
    "mixed_divergence_topk",
    "register_component",
    "reverse_kl",
    "rkl_head",
    "rkl_tail",
    "skew_forward_kl",
    "skew_reverse_kl",
    "todi",
    "topk_teacher_logprobs",
    "tvd",
]

LOG_FLOOR = -1.0e4
"""Log-probabilities are clamped here; ``exp(LOG_FLOOR)`` underflows to exactly 0 in float32."""

IGNORE_INDEX = -100
_AB_TOL = 1e-6  # |alpha|, |beta| or |alpha+beta| below this use the analytic limit of the AB formula
_STATS_CHUNK = 1024

ComponentFn = Callable[..., Tensor]
"""``fn(student_logp [N, V], teacher_logp [N, V], **params) -> per-token values [N]``."""

WeightsLike = Sequence[float] | Mapping[str, float] | Tensor


# --------------------------------------------------------------------------------------------
# Elementary helpers
# --------------------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r}: must be a positive finite number")


def _check_unit(component: str, key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{component}: {key}={value!r} must lie in [0, 1]")


def _floor_logp(logp: Tensor) -> Tensor:
    """Clamp at LOG_FLOOR so -inf entries become finite (0 mass, 0 gradient, no NaN)."""
    # The min is a cheap reduction; the clamp (a full copy) only happens when it is needed.
    if logp.numel() == 0 or float(logp.detach().amin()) >= LOG_FLOOR:
        return logp
    return logp.clamp(min=LOG_FLOOR)


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """float32 log-softmax of ``logits / temperature`` with the -inf floor."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    return _floor_logp(torch.log_softmax(x, dim=-1))


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Sum over the vocabulary of ``a * b`` without materialising the product."""
    return torch.einsum("...v,...v->...", a, b)


@dataclass(frozen=True)
class HeadTailSplit:
    """The AKL split of one batch of distributions.

    ``head`` is a bool mask over the vocabulary; ``head_ratio``/``tail_ratio`` are
    ``g_head / (g_head + g_tail)`` and ``g_tail / (g_head + g_tail)`` per token (both 0.5 when p = q).
    """

    head: Tensor
    head_ratio: Tensor
    tail_ratio: Tensor


class _Pair:
    """Both log-distributions of one chunk plus lazily shared intermediates.

    The components of one mixture read ``p``, ``q``, ``log p - log q`` and the AKL split from here,
    so each [N, V] intermediate is built at most once per chunk.
    """

    def __init__(self, student_logp: Tensor, teacher_logp: Tensor, floored: bool = False) -> None:
        # ``floored``: the caller already applied _floor_logp (saves one pass over [N, V]).
        self.ls = student_logp if floored else _floor_logp(student_logp)
        self.lt = teacher_logp.detach() if floored else _floor_logp(teacher_logp.detach())
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
        return _rowdot(self.p, self.diff)

    @cached_property
    def rkl(self) -> Tensor:
        return -_rowdot(self.q, self.diff)

    def split(self, mu: float) -> HeadTailSplit:
        if mu not in self._splits:
            self._splits[mu] = _head_tail_split(self.p, self.q.detach(), mu)
        return self._splits[mu]


def _head_tail_split(p: Tensor, q: Tensor, mu: float) -> HeadTailSplit:
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


# --------------------------------------------------------------------------------------------
# Built-in components on a _Pair: each returns per-token values [N]
# --------------------------------------------------------------------------------------------


def _c_fkl(pair: _Pair) -> Tensor:
    return pair.fkl


def _c_rkl(pair: _Pair) -> Tensor:
    return pair.rkl


def _log_mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(weight_a * a + (1 - weight_a) * b) for 0 < weight_a < 1, in log space."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _c_skew_fkl(pair: _Pair, alpha: float = 0.1) -> Tensor:
    _check_unit("skew_fkl", "alpha", alpha)
    if alpha == 0.0:
        return pair.fkl
    if alpha == 1.0:
        return torch.zeros_like(pair.fkl)
    log_m = _log_mixture(pair.lt, pair.ls, alpha)
    return _rowdot(pair.p, pair.lt - log_m)


def _c_skew_rkl(pair: _Pair, alpha: float = 0.1) -> Tensor:
    _check_unit("skew_rkl", "alpha", alpha)
    if alpha == 0.0:
        return pair.rkl
    if alpha == 1.0:
        return torch.zeros_like(pair.rkl)
    log_m = _log_mixture(pair.ls, pair.lt, alpha)
    return _rowdot(pair.q, pair.ls - log_m)


def _c_jsd(pair: _Pair, beta: float = 0.5) -> Tensor:
    _check_unit("jsd", "beta", beta)
    # TRL's GKD trainer returns FKL at beta=0 and RKL at beta=1 (the limits of JSD/beta and
    # JSD/(1-beta)); we follow it so that jsd(beta) == TRL for every beta in [0, 1].
    if beta == 0.0:
        return pair.fkl
    if beta == 1.0:
        return pair.rkl
    log_m = _log_mixture(pair.lt, pair.ls, beta)
    return beta * _rowdot(pair.p, pair.lt - log_m) + (1.0 - beta) * _rowdot(pair.q, pair.ls - log_m)


def _c_tvd(pair: _Pair) -> Tensor:
    return 0.5 * (pair.p - pair.q).abs().sum(-1)


def _c_akl(pair: _Pair, mu: float = 0.5) -> Tensor:
    split = pair.split(mu)
    return split.head_ratio * pair.fkl + split.tail_ratio * pair.rkl


def _c_todi(pair: _Pair) -> Tensor:
    # w = sigmoid(log p - log q), detached: FKL weight where the student under-estimates, RKL where it
    # over-estimates. loss = sum [w p (lp - lq) + (1 - w) q (lq - lp)] = sum (w p - (1 - w) q)(lp - lq).
    w = torch.sigmoid(pair.diff.detach())
    return _rowdot(w * pair.p - (1.0 - w) * pair.q, pair.diff)


def _c_ab(pair: _Pair, alpha: float = 0.5, beta: float = 0.5) -> Tensor:
    return _ab_per_token(pair.ls, pair.lt, alpha, beta)


def _ab_per_token(ls: Tensor, lt: Tensor, alpha: float, beta: float) -> Tensor:
    """Alpha-beta divergence (Cichocki et al. 2011; ABKD, Wang et al., ICML 2025) per token.

    General case: D = 1/(a b) * sum[ a/(a+b) p^(a+b) + b/(a+b) q^(a+b) - p^a q^b ]. The singular
    lines use the continuous limits: b=0: 1/a^2 sum[p^a log(p^a/q^a) - p^a + q^a] (FKL at a=1);
    a=0: 1/b^2 sum[q^b log(q^b/p^b) - q^b + p^b] (RKL at b=1); a+b=0: 1/a^2 sum[log(q^a/p^a) +
    (q^a/p^a)^-1 - 1]; a=b=0: 1/2 sum (log p - log q)^2. Evaluated in float64 because the general
    formula cancels badly near those lines.
    """
    a_log = lt.double()
    b_log = ls.double()
    # Entries outside both supports (masked vocabulary) are set to p = q = 1, which contributes
    # exactly 0 in every branch and keeps negative powers of 0 (inf) out of the graph.
    outside = (lt <= LOG_FLOOR) & (ls <= LOG_FLOOR)
    if bool(outside.any()):
        a_log = a_log.masked_fill(outside, 0.0)
        b_log = b_log.masked_fill(outside, 0.0)
    s = alpha + beta
    small_a, small_b, small_s = abs(alpha) < _AB_TOL, abs(beta) < _AB_TOL, abs(s) < _AB_TOL
    if small_a and small_b:
        terms = 0.5 * (a_log - b_log) ** 2
    elif small_s:
        t = alpha * (b_log - a_log)  # log(q^a / p^a)
        terms = (t + torch.expm1(-t)) / alpha**2
    elif small_b:
        pa, qa = torch.exp(alpha * a_log), torch.exp(alpha * b_log)
        terms = (pa * (alpha * (a_log - b_log)) - pa + qa) / alpha**2
    elif small_a:
        qb, pb = torch.exp(beta * b_log), torch.exp(beta * a_log)
        terms = (qb * (beta * (b_log - a_log)) - qb + pb) / beta**2
    else:
        mixed = torch.exp(alpha * a_log + beta * b_log)
        terms = (alpha / s * torch.exp(s * a_log) + beta / s * torch.exp(s * b_log) - mixed) / (alpha * beta)
    return terms.sum(-1).float()


def _masked_fkl(pair: _Pair, keep: Tensor) -> Tensor:
    return _rowdot(pair.p.masked_fill(~keep, 0.0), pair.diff)


def _masked_rkl(pair: _Pair, keep: Tensor) -> Tensor:
    return -_rowdot(pair.q.masked_fill(~keep, 0.0), pair.diff)


def _c_fkl_head(pair: _Pair, mu: float = 0.5) -> Tensor:
    return _masked_fkl(pair, pair.split(mu).head)


def _c_fkl_tail(pair: _Pair, mu: float = 0.5) -> Tensor:
    return _masked_fkl(pair, ~pair.split(mu).head)


def _c_rkl_head(pair: _Pair, mu: float = 0.5) -> Tensor:
    return _masked_rkl(pair, pair.split(mu).head)


def _c_rkl_tail(pair: _Pair, mu: float = 0.5) -> Tensor:
    return _masked_rkl(pair, ~pair.split(mu).head)


def cross_entropy_component(student_logp: Tensor, teacher_logp: Tensor, *, labels: Tensor) -> Tensor:
    """Per-token ``-log q(label)``; 0 where ``labels == -100``. ``teacher_logp`` is unused."""
    del teacher_logp
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    nll = -student_logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, nll, torch.zeros_like(nll))


_PAIR_IMPLS: dict[str, Callable[..., Tensor]] = {
    "fkl": _c_fkl,
    "rkl": _c_rkl,
    "skew_fkl": _c_skew_fkl,
    "skew_rkl": _c_skew_rkl,
    "jsd": _c_jsd,
    "tvd": _c_tvd,
    "akl": _c_akl,
    "todi": _c_todi,
    "ab": _c_ab,
    "fkl_head": _c_fkl_head,
    "fkl_tail": _c_fkl_tail,
    "rkl_head": _c_rkl_head,
    "rkl_tail": _c_rkl_tail,
}

_BUILTIN_PARAMS: dict[str, frozenset[str]] = {
    "skew_fkl": frozenset({"alpha"}),
    "skew_rkl": frozenset({"alpha"}),
    "jsd": frozenset({"beta"}),
    "akl": frozenset({"mu"}),
    "ab": frozenset({"alpha", "beta"}),
    "fkl_head": frozenset({"mu"}),
    "fkl_tail": frozenset({"mu"}),
    "rkl_head": frozenset({"mu"}),
    "rkl_tail": frozenset({"mu"}),
}


def _public_component(impl: Callable[..., Tensor]) -> ComponentFn:
    def component(student_logp: Tensor, teacher_logp: Tensor, **params: float) -> Tensor:
        return impl(_Pair(student_logp.float(), teacher_logp.float()), **params)

    component.__name__ = impl.__name__.removeprefix("_c_")
    component.__doc__ = impl.__doc__
    return component


COMPONENTS: dict[str, ComponentFn] = {name: _public_component(impl) for name, impl in _PAIR_IMPLS.items()}
"""Name -> ``fn(student_logp [N, V], teacher_logp [N, V], **params) -> [N]``. Extend with
:func:`register_component`."""
COMPONENTS["ce"] = cross_entropy_component

# Registry entries that are still the built-in wrappers run on the shared _Pair of the chunk.
_BUILTIN_BY_FN: dict[ComponentFn, Callable[..., Tensor]] = {
    COMPONENTS[name]: impl for name, impl in _PAIR_IMPLS.items()
}
_NEEDS_LABELS: set[str] = {"ce"}


def register_component(
    name: str, fn: ComponentFn, *, needs_labels: bool = False, overwrite: bool = False
) -> None:
    """Add a divergence component usable by name in the mixed functions.

    ``fn(student_logp, teacher_logp, **params)`` receives float32 log-probabilities ``[N, V]`` at the
    run's temperature (clamped at :data:`LOG_FLOOR`; ``teacher_logp`` detached) and must return the
    per-token values ``[N]``. With ``needs_labels=True`` it is called as
    ``fn(student_logp_at_T1, teacher_logp, labels=labels [N], **params)`` and averaged over the
    unmasked positions whose label is not -100 (like ``"ce"``).
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"register_component: name={name!r} must be a non-empty string")
    if not callable(fn):
        raise ValueError(f"register_component: fn for {name!r} is not callable")
    if name in COMPONENTS and not overwrite:
        raise ValueError(f"register_component: {name!r} already exists; pass overwrite=True to replace it")
    COMPONENTS[name] = fn
    if needs_labels:
        _NEEDS_LABELS.add(name)
    else:
        _NEEDS_LABELS.discard(name)


# --------------------------------------------------------------------------------------------
# Mixture specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: ComponentFn
    pair_impl: Callable[..., Tensor] | None
    params: dict[str, float]
    needs_labels: bool


@dataclass(frozen=True)
class _Mix:
    entries: tuple[_Entry, ...]
    weights: Tensor  # float32 [K]; may carry a gradient on the naive path
    temperature: float

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def needs_labels(self) -> bool:
        return any(e.needs_labels for e in self.entries)


def _resolve_names(weights: WeightsLike, components: Sequence[str] | None) -> tuple[str, ...]:
    if components is not None:
        names = (components,) if isinstance(components, str) else tuple(components)
    elif isinstance(weights, Mapping):
        names = tuple(weights)
    else:
        names = ("fkl", "rkl")
    if not names:
        raise ValueError("components: at least one component name is required")
    if len(set(names)) != len(names):
        raise ValueError(f"components={list(names)}: names must be unique")
    for name in names:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; known: {sorted(COMPONENTS)}")
    return names


def _resolve_weights(weights: WeightsLike, names: tuple[str, ...], device: torch.device) -> Tensor:
    if isinstance(weights, Tensor):
        w = weights.to(device=device, dtype=torch.float32).reshape(-1)
        if w.numel() != len(names):
            raise ValueError(f"weights has {w.numel()} entries but components={list(names)} has {len(names)}")
        return w
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ValueError(f"weights key {unknown[0]!r} is not one of components={list(names)}")
        values = [float(weights.get(n, 0.0)) for n in names]
    else:
        values = [float(v) for v in weights]
        if len(values) != len(names):
            raise ValueError(
                f"weights has {len(values)} entries but components={list(names)} has {len(names)}"
            )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"weights={values}: every weight must be finite")
    return torch.tensor(values, dtype=torch.float32, device=device)


def _build_mix(
    weights: WeightsLike,
    components: Sequence[str] | None,
    component_kwargs: Mapping[str, Mapping[str, float]] | None,
    temperature: float,
    device: torch.device,
) -> _Mix:
    _check_temperature(temperature)
    names = _resolve_names(weights, components)
    kwargs = dict(component_kwargs or {})
    for key in kwargs:
        if key not in names:
            raise ValueError(f"component_kwargs key {key!r} is not one of components={list(names)}")
    entries = []
    for name in names:
        fn = COMPONENTS[name]
        impl = _BUILTIN_BY_FN.get(fn)
        params = {k: float(v) for k, v in kwargs.get(name, {}).items()}
        if impl is not None:
            allowed = _BUILTIN_PARAMS.get(name, frozenset())
            bad = sorted(set(params) - allowed)
            if bad:
                raise ValueError(
                    f"component_kwargs[{name!r}]: unknown parameter {bad[0]!r}; allowed: {sorted(allowed)}"
                )
        entries.append(_Entry(name, fn, impl, params, name in _NEEDS_LABELS))
    return _Mix(tuple(entries), _resolve_weights(weights, names, device), temperature)


def _evaluate(pair: _Pair, mix: _Mix, labels: Tensor | None, label_logp: Callable[[], Tensor]) -> Tensor:
    """Per-token values of every component of ``mix``: [n, K] float32."""
    columns = []
    n = pair.ls.shape[0]
    for entry in mix.entries:
        if entry.needs_labels:
            if labels is None:
                raise ValueError(f"component {entry.name!r} needs labels; pass labels=")
            value = entry.fn(label_logp(), pair.lt, labels=labels, **entry.params)
        elif entry.pair_impl is not None:
            value = entry.pair_impl(pair, **entry.params)
        else:
            value = entry.fn(pair.ls, pair.lt, **entry.params)
        if tuple(value.shape) != (n,):
            raise ValueError(f"component {entry.name!r} returned shape {tuple(value.shape)}, expected ({n},)")
        columns.append(value.float())
    return torch.stack(columns, dim=-1)


def _values_from_logits(student: Tensor, teacher: Tensor, labels: Tensor | None, mix: _Mix) -> Tensor:
    temperature = mix.temperature
    ls = _log_probs(student, temperature)
    with torch.no_grad():
        lt = _log_probs(teacher, temperature)
    pair = _Pair(ls, lt, floored=True)
    cache: list[Tensor] = []

    def label_logp() -> Tensor:
        # Cross-entropy on labels is the usual T = 1 quantity whatever the distillation temperature.
        if temperature == 1.0:
            return pair.ls
        if not cache:
            cache.append(_log_probs(student, 1.0))
        return cache[0]

    return _evaluate(pair, mix, labels, label_logp)


# --------------------------------------------------------------------------------------------
# Row bookkeeping: flatten leading dims, pick the unmasked rows, count denominators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    n_total: int
    index: Tensor | None  # long [n] of unmasked rows, None = all rows
    labels: Tensor | None  # long [n] labels of those rows
    denominators: Tensor  # float32 [K]

    @property
    def n(self) -> int:
        return self.n_total if self.index is None else int(self.index.numel())

    def take(self, x: Tensor, start: int, end: int) -> Tensor:
        if self.index is None:
            return x[start:end]
        return x.index_select(0, self.index[start:end])

    def select_all(self, x: Tensor) -> Tensor:
        return x if self.index is None else x.index_select(0, self.index)


def _flat_mask(mask: Tensor | None, lead: torch.Size, device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=device)
    try:
        m = torch.broadcast_to(m, lead)
    except RuntimeError as err:
        raise ValueError(
            f"mask shape {tuple(m.shape)} does not broadcast to positions {tuple(lead)}"
        ) from err
    return (m != 0).reshape(-1)


def _plan_rows(lead: torch.Size, mask: Tensor | None, labels: Tensor | None, mix: _Mix,
               device: torch.device) -> _Rows:
    n_total = math.prod(lead)
    flat = _flat_mask(mask, lead, device)
    index = None if flat is None else flat.nonzero().squeeze(-1)
    flat_labels = None
    if labels is not None:
        if tuple(labels.shape) != tuple(lead):
            raise ValueError(f"labels shape {tuple(labels.shape)} != token positions {tuple(lead)}")
        flat_labels = labels.to(device).reshape(-1).long()
        if index is not None:
            flat_labels = flat_labels.index_select(0, index)
    elif mix.needs_labels:
        missing = next(e.name for e in mix.entries if e.needs_labels)
        raise ValueError(f"component {missing!r} needs labels; pass labels=")
    n = n_total if index is None else int(index.numel())
    n_labeled = int((flat_labels != IGNORE_INDEX).sum()) if flat_labels is not None else n
    counts = [max(n_labeled if e.needs_labels else n, 1) for e in mix.entries]
    denominators = torch.tensor(counts, dtype=torch.float32, device=device)
    return _Rows(n_total, index, flat_labels, denominators)


def _check_pair_shapes(student: Tensor, teacher: Tensor) -> None:
    if student.dim() < 1:
        raise ValueError("student_logits must have a vocabulary dimension [..., V]")
    if tuple(student.shape) != tuple(teacher.shape):
        raise ValueError(
            f"teacher_logits shape {tuple(teacher.shape)} != student_logits shape {tuple(student.shape)}"
        )


def _per_component(means: Tensor, mix: _Mix) -> dict[str, Tensor]:
    detached = means.detach()
    return {name: detached[k] for k, name in enumerate(mix.names)}


# --------------------------------------------------------------------------------------------
# Chunk loop shared by the chunked and fused-linear autograd Functions
# --------------------------------------------------------------------------------------------

_Loader = Callable[[int, int], tuple[Tensor, Tensor]]
_GradSink = Callable[[int, int, Tensor, Tensor], None]


def _run_chunks(rows: _Rows, chunk_size: int, load: _Loader, mix: _Mix, want_grad: bool,
                sink: _GradSink | None) -> Tensor:
    """Sum of per-token values [K] over all rows; with ``want_grad`` also hand d(total)/d(student
    logits) of every chunk to ``sink(start, end, grad, student_logits_chunk)``."""
    k = len(mix.entries)
    device = rows.denominators.device
    sums = torch.zeros(k, dtype=torch.float32, device=device)
    coef = mix.weights.detach() / rows.denominators
    for start in range(0, rows.n, chunk_size):
        end = min(start + chunk_size, rows.n)
        student, teacher = load(start, end)
        labels = None if rows.labels is None else rows.labels[start:end]
        if want_grad and sink is not None:
            with torch.enable_grad():
                leaf = student.detach().requires_grad_(True)
                values = _values_from_logits(leaf, teacher, labels, mix)
                objective = (values.sum(0) * coef).sum()
                (grad,) = torch.autograd.grad(objective, leaf, allow_unused=True)
            sink(start, end, torch.zeros_like(leaf) if grad is None else grad, student)
        else:
            with torch.no_grad():
                values = _values_from_logits(student, teacher, labels, mix)
        sums += values.detach().sum(0)
        # Drop this chunk's [chunk, V] tensors before the next chunk allocates its own.
        del student, teacher, values
    return sums


def _scaled(grad: Tensor, grad_output: Tensor) -> Tensor:
    if grad_output.numel() == 1 and float(grad_output) == 1.0:
        return grad
    return grad * grad_output.to(grad.dtype)


class _ChunkedLogitsFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, student: Tensor, weights: Tensor, teacher: Tensor, rows: _Rows, mix: _Mix, chunk_size: int,
        want_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        grad_buffer = torch.zeros_like(student) if want_grad else None

        def load(start: int, end: int) -> tuple[Tensor, Tensor]:
            return rows.take(student, start, end), rows.take(teacher, start, end)

        def sink(start: int, end: int, grad: Tensor, _chunk: Tensor) -> None:
            assert grad_buffer is not None
            if rows.index is None:
                grad_buffer[start:end] = grad
            else:
                grad_buffer.index_copy_(0, rows.index[start:end], grad.to(grad_buffer.dtype))

        sums = _run_chunks(rows, chunk_size, load, mix, want_grad, sink)
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
            grad_student = _scaled(ctx.grad_buffer, grad_total)
        grad_weights = ctx.means * grad_total if ctx.needs_input_grad[1] else None
        return grad_student, grad_weights, None, None, None, None, None


class _FusedLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, weights: Tensor,
        teacher_hidden: Tensor, teacher_weight: Tensor, teacher_bias: Tensor | None,
        rows: _Rows, mix: _Mix, chunk_size: int, want_grad: bool,
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
            chunk_hidden[start] = h
            student_logits = torch.nn.functional.linear(h, weight, bias)
            teacher_logits = torch.nn.functional.linear(rows.take(teacher_hidden, start, end), teacher_weight,
                                                        teacher_bias)
            return student_logits, teacher_logits

        def sink(start: int, end: int, grad: Tensor, _chunk: Tensor) -> None:
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

        sums = _run_chunks(rows, chunk_size, load, mix, want_grad, sink)
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
        out_hidden = _scaled(grad_hidden, grad_total) if needs[0] and grad_hidden is not None else None
        out_weight = _scaled(grad_weight, grad_total) if needs[1] and grad_weight is not None else None
        out_bias = _scaled(grad_bias, grad_total) if needs[2] and grad_bias is not None else None
        out_weights = ctx.means * grad_total if needs[3] else None
        return out_hidden, out_weight, out_bias, out_weights, None, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Public mixed functions
# --------------------------------------------------------------------------------------------


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
        components: names in :data:`COMPONENTS`; ``None`` means the mapping's keys (or fkl, rkl).
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
    _check_pair_shapes(student_logits, teacher_logits)
    device = student_logits.device
    mix = _build_mix(weights, components, component_kwargs, temperature, device)
    vocab = student_logits.shape[-1]
    rows = _plan_rows(student_logits.shape[:-1], mask, labels, mix, device)
    student2d = student_logits.reshape(-1, vocab)
    teacher2d = teacher_logits.detach().reshape(-1, vocab)
    if chunk_size is None:
        values = _values_from_logits(rows.select_all(student2d), rows.select_all(teacher2d), rows.labels, mix)
        means = values.sum(0) / rows.denominators
        return (means * mix.weights).sum(), _per_component(means, mix)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: must be a positive integer or None")
    want_grad = torch.is_grad_enabled() and student_logits.requires_grad
    total, means = _ChunkedLogitsFunction.apply(
        student2d, mix.weights, teacher2d, rows, mix, int(chunk_size), want_grad
    )
    return total, _per_component(means, mix)


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
    chunk_size: int = 1024,
    component_kwargs: Mapping[str, Mapping[str, float]] | None = None,
    student_lm_head_bias: Tensor | None = None,
    teacher_lm_head_bias: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`mixed_divergence` of ``student_hidden @ W_s.T (+ b_s)`` against the teacher's logits,
    without ever forming the full logits of either model.

    Token chunks of ``chunk_size`` rows are projected, scored and differentiated one at a time
    inside a custom autograd Function; the gradients w.r.t. ``student_hidden``,
    ``student_lm_head_weight`` and ``student_lm_head_bias`` are accumulated in that same pass
    (weight gradient in float32), so peak memory is a few ``[chunk_size, V]`` tensors plus one
    ``[V, H]`` gradient (a smaller chunk saves memory, a larger one is faster; 256 rows kept
    N=4096, V=49152 at about 1/10 of the naive peak on CPU). Teacher tensors are detached.
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
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: must be a positive integer")
    device = student_hidden.device
    mix = _build_mix(weights, components, component_kwargs, temperature, device)
    rows = _plan_rows(lead, mask, labels, mix, device)
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
    return total, _per_component(means, mix)


# --------------------------------------------------------------------------------------------
# Teacher cache: top-k log-probabilities plus one tail bucket
# --------------------------------------------------------------------------------------------


def topk_teacher_logprobs(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The ``k`` most probable entries of ``softmax(teacher_logits / T)`` per position.

    Returns ``(indices [N, k] long, logprobs [N, k] float32)`` with the leading dims flattened into N,
    sorted by descending probability. Computed in row chunks to bound memory; no gradient.
    """
    _check_temperature(temperature)
    vocab = teacher_logits.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"k={k!r}: must lie in [1, {vocab}] (the vocabulary size)")
    flat = teacher_logits.detach().reshape(-1, vocab)
    n = flat.shape[0]
    indices = torch.empty((n, k), dtype=torch.long, device=flat.device)
    logprobs = torch.empty((n, k), dtype=torch.float32, device=flat.device)
    with torch.no_grad():
        for start in range(0, n, _STATS_CHUNK):
            end = min(start + _STATS_CHUNK, n)
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
    top = _floor_logp(logprobs.detach().float())
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
    """:func:`mixed_divergence` against a cached teacher (:func:`topk_teacher_logprobs`).

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
    mix = _build_mix(weights, components, component_kwargs, temperature, device)
    rows = _plan_rows(lead, mask, labels, mix, device)
    student = rows.select_all(student_logits.reshape(-1, vocab))
    indices = rows.select_all(indices.to(device))
    logprobs = rows.select_all(logprobs.to(device))
    ls = _log_probs(student, temperature)
    pair = _Pair(_student_buckets(ls, indices), _teacher_buckets(logprobs, vocab))

    def label_logp() -> Tensor:
        return ls if temperature == 1.0 else _log_probs(student, 1.0)

    values = _evaluate(pair, mix, rows.labels, label_logp)
    means = values.sum(0) / rows.denominators
    return (means * mix.weights).sum(), _per_component(means, mix)


# --------------------------------------------------------------------------------------------
# Single divergences
# --------------------------------------------------------------------------------------------


def _single(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None,
    temperature: float,
    params: dict[str, float] | None = None,
) -> Tensor:
    total, _ = mixed_divergence(student_logits, teacher_logits, [1.0], (name,), mask=mask,
                                temperature=temperature, component_kwargs={name: params} if params else None)
    return total


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """KL(p || q) = sum p (log p - log q); 0 at p = q."""
    return _single("fkl", student_logits, teacher_logits, mask, temperature)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """KL(q || p) = sum q (log q - log p)."""
    return _single("rkl", student_logits, teacher_logits, mask, temperature)


def skew_forward_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                    temperature: float = 1.0, alpha: float = 0.1) -> Tensor:
    """DistiLLM skew KL: KL(p || alpha p + (1 - alpha) q), alpha in [0, 1] (alpha = 0 gives FKL)."""
    return _single("skew_fkl", student_logits, teacher_logits, mask, temperature, {"alpha": alpha})


def skew_reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                    temperature: float = 1.0, alpha: float = 0.1) -> Tensor:
    """DistiLLM skew reverse KL: KL(q || alpha q + (1 - alpha) p), alpha in [0, 1] (alpha = 0 gives RKL)."""
    return _single("skew_rkl", student_logits, teacher_logits, mask, temperature, {"alpha": alpha})


def jsd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0,
        beta: float = 0.5) -> Tensor:
    """Generalised Jensen-Shannon divergence ``beta KL(p || m) + (1 - beta) KL(q || m)``,
    ``m = beta p + (1 - beta) q``, with ``log m`` formed by logaddexp in log space.

    Correspondence with Hugging Face TRL (``GKDTrainer.generalized_jsd_loss(student_logits,
    teacher_logits, beta=b)``): TRL builds ``log m = logsumexp(log q + log(1 - b), log p + log b)``,
    i.e. the same ``m = b p + (1 - b) q``, and returns ``b * KL(p || m) + (1 - b) * KL(q || m)``
    (its ``kl_teacher``/``kl_student``); so ``jsd(beta=b)`` equals TRL with the *same* ``b`` - no
    swap. Its "batchmean" with labels divides by the number of labelled tokens, our mean over
    unmasked positions. At the end points TRL switches to ``b = 0 -> KL(p || q)`` (FKL) and
    ``b = 1 -> KL(q || p)`` (RKL), and so does this function.
    """
    return _single("jsd", student_logits, teacher_logits, mask, temperature, {"beta": beta})


def tvd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
        temperature: float = 1.0) -> Tensor:
    """Total variation distance 0.5 * sum |p - q|."""
    return _single("tvd", student_logits, teacher_logits, mask, temperature)


def akl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0,
        mu: float = 0.5) -> Tensor:
    """Adaptive KL (Wu et al., COLING 2025): ``g_head/(g_head+g_tail) * FKL + g_tail/(g_head+g_tail) * RKL``
    per token, where ``g_head``/``g_tail`` are ``sum |p - q|`` (q detached) over the head/tail of the
    teacher split (see :func:`akl_split`)."""
    return _single("akl", student_logits, teacher_logits, mask, temperature, {"mu": mu})


def todi(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
         temperature: float = 1.0) -> Tensor:
    """ToDi (EMNLP 2025): ``sum [w p log(p/q) + (1 - w) q log(q/p)]`` with per-entry
    ``w = sigmoid(log p - log q)`` detached."""
    return _single("todi", student_logits, teacher_logits, mask, temperature)


def ab_divergence(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                  temperature: float = 1.0, alpha: float = 0.5, beta: float = 0.5) -> Tensor:
    """Alpha-beta divergence of ABKD (Wang et al., ICML 2025), p the teacher, q the student:
    ``1/(a b) * sum[a/(a+b) p^(a+b) + b/(a+b) q^(a+b) - p^a q^b]`` with ``a = alpha``, ``b = beta``.

    ``(1, 0)`` is FKL, ``(0, 1)`` RKL, ``(0.5, 0.5)`` four times the squared Hellinger distance. The
    lines alpha = 0, beta = 0 and alpha + beta = 0 use the continuous limits of that formula
    (Cichocki et al. 2011); note that ABKD's reference code divides those limits by alpha (or beta)
    instead of alpha**2, which agrees with ours only at alpha = 1 (beta = 1).
    """
    return _single("ab", student_logits, teacher_logits, mask, temperature, {"alpha": alpha, "beta": beta})


def fkl_head(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
             temperature: float = 1.0, mu: float = 0.5) -> Tensor:
    """FKL summed over the head entries of the AKL split only (fkl_head + fkl_tail = FKL)."""
    return _single("fkl_head", student_logits, teacher_logits, mask, temperature, {"mu": mu})


def fkl_tail(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
             temperature: float = 1.0, mu: float = 0.5) -> Tensor:
    """FKL summed over the tail entries of the AKL split only (may be negative on its own)."""
    return _single("fkl_tail", student_logits, teacher_logits, mask, temperature, {"mu": mu})


def rkl_head(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
             temperature: float = 1.0, mu: float = 0.5) -> Tensor:
    """RKL summed over the head entries of the AKL split only (rkl_head + rkl_tail = RKL)."""
    return _single("rkl_head", student_logits, teacher_logits, mask, temperature, {"mu": mu})


def rkl_tail(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
             temperature: float = 1.0, mu: float = 0.5) -> Tensor:
    """RKL summed over the tail entries of the AKL split only (may be negative on its own)."""
    return _single("rkl_tail", student_logits, teacher_logits, mask, temperature, {"mu": mu})


def akl_split(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
              mu: float = 0.5) -> HeadTailSplit:
    """The AKL head/tail split of every position of ``[..., V]`` logits (no gradient)."""
    _check_temperature(temperature)
    with torch.no_grad():
        p = _log_probs(teacher_logits, temperature).exp()
        q = _log_probs(student_logits, temperature).exp()
        return _head_tail_split(p, q, mu)


# --------------------------------------------------------------------------------------------
# Statistics for features and logging
# --------------------------------------------------------------------------------------------


def distribution_stats(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                       temperature: float = 1.0, mu: float = 0.5) -> dict[str, float]:
    """Means over unmasked positions of: fkl, rkl, akl_head_ratio, akl_tail_ratio, teacher_entropy,
    student_entropy (nats, at temperature T) and top1_agreement (argmax equal). No gradient; chunked
    over positions so at most a few ``[1024, V]`` tensors exist at once. All 0.0 with no position."""
    _check_pair_shapes(student_logits, teacher_logits)
    _check_temperature(temperature)
    keys = ("fkl", "rkl", "akl_head_ratio", "akl_tail_ratio", "teacher_entropy", "student_entropy",
            "top1_agreement")
    vocab = student_logits.shape[-1]
    device = student_logits.device
    flat = _flat_mask(mask, student_logits.shape[:-1], device)
    index = None if flat is None else flat.nonzero().squeeze(-1)
    student2d = student_logits.detach().reshape(-1, vocab)
    teacher2d = teacher_logits.detach().reshape(-1, vocab)
    n = student2d.shape[0] if index is None else int(index.numel())
    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, n, _STATS_CHUNK):
            end = min(start + _STATS_CHUNK, n)
            rows = slice(start, end) if index is None else index[start:end]
            s, t = student2d[rows], teacher2d[rows]
            pair = _Pair(_log_probs(s, temperature), _log_probs(t, temperature))
            split = pair.split(mu)
            columns = [
                pair.fkl, pair.rkl, split.head_ratio, split.tail_ratio,
                -_rowdot(pair.p, pair.lt), -_rowdot(pair.q, pair.ls),
                (s.argmax(-1) == t.argmax(-1)).float(),
            ]
            sums += torch.stack([c.double().sum() for c in columns])
    means = (sums / max(n, 1)).tolist()
    return dict(zip(keys, means, strict=True))

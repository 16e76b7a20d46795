"""The per-token divergence components and the registry that names them.

Each built-in works on a :class:`~arkd_env.losses.pair.Pair` so that a mixture shares the softmaxes;
the registry wraps it as ``fn(student_logp [N, V], teacher_logp [N, V], **params) -> [N]`` so that a
user component and a built-in look alike from outside. p is the teacher, q the student.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from arkd_env.losses.logprobs import IGNORE_INDEX, LOG_FLOOR, check_unit, rowdot
from arkd_env.losses.pair import Pair

ComponentFn = Callable[..., Tensor]
"""``fn(student_logp [N, V], teacher_logp [N, V], **params) -> per-token values [N]``."""

_AB_TOL = 1e-6  # |alpha|, |beta| or |alpha+beta| below this use the analytic limit of the AB formula


# --------------------------------------------------------------------------------------------
# Built-in components on a Pair: each returns per-token values [N]
# --------------------------------------------------------------------------------------------


def _c_fkl(pair: Pair) -> Tensor:
    """KL(p || q) = sum p (log p - log q); 0 at p = q."""
    return pair.fkl


def _c_rkl(pair: Pair) -> Tensor:
    """KL(q || p) = sum q (log q - log p)."""
    return pair.rkl


def _log_mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(weight_a * a + (1 - weight_a) * b) for 0 < weight_a < 1, in log space so no mass underflows."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _zero_in_graph(like: Tensor) -> Tensor:
    """Per-token zeros that stay in the student's graph: a mixture made only of zero terms must still
    support ``backward()`` on the naive path, as it does on the chunked one (the gradient is zero)."""
    return like * 0.0


def _skew(name: str, pair: Pair, alpha: float, forward: bool) -> Tensor:
    """KL(a || alpha a + (1 - alpha) b) with (a, b) = (p, q) when ``forward``, else (q, p)."""
    check_unit(name, "alpha", alpha)
    pure = pair.fkl if forward else pair.rkl
    if alpha == 0.0:
        return pure
    if alpha == 1.0:
        return _zero_in_graph(pure)
    probs, own, other = (pair.p, pair.lt, pair.ls) if forward else (pair.q, pair.ls, pair.lt)
    return rowdot(probs, own - _log_mixture(own, other, alpha))


def _c_skew_fkl(pair: Pair, alpha: float = 0.1) -> Tensor:
    """DistiLLM skew KL: KL(p || alpha p + (1 - alpha) q), alpha in [0, 1] (alpha = 0 gives FKL)."""
    return _skew("skew_fkl", pair, alpha, forward=True)


def _c_skew_rkl(pair: Pair, alpha: float = 0.1) -> Tensor:
    """DistiLLM skew reverse KL: KL(q || alpha q + (1 - alpha) p), alpha in [0, 1] (alpha = 0 gives RKL)."""
    return _skew("skew_rkl", pair, alpha, forward=False)


def _c_jsd(pair: Pair, beta: float = 0.5) -> Tensor:
    """Generalised Jensen-Shannon divergence ``beta KL(p || m) + (1 - beta) KL(q || m)``,
    ``m = beta p + (1 - beta) q``, with ``log m`` formed by logaddexp in log space.

    Correspondence with Hugging Face TRL (``GKDTrainer.generalized_jsd_loss(student_logits,
    teacher_logits, beta=b)``): TRL builds ``log m = logsumexp(log q + log(1 - b), log p + log b)``,
    i.e. the same ``m = b p + (1 - b) q``, and returns ``b * KL(p || m) + (1 - b) * KL(q || m)``
    (its ``kl_teacher``/``kl_student``); so ``jsd`` with ``beta=b`` equals TRL with the *same* ``b`` - no
    swap. Its "batchmean" with labels divides by the number of labelled tokens, our mean over
    unmasked positions. At the end points TRL switches to ``b = 0 -> KL(p || q)`` (FKL) and
    ``b = 1 -> KL(q || p)`` (RKL), and so does this component.
    """
    check_unit("jsd", "beta", beta)
    if beta == 0.0:
        return pair.fkl
    if beta == 1.0:
        return pair.rkl
    log_m = _log_mixture(pair.lt, pair.ls, beta)
    return beta * rowdot(pair.p, pair.lt - log_m) + (1.0 - beta) * rowdot(pair.q, pair.ls - log_m)


def _c_tvd(pair: Pair) -> Tensor:
    """Total variation distance 0.5 * sum |p - q|."""
    return 0.5 * (pair.p - pair.q).abs().sum(-1)


def _c_akl(pair: Pair, mu: float = 0.5) -> Tensor:
    """Adaptive KL (Wu et al., COLING 2025): ``g_head/(g_head+g_tail) * FKL + g_tail/(g_head+g_tail) * RKL``
    per token, where ``g_head``/``g_tail`` are ``sum |p - q|`` (q detached) over the head/tail of the
    teacher split (see :func:`arkd_env.losses.akl_split`)."""
    split = pair.split(mu)
    return split.head_ratio * pair.fkl + split.tail_ratio * pair.rkl


def _c_todi(pair: Pair) -> Tensor:
    """ToDi (EMNLP 2025): ``sum [w p log(p/q) + (1 - w) q log(q/p)]`` with per-entry
    ``w = sigmoid(log p - log q)`` detached."""
    # w weighs FKL where the student under-estimates and RKL where it over-estimates; the sum factors
    # as sum (w p - (1 - w) q)(lp - lq), one product over the vocabulary instead of two.
    w = torch.sigmoid(pair.diff.detach())
    return rowdot(w * pair.p - (1.0 - w) * pair.q, pair.diff)


def _c_ab(pair: Pair, alpha: float = 0.5, beta: float = 0.5) -> Tensor:
    """Alpha-beta divergence of ABKD (Wang et al., ICML 2025):
    ``1/(a b) * sum[a/(a+b) p^(a+b) + b/(a+b) q^(a+b) - p^a q^b]`` with ``a = alpha``, ``b = beta``.

    ``(1, 0)`` is FKL, ``(0, 1)`` RKL, ``(0.5, 0.5)`` four times the squared Hellinger distance. The
    lines alpha = 0, beta = 0 and alpha + beta = 0 use the continuous limits of that formula
    (Cichocki et al. 2011); note that ABKD's reference code divides those limits by alpha (or beta)
    instead of alpha**2, which agrees with ours only at alpha = 1 (beta = 1).
    """
    return _ab_per_token(pair.ls, pair.lt, alpha, beta)


def _ab_per_token(ls: Tensor, lt: Tensor, alpha: float, beta: float) -> Tensor:
    """The alpha-beta divergence per token, evaluated in float64 because the general formula cancels
    badly near its singular lines.

    Those lines use the continuous limits: b=0: 1/a^2 sum[p^a log(p^a/q^a) - p^a + q^a] (FKL at a=1);
    a=0: 1/b^2 sum[q^b log(q^b/p^b) - q^b + p^b] (RKL at b=1); a+b=0: 1/a^2 sum[log(q^a/p^a) +
    (q^a/p^a)^-1 - 1]; a=b=0: 1/2 sum (log p - log q)^2.
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


def _masked_fkl(pair: Pair, keep: Tensor) -> Tensor:
    return rowdot(pair.p.masked_fill(~keep, 0.0), pair.diff)


def _masked_rkl(pair: Pair, keep: Tensor) -> Tensor:
    return -rowdot(pair.q.masked_fill(~keep, 0.0), pair.diff)


def _c_fkl_head(pair: Pair, mu: float = 0.5) -> Tensor:
    """FKL summed over the head entries of the AKL split only (fkl_head + fkl_tail = FKL)."""
    return _masked_fkl(pair, pair.split(mu).head)


def _c_fkl_tail(pair: Pair, mu: float = 0.5) -> Tensor:
    """FKL summed over the tail entries of the AKL split only (may be negative on its own)."""
    return _masked_fkl(pair, ~pair.split(mu).head)


def _c_rkl_head(pair: Pair, mu: float = 0.5) -> Tensor:
    """RKL summed over the head entries of the AKL split only (rkl_head + rkl_tail = RKL)."""
    return _masked_rkl(pair, pair.split(mu).head)


def _c_rkl_tail(pair: Pair, mu: float = 0.5) -> Tensor:
    """RKL summed over the tail entries of the AKL split only (may be negative on its own)."""
    return _masked_rkl(pair, ~pair.split(mu).head)


def cross_entropy_component(student_logp: Tensor, teacher_logp: Tensor, *, labels: Tensor) -> Tensor:
    """Per-token ``-log q(label)``; 0 where ``labels == -100``. Takes ``teacher_logp`` only to share the
    component signature, so that hard-label training mixes with the divergences by name."""
    del teacher_logp
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    nll = -student_logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, nll, torch.zeros_like(nll))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

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
    """Give a Pair-based built-in the registry's log-probability signature, so callers of
    :data:`COMPONENTS` never see the Pair."""

    def component(student_logp: Tensor, teacher_logp: Tensor, **params: float) -> Tensor:
        return impl(Pair(student_logp.float(), teacher_logp.float()), **params)

    component.__name__ = impl.__name__.removeprefix("_c_")
    component.__doc__ = impl.__doc__
    return component


COMPONENTS: dict[str, ComponentFn] = {name: _public_component(impl) for name, impl in _PAIR_IMPLS.items()}
"""Name -> ``fn(student_logp [N, V], teacher_logp [N, V], **params) -> [N]``. Extend with
:func:`register_component`."""
COMPONENTS["ce"] = cross_entropy_component

# Registry entries that are still the built-in wrappers run on the shared Pair of the chunk.
_BUILTIN_BY_FN: dict[ComponentFn, Callable[..., Tensor]] = {
    COMPONENTS[name]: impl for name, impl in _PAIR_IMPLS.items()
}
_NEEDS_LABELS: set[str] = {"ce"}


def register_component(
    name: str, fn: ComponentFn, *, needs_labels: bool = False, overwrite: bool = False
) -> None:
    """Add a divergence component usable by name in the mixed functions.

    ``fn(student_logp, teacher_logp, **params)`` receives float32 log-probabilities ``[N, V]`` at the
    run's temperature (clamped at :data:`~arkd_env.losses.LOG_FLOOR`; ``teacher_logp`` detached) and must
    return the per-token values ``[N]``. With ``needs_labels=True`` it is called as
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


def builtin_impl(fn: ComponentFn) -> Callable[..., Tensor] | None:
    """The Pair-based implementation behind a registry entry, or None for a user component, so the
    mixture can run built-ins on the chunk's shared Pair instead of rebuilding the softmaxes."""
    return _BUILTIN_BY_FN.get(fn)


def allowed_params(name: str) -> frozenset[str]:
    """Parameter names a built-in accepts; a typo in a config fails loudly instead of being ignored."""
    return _BUILTIN_PARAMS.get(name, frozenset())


def needs_labels(name: str) -> bool:
    """Whether the component scores hard labels (and so is averaged over labelled positions only)."""
    return name in _NEEDS_LABELS

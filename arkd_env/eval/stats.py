"""Summary statistics of repeated runs: mean, sample standard deviation and intervals of a mean.

Used by the evaluation suite (mean and std of ROUGE-L over generation seeds) and by `arkd compare`
(paired differences between policies run on the same engine seeds).

Two intervals of a mean, for n values x₁..xₙ at confidence c:

- the **Student t interval**, x̄ ± t₍₁₊c₎/₂,ₙ₋₁ · s/√n (scipy's t quantile). It widens as n shrinks, which is
  what a handful of seeds needs; it assumes roughly normal values, which a mean of a few paired differences
  of smooth training metrics is close to.
- the **percentile bootstrap**: draw ``resamples`` samples of n values with replacement, take each sample's
  mean, and report the (1 - c)/2 and (1 + c)/2 quantiles of those means. It assumes nothing about the shape,
  but it never reaches past the smallest and largest value, so with few values it is too narrow.
- the **BCa bootstrap** (bias-corrected and accelerated, scipy's ``bootstrap``): the percentile interval with
  its quantiles moved by the median bias of the resampled means and by a jackknife estimate of their skew. It
  is second-order accurate where the percentile one is first-order, so it is the bootstrap to report from
  about 20 values on; below that it shares the percentile interval's narrowness.

:func:`paired_difference_ci` picks by sample size (``method="auto"``): the t interval below
``SMALL_SAMPLE`` pairs, the bootstrap from there on. A paired difference of means is the interval of the
mean of dᵢ = aᵢ - bᵢ, which keeps what pair i shares (here: the engine seed, i.e. the student's
initialisation and data order) out of the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
SMALL_SAMPLE = 30  # below this many pairs, "auto" uses the t interval: the bootstrap is too narrow there
METHODS = ("auto", "t", "bootstrap", "bca")
DEFAULT_CONFIDENCE = 0.95
_CHUNK = 1_000  # resamples drawn at once, so memory stays at _CHUNK × n values whatever ``resamples`` is


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; ``n`` is the number of values (or pairs) used, ``method`` how the
    interval was made (``"t"``, ``"bootstrap"`` or ``"bca"``)."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE
    method: str = "bootstrap"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def finite(values: Sequence[float | None]) -> np.ndarray:
    """The finite values as a float64 array (None, NaN and ±inf dropped)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(kept, dtype=np.float64)


def mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values; NaN when there are none."""
    data = finite(values)
    return float(data.mean()) if data.size else math.nan


def sample_std(values: Sequence[float | None]) -> float:
    """Sample standard deviation (n - 1 in the denominator) of the finite values; 0 for one value, NaN for none."""
    data = finite(values)
    if data.size == 0:
        return math.nan
    if data.size == 1:
        return 0.0
    return float(data.std(ddof=1))


def _check(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: must lie in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples!r}: must be >= 1")


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` samples drawn with replacement from ``values`` (same seed, same means)."""
    rng = np.random.default_rng(seed)
    n = values.size
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        out[start:start + count] = values[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return out


def _without_spread(data: np.ndarray, confidence: float, method: str) -> Interval | None:
    """The interval where no resampling or spread is needed: NaN bounds for no values, zero width at the value
    for one value or identical values. None otherwise."""
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, method)
    if data.size == 1 or bool(np.all(data == data[0])):
        estimate = float(data.mean())
        return Interval(estimate, estimate, estimate, int(data.size), confidence, method)
    return None


def bootstrap_ci(values: Sequence[float | None], confidence: float = DEFAULT_CONFIDENCE,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of the finite ``values``.

    No values give NaN bounds; one value (or identical values) gives a zero-width interval at that value.
    """
    _check(confidence, resamples)
    data = finite(values)
    if (trivial := _without_spread(data, confidence, "bootstrap")) is not None:
        return trivial
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(bootstrap_means(data, resamples, seed), [tail, 1.0 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size), confidence)


def bca_ci(values: Sequence[float | None], confidence: float = DEFAULT_CONFIDENCE,
           resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """BCa bootstrap interval of the mean of the finite ``values`` (scipy's ``bootstrap``, ``method="BCa"``).

    No values give NaN bounds; one value or identical values (no spread, where the bias correction is undefined)
    give a zero-width interval at that value.
    """
    from scipy import stats as scipy_stats

    _check(confidence, resamples)
    data = finite(values)
    if (trivial := _without_spread(data, confidence, "bca")) is not None:
        return trivial
    found = scipy_stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                  method="BCa", random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(float(data.mean()), float(found.low), float(found.high), int(data.size), confidence, "bca")


def t_interval(values: Sequence[float | None], confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Student t interval of the mean of the finite ``values``: x̄ ± t · s/√n with n - 1 degrees of freedom.

    No values give NaN bounds; one value (no spread to estimate) or identical values give a zero-width
    interval at that value.
    """
    from scipy import stats as scipy_stats

    _check(confidence, 1)
    data = finite(values)
    if (trivial := _without_spread(data, confidence, "t")) is not None:
        return trivial
    estimate = float(data.mean())
    half = float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, data.size - 1)) * float(data.std(ddof=1)) \
        / math.sqrt(data.size)
    return Interval(estimate, estimate - half, estimate + half, int(data.size), confidence, "t")


def chosen_method(method: str, n: int) -> str:
    """The interval ``method`` resolves to for ``n`` pairs: ``auto`` is ``t`` below ``SMALL_SAMPLE``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: must be one of {', '.join(METHODS)}")
    if method == "auto":
        return "t" if n < SMALL_SAMPLE else "bootstrap"
    return method


def paired_difference_ci(a: Sequence[float | None], b: Sequence[float | None],
                         confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0, method: str = "auto") -> Interval:
    """Interval of mean(a - b) over pairs (aᵢ, bᵢ); a pair with a missing or non-finite side is dropped.
    ``a`` and ``b`` must have the same length (pair i is e.g. the same engine seed). ``method``: ``t``,
    ``bootstrap``, ``bca``, or ``auto`` (:func:`chosen_method`: the t interval for fewer than ``SMALL_SAMPLE``
    pairs)."""
    differences = paired_differences(a, b)
    chosen = chosen_method(method, len(differences))
    if chosen == "t":
        return t_interval(differences, confidence)
    if chosen == "bca":
        return bca_ci(differences, confidence, resamples, seed)
    return bootstrap_ci(differences, confidence, resamples, seed)


def paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """aᵢ - bᵢ for every pair whose two sides are finite; ``a`` and ``b`` must have the same length."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    differences = []
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            continue
        fx, fy = float(x), float(y)
        if math.isfinite(fx) and math.isfinite(fy):
            differences.append(fx - fy)
    return differences


def interquartile_mean(values: Sequence[float | None]) -> float:
    """The mean of the middle half of the finite values (scipy's ``trim_mean`` cutting a quarter at each end),
    rliable's robust aggregate: less swayed than the mean by one run that diverged. Below 4 values nothing is
    cut and it is the plain mean; NaN when there are none."""
    from scipy.stats import trim_mean

    data = finite(values)
    return float(trim_mean(data, 0.25)) if data.size else math.nan


def improvement_probability(a: Sequence[float | None], b: Sequence[float | None], sign: int = 1) -> float:
    """The share of pairs in which ``a`` beats ``b`` (``sign`` = +1: higher is better, -1: lower), a tie
    counting one half: rliable's probability of improvement, taken over paired runs instead of all pairs of
    runs, since a pair shares its seed. NaN when no pair has both sides."""
    if sign not in (1, -1):
        raise ValueError(f"sign={sign!r}: must be +1 (higher is better) or -1 (lower is better)")
    differences = np.asarray(paired_differences(a, b)) * sign
    if differences.size == 0:
        return math.nan
    return float(((differences > 0).sum() + 0.5 * (differences == 0).sum()) / differences.size)

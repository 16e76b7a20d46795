"""arkd_env/eval/stats.py: mean, sample std, t and percentile bootstrap intervals, IQM and probability of improvement
on inputs whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from arkd_env.eval import stats
from arkd_env.eval.stats import bootstrap_ci, mean, paired_difference_ci, sample_std


def test_mean_and_sample_std_by_hand() -> None:
    assert mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
    # Σ(x - 7/3)² = 16/9 + 1/9 + 25/9 = 42/9, divided by n - 1 = 2
    assert sample_std([1.0, 2.0, 4.0]) == pytest.approx(math.sqrt(42 / 18))
    assert mean([None, math.nan, 3.0, math.inf]) == 3.0 and sample_std([3.0, math.nan]) == 0.0
    assert math.isnan(mean([])) and math.isnan(sample_std([math.nan]))


def test_constant_samples_give_a_zero_width_interval() -> None:
    interval = bootstrap_ci([2.5] * 7)
    assert (interval.estimate, interval.low, interval.high, interval.n) == (2.5, 2.5, 2.5, 7)
    single = bootstrap_ci([4.0, math.nan])
    assert (single.low, single.high, single.n) == (4.0, 4.0, 1)
    empty = bootstrap_ci([])
    assert empty.n == 0 and math.isnan(empty.low) and math.isnan(empty.high)


def test_two_values_give_the_whole_range() -> None:
    # Resampling [0, 1] gives the means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: both 2.5% tails sit on the ends.
    interval = bootstrap_ci([0.0, 1.0], resamples=4000, seed=3)
    assert (interval.low, interval.high) == (0.0, 1.0) and interval.estimate == 0.5


def test_one_success_in_four_by_hand() -> None:
    # Resampled means of [0, 0, 0, 1] are k/4 with k ~ Binomial(4, 1/4): P(k = 0) = 0.316 > 2.5%, so the lower
    # bound is 0; P(k >= 3) = 0.051 > 2.5% > P(k = 4) = 0.004, so the upper bound is 3/4.
    interval = bootstrap_ci([0.0, 0.0, 0.0, 1.0], seed=11)
    assert (interval.low, interval.high) == (0.0, 0.75)


def test_matches_the_enumerated_bootstrap_distribution() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    exact = np.array([np.mean(c) for c in itertools.product(values, repeat=len(values))])  # all 5^5 resamples
    expected_low, expected_high = np.quantile(exact, [0.025, 0.975])
    interval = bootstrap_ci(values, resamples=20_000, seed=1)
    assert interval.low == pytest.approx(expected_low, abs=0.1)
    assert interval.high == pytest.approx(expected_high, abs=0.1)
    assert interval.estimate == pytest.approx(4.0)


def test_large_normal_sample_agrees_with_the_normal_interval() -> None:
    data = np.random.default_rng(0).normal(5.0, 2.0, size=400)
    interval = bootstrap_ci(data.tolist(), seed=2)
    half = 1.96 * data.std(ddof=1) / math.sqrt(data.size)
    assert interval.low == pytest.approx(data.mean() - half, abs=0.15 * half)
    assert interval.high == pytest.approx(data.mean() + half, abs=0.15 * half)


@pytest.mark.parametrize("seed", range(5))
def test_interval_contains_the_sample_mean_and_is_reproducible(seed: int) -> None:
    data = np.random.default_rng(100 + seed).exponential(size=12).tolist()
    first = bootstrap_ci(data, seed=seed)
    assert first.low < mean(data) < first.high and first.estimate == pytest.approx(mean(data))
    assert first.contains(mean(data)) and not first.contains(first.high + 1e-9)
    assert bootstrap_ci(data, seed=seed) == first
    other = bootstrap_ci(data, seed=seed + 1000)
    assert other != first and other.low == pytest.approx(first.low, rel=0.1)


def test_higher_confidence_gives_a_wider_interval() -> None:
    data = [0.3, 1.2, 0.8, 2.0, 1.1, 0.4, 1.6]
    narrow, wide = bootstrap_ci(data, confidence=0.5), bootstrap_ci(data, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(data, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci(data, resamples=0)


def test_paired_difference_removes_what_pairs_share() -> None:
    shared = [0.0, 10.0, 20.0, 30.0, 40.0]  # e.g. the engine seed's effect, the same for both policies
    a = [s + 2.0 for s in shared]
    exact = paired_difference_ci(a, shared)
    assert (exact.estimate, exact.low, exact.high, exact.n) == (2.0, 2.0, 2.0, 5)
    noise = [0.1, -0.2, 0.05, 0.15, -0.1]
    noisy = paired_difference_ci([x + n for x, n in zip(a, noise, strict=True)], shared)
    unpaired_width = bootstrap_ci(a).high - bootstrap_ci(a).low
    assert noisy.high - noisy.low < 0.05 * unpaired_width
    assert noisy.low < noisy.estimate < noisy.high and noisy.estimate == pytest.approx(2.0 + sum(noise) / 5)


def test_paired_difference_drops_incomplete_pairs_and_checks_lengths() -> None:
    interval = paired_difference_ci([1.0, None, 3.0, math.nan], [0.0, 1.0, 1.0, 2.0])
    assert interval.n == 2 and interval.estimate == pytest.approx(1.5)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference_ci([1.0, 2.0], [1.0])


def test_t_interval_matches_the_hand_computed_one() -> None:
    from arkd_env.eval.stats import t_interval

    interval = t_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, t(0.975, 2 df) = 4.302653
    assert interval.method == "t" and interval.n == 3
    assert interval.estimate == pytest.approx(2.0)
    half = 4.302653 / math.sqrt(3)
    assert (interval.low, interval.high) == pytest.approx((2.0 - half, 2.0 + half))
    assert t_interval([5.0]).low == t_interval([5.0]).high == 5.0
    assert math.isnan(t_interval([]).low)


def test_two_paired_seeds_get_the_honest_t_interval_not_the_bootstrap() -> None:
    """The two differences behind a compare table's `ppo−fkl +0.0187 [0.0124, 0.0251]`: the bootstrap interval
    stays between them, the t interval on 1 degree of freedom spans 0, as it must on two seeds."""
    a, b = [0.02506, 0.01234], [0.0, 0.0]
    auto = paired_difference_ci(a, b)
    assert auto.method == "t"
    assert (auto.low, auto.high) == pytest.approx((-0.0621, 0.0995), abs=2e-4)
    boot = paired_difference_ci(a, b, method="bootstrap")
    assert boot.low >= 0.0123 and boot.high <= 0.0251


def test_auto_switches_to_the_bootstrap_at_thirty_pairs() -> None:
    from arkd_env.eval.stats import SMALL_SAMPLE, chosen_method

    assert chosen_method("auto", SMALL_SAMPLE - 1) == "t"
    assert chosen_method("auto", SMALL_SAMPLE) == "bootstrap"
    values = [float(i % 7) for i in range(SMALL_SAMPLE)]
    assert paired_difference_ci(values, [0.0] * SMALL_SAMPLE).method == "bootstrap"
    with pytest.raises(ValueError, match="method='jackknife'"):
        chosen_method("jackknife", 3)


def test_bca_moves_the_percentile_interval_towards_a_right_skewed_tail() -> None:
    """On right-skewed values the resampled means are skewed too; BCa's acceleration shifts both ends of the
    percentile interval up (Efron & Tibshirani, ch. 14), and that is all that separates the two here."""
    from arkd_env.eval.stats import bca_ci

    values = np.random.default_rng(3).exponential(1.0, size=20) ** 2
    bca, percentile = bca_ci(values), bootstrap_ci(values)
    assert bca.method == "bca" and bca.n == 20 and bca.estimate == pytest.approx(values.mean())
    assert bca.low > percentile.low and bca.high > percentile.high
    assert bca.contains(values.mean())


def test_bca_through_the_paired_difference_and_its_degenerate_cases() -> None:
    from arkd_env.eval.stats import bca_ci

    a, b = [1.0, 2.5, 2.0, 4.0, 3.0], [0.5, 2.0, 1.0, 3.5, 1.5]
    paired = paired_difference_ci(a, b, method="bca")
    direct = bca_ci([x - y for x, y in zip(a, b, strict=True)])
    assert paired.method == "bca" and (paired.low, paired.high) == (direct.low, direct.high)
    assert bca_ci([2.0, 2.0, 2.0]).low == bca_ci([2.0, 2.0, 2.0]).high == 2.0  # no spread: no bias to correct
    assert bca_ci([7.0]).high == 7.0 and math.isnan(bca_ci([]).low)


def test_interquartile_mean_drops_a_quarter_at_each_end_by_hand() -> None:
    # Eight values: the middle four are 3, 4, 5, 6; the diverged 1000 does not move it.
    assert stats.interquartile_mean([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)
    assert stats.interquartile_mean([2.0, None, math.nan]) == 2.0
    assert math.isnan(stats.interquartile_mean([]))


def test_improvement_probability_counts_paired_wins_and_half_ties() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0, None], [0.0, 2.0, 5.0, 1.0, 9.0]
    assert stats.improvement_probability(a, b) == pytest.approx((2 + 0.5) / 4)
    assert stats.improvement_probability(a, b, sign=-1) == pytest.approx((1 + 0.5) / 4)
    assert math.isnan(stats.improvement_probability([None], [1.0]))
    with pytest.raises(ValueError, match=r"sign=0: must be \+1"):
        stats.improvement_probability(a, b, sign=0)

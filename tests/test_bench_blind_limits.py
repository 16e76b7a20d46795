"""benchmarks/blind_limits.py: a member-blind student's limits, scored with the benchmark's own metrics."""

from __future__ import annotations

import pytest
from _benchmarks import load_benchmark

limits = load_benchmark("blind_limits")


def test_the_two_divergences_limits_match_their_hand_computed_values() -> None:
    # Families of 4, 6 Zipf(1) answers: p_r = (1/r) / 2.45, the head holds ranks 1-2 (H = 0.6122).
    result = limits.blind_limits(family_size=4, modes=6, zipf=1.0, points=401)
    harmonic = sum(1 / r for r in range(1, 7))
    head = (1 + 1 / 2) / harmonic
    assert result.fkl.validity_mass == pytest.approx(head + (1 - head) / 4)
    assert result.fkl.tail_recall == pytest.approx(0.25) and result.fkl.head_recall == pytest.approx(1.0)
    assert result.rkl.validity_mass == pytest.approx(1.0) and result.rkl.tail_recall == 0.0
    assert result.rkl.score == 0.0
    # Under the design-1 score this layout wants more tail than forward KL's optimum gives.
    assert result.best_tail_share > 1 and result.best.score > result.fkl.score
    # The F0.5 counts validity four times as much: its optimum keeps less tail than forward KL's.
    f_half = limits.blind_limits(family_size=4, modes=6, zipf=1.0, points=401, beta=0.5)
    assert f_half.best_tail_share < 1 and f_half.fkl.validity_mass == pytest.approx(result.fkl.validity_mass)


def test_more_tail_than_there_is_mass_is_refused() -> None:
    from arkd_env.assets.keyed import KeyedTaskSpec, keyed_prompts

    prompt = keyed_prompts(KeyedTaskSpec(n_keys=2, modes_per_key=4, family_size=2))[0]
    with pytest.raises(ValueError, match=r"tail_scale=2\.0: puts more than all the mass"):
        limits.blind_member_scores(prompt, 2, 2.0)


def test_the_script_prints_a_row_per_layout_and_skips_what_the_pools_cannot_hold(
        capsys: pytest.CaptureFixture[str]) -> None:
    limits.main(["--family-sizes", "2", "8", "--modes", "4", "6", "--zipf", "1", "--points", "11"])
    out = capsys.readouterr().out
    assert out.count("\n| 2 |") == 2 and "\n| 8 | 4 | 1 |" in out
    assert "skipped F=8, answers=6, s=1: KeyedTaskSpec.family_size=8: a family needs 34" in out
    with pytest.raises(SystemExit):
        limits.main(["--points", "1"])
    assert "--points 1: needs at least 2" in capsys.readouterr().err

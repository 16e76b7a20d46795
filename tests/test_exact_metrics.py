from __future__ import annotations

import math

import pytest

from arkd_env.eval.exact import ExactScores, combined_score, exact_scores, mean_scores

# A hand-sized true distribution: a + b = 0.7 is the shortest prefix reaching 0.5, so the head is {a, b}
# and the tail {c, d} holds 0.3.
P = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}
HEAD = ("a", "b")


def test_a_student_equal_to_the_truth_scores_the_optimum() -> None:
    s = exact_scores(P, dict(P), HEAD)
    assert s == ExactScores(validity_mass=1.0, overlap=1.0, head_recall=1.0, tail_recall=1.0, exact_kl=0.0,
                            score=1.0)


def test_a_one_mode_student_is_valid_but_recalls_no_tail() -> None:
    s = exact_scores(P, {"a": 0.9, "b": 0.0, "c": 0.0, "d": 0.0}, HEAD)
    assert s.validity_mass == pytest.approx(0.9)
    assert s.overlap == pytest.approx(0.4)  # min(0.4, 0.9)
    assert s.head_recall == pytest.approx(0.4 / 0.7)
    assert s.tail_recall == 0.0 and s.score == 0.0
    assert s.exact_kl == math.inf  # b, c, d have q = 0 but p > 0


def test_a_nearly_one_mode_student_has_a_finite_hand_computed_kl() -> None:
    eps = 0.01
    s = exact_scores(P, {"a": 0.9, "b": eps, "c": eps, "d": eps}, HEAD)
    assert s.validity_mass == pytest.approx(0.93)
    assert s.head_recall == pytest.approx(0.41 / 0.7)
    assert s.tail_recall == pytest.approx(0.02 / 0.3)
    # 1/F = 1/(2 * 0.93) + 1/(4 * 41/70) + 1/(4 * 1/15) = 0.537634 + 0.426829 + 3.75
    assert s.score == pytest.approx(1 / (1 / 1.86 + 70 / 164 + 3.75))
    assert s.score == pytest.approx(0.212113, abs=1e-6)
    kl = 0.4 * math.log(0.4 / 0.9) + 0.3 * math.log(30) + 0.2 * math.log(20) + 0.1 * math.log(10)
    assert s.exact_kl == pytest.approx(kl)
    assert s.exact_kl == pytest.approx(1.525392, abs=1e-6)


def test_a_uniform_over_valid_student() -> None:
    s = exact_scores(P, dict.fromkeys(P, 0.25), HEAD)
    assert s.validity_mass == 1.0
    assert s.overlap == pytest.approx(0.8)  # 0.25 + 0.25 + 0.2 + 0.1
    assert s.head_recall == pytest.approx(5 / 7)  # 0.5 / 0.7
    assert s.tail_recall == 1.0  # q >= p on c and d
    # recall = harmonic(5/7, 1) = 5/6; score = F1(1, 5/6) = 10/11
    assert s.score == pytest.approx(10 / 11)
    assert s.exact_kl == pytest.approx(0.106440, abs=1e-6)  # 0.4 ln 1.6 + 0.3 ln 1.2 + 0.2 ln 0.8 + 0.1 ln 0.4


def test_a_student_with_invalid_mass() -> None:
    # Valid answers 0.8 in all, the other 0.2 on invalid strings (e.g. mixtures of two answers' words).
    s = exact_scores(P, {"a": 0.3, "b": 0.2, "c": 0.2, "d": 0.1}, HEAD)
    assert s.validity_mass == pytest.approx(0.8)
    assert s.overlap == pytest.approx(0.8)
    assert (s.head_recall, s.tail_recall) == (pytest.approx(5 / 7), pytest.approx(1.0))
    assert s.score == pytest.approx(40 / 49)  # F1(0.8, 5/6)
    assert s.exact_kl == pytest.approx(0.4 * math.log(4 / 3) + 0.3 * math.log(1.5))
    assert s.exact_kl == pytest.approx(0.236712, abs=1e-6)


def test_a_scaled_truth_scores_its_validity() -> None:
    s = exact_scores(P, {a: 0.5 * v for a, v in P.items()}, HEAD)
    assert s.validity_mass == s.overlap == s.head_recall == s.tail_recall == pytest.approx(0.5)
    assert s.score == pytest.approx(0.5)
    assert s.exact_kl == pytest.approx(math.log(2))


def test_over_covering_the_tail_at_the_heads_expense_is_not_optimal() -> None:
    # All valid and the tail fully recalled: an F1 of validity and tail recall alone would give 1 here.
    s = exact_scores(P, {"a": 0.35, "b": 0.25, "c": 0.25, "d": 0.15}, HEAD)
    assert (s.validity_mass, s.tail_recall) == (pytest.approx(1.0), 1.0)
    assert s.head_recall == pytest.approx(6 / 7)
    assert s.score == pytest.approx(1 / (1 / 2 + 7 / 24 + 1 / 4))  # = 24/25
    assert s.score < 1.0 and s.exact_kl > 0.0


def test_rounding_above_one_does_not_lift_the_score() -> None:
    q = {"a": 0.4 + 4e-7, "b": 0.3, "c": 0.2, "d": 0.1}
    s = exact_scores(P, q, HEAD)
    assert s.validity_mass == 1.0 and s.score == 1.0


def test_combined_score_is_the_f1_of_validity_and_the_harmonic_recall() -> None:
    assert combined_score(1.0, 1.0, 1.0) == 1.0
    assert combined_score(0.5, 1.0, 1.0) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert combined_score(1.0, 0.5, 1.0) == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))  # recall 2/3
    assert combined_score(0.0, 1.0, 1.0) == combined_score(1.0, 1.0, 0.0) == 0.0
    with pytest.raises(ValueError, match=r"tail_recall=1\.5"):
        combined_score(1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="validity_mass=nan"):
        combined_score(math.nan, 1.0, 1.0)


def test_the_f_half_score_weighs_validity_four_times_as_much_as_recall() -> None:
    # F0.5 of precision P and recall R: 1.25 P R / (0.25 P + R); here P = 0.5, R = 1.
    assert combined_score(0.5, 1.0, 1.0, beta=0.5) == pytest.approx(1.25 * 0.5 / (0.25 * 0.5 + 1))
    assert combined_score(1.0, 0.5, 1.0, beta=0.5) == pytest.approx(1.25 * (2 / 3) / (0.25 + 2 / 3))
    # Invalid mass costs more, missing tail less, than under the F1.
    assert combined_score(0.6, 1.0, 1.0, beta=0.5) < combined_score(0.6, 1.0, 1.0)
    assert combined_score(1.0, 1.0, 0.6, beta=0.5) > combined_score(1.0, 1.0, 0.6)
    scaled = exact_scores(P, {a: 0.5 * v for a, v in P.items()}, HEAD, beta=0.5)
    assert scaled.score == pytest.approx(0.5) and exact_scores(P, P, HEAD, beta=0.5).score == pytest.approx(1.0)
    for bad in (0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match=r"beta=.*: must be a positive finite number"):
            combined_score(1.0, 1.0, 1.0, beta=bad)  # type: ignore[arg-type]


def test_mean_scores_average_every_field() -> None:
    perfect = exact_scores(P, dict(P), HEAD)
    half = exact_scores(P, {a: 0.5 * v for a, v in P.items()}, HEAD)
    m = mean_scores([perfect, half])
    assert m.validity_mass == pytest.approx(0.75) and m.score == pytest.approx(0.75)
    assert m.exact_kl == pytest.approx(math.log(2) / 2)
    one_mode = exact_scores(P, {"a": 0.9, "b": 0.0, "c": 0.0, "d": 0.0}, HEAD)
    assert mean_scores([perfect, one_mode]).exact_kl == math.inf
    with pytest.raises(ValueError, match="results: no prompts"):
        mean_scores([])


@pytest.mark.parametrize(
    ("p", "q", "head", "message"),
    [
        ({"a": 0.5, "b": 0.4}, {"a": 0.5, "b": 0.4}, ("a",), r"p: sums to 0\.9"),
        ({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0}, ("a",), r"p\['b'\]=0\.0: valid answers need a positive"),
        ({"a": math.nan, "b": 0.5}, {"a": 0.5, "b": 0.5}, ("a",), r"p\['a'\]=nan: must be a finite"),
        ({"a": 0.5, "b": 0.5}, {"a": math.inf, "b": 0.5}, ("a",), r"q\['a'\]=inf: must be a finite"),
        ({"a": 0.5, "b": 0.5}, {"a": -0.1, "b": 0.5}, ("a",), r"q\['a'\]=-0\.1: a probability must lie"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.6, "b": 0.5}, ("a",), r"q: sums to 1\.1 > 1"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.5}, ("a",), r"q: must give exactly p's answers; missing \['b'\]"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.2, "z": 0.1}, ("a",), r"extra \['z'\]"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}, ("z",), r"head: 'z' is not an answer of p"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}, (), "head: holds 0 of p's 2 answers"),
        ({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}, ("a", "b"), "head: holds 2 of p's 2 answers"),
        ({}, {}, (), "p: the true distribution has no answers"),
    ],
)
def test_bad_inputs_are_refused_naming_the_argument(p: dict[str, float], q: dict[str, float],
                                                    head: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exact_scores(p, q, head)

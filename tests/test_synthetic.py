from __future__ import annotations

import math
from collections import Counter

import pytest

from arkd_env.assets.synthetic import (
    DETERMINISTIC,
    OPEN,
    TASKS,
    WORDS,
    SyntheticExample,
    answer_distribution,
    generate_suite,
    head_answers,
    normalize_answer,
    suite_metrics,
    suite_vocabulary,
    tail_answers,
)


def test_suite_is_deterministic_given_the_seed() -> None:
    assert generate_suite(200, seed=3) == generate_suite(200, seed=3)
    assert generate_suite(200, seed=3) != generate_suite(200, seed=4)
    # A longer suite starts with the shorter one, so sizes can change without reshuffling everything.
    assert generate_suite(300, seed=3)[:200] == generate_suite(200, seed=3)


def test_every_task_is_balanced_and_deterministic_answers_are_right() -> None:
    suite = generate_suite(800, seed=0)
    assert Counter(e.task for e in suite) == {name: 100 for name in TASKS}
    for e in suite:
        items = e.context.split()
        if e.task == "copy":
            assert e.response == e.context and 3 <= len(items) <= 5 and set(items) <= set(WORDS)
        elif e.task == "reverse":
            assert e.response.split() == items[::-1]
        elif e.task == "sort":
            assert [int(x) for x in e.response.split()] == sorted(int(x) for x in items)
        elif e.task == "increment":
            assert [int(x) for x in e.response.split()] == [int(x) + 1 for x in items]
            assert 3 <= len(items) <= 5 and all(0 <= int(x) <= 8 for x in items)
        else:
            assert e.kind == OPEN and e.distribution == e.task and e.context == ""
            assert e.response in answer_distribution(e.task)
        # Short texts keep the embedded preset fast.
        assert len(f"{e.instruction} {e.context} {e.response}".split()) < 20


def test_answer_distribution_is_the_documented_zipf_law() -> None:
    p = answer_distribution("colour")
    answers = TASKS["colour"].answers
    assert list(p) == list(answers) and len(p) == 24
    norm = sum(k ** -1.2 for k in range(1, 25))
    assert p["blue"] == pytest.approx(1 / norm)
    assert p["red"] == pytest.approx(2 ** -1.2 / norm)
    assert math.fsum(p.values()) == pytest.approx(1.0)
    # Head: shortest prefix with mass >= 0.5 (blue, red, green here: 0.576; blue+red is 0.486).
    assert head_answers("colour") == ("blue", "red", "green")
    assert p["blue"] + p["red"] < 0.5 <= p["blue"] + p["red"] + p["green"]
    assert set(tail_answers("colour")) == set(answers) - {"blue", "red", "green"}
    with pytest.raises(ValueError, match="'copy' is not an open task"):
        answer_distribution("copy")


def test_sampled_answers_follow_the_true_distribution() -> None:
    suite = generate_suite(16000, seed=1)  # 2000 draws per open task
    for name in ("fruit", "number"):
        counts = Counter(e.response for e in suite if e.task == name)
        n = sum(counts.values())
        p = answer_distribution(name)
        tvd = 0.5 * sum(abs(p[a] - counts[a] / n) for a in p)
        assert tvd < 0.08, (name, tvd)


def test_vocabulary_covers_every_text() -> None:
    vocab = set(suite_vocabulary())
    for e in generate_suite(400, seed=5):
        for text in (e.instruction, e.context, e.response):
            assert set(normalize_answer(text).split()) <= vocab


def _ex(task: str, response: str, context: str = "") -> SyntheticExample:
    kind = TASKS[task].kind
    distribution = task if kind == OPEN else ""
    return SyntheticExample(TASKS[task].instruction, context, response, task, kind, distribution)


def test_suite_metrics_on_hand_made_generations() -> None:
    examples = [
        _ex("copy", "alpha beta gamma", "alpha beta gamma"),
        _ex("reverse", "gamma beta alpha", "alpha beta gamma"),
        _ex("increment", "4 6", "3 5"),
        *[_ex("colour", "blue")] * 5,
    ]
    generations = ["alpha beta gamma", "  gamma beta   alpha ", "8", "blue", "Blue", "red", "teal.", "banana"]
    m = suite_metrics(examples, generations)
    assert m["exact_match"] == pytest.approx(2 / 3)
    assert (m["exact_match_copy"], m["exact_match_reverse"], m["exact_match_increment"]) == (1.0, 1.0, 0.0)
    # "teal." normalises to "teal ." which is not an answer: counts blue 2, red 1, invalid 2 of n = 5.
    p = answer_distribution("colour")
    tvd = 0.5 * (abs(p["blue"] - 0.4) + abs(p["red"] - 0.2) + (1 - p["blue"] - p["red"]) + 0.4)
    assert m["open_tvd"] == pytest.approx(tvd)
    denom = 5 + 0.5 * 25
    counts = {"blue": 2, "red": 1}
    kl = sum(pa * math.log(pa / ((counts.get(a, 0) + 0.5) / denom)) for a, pa in p.items())
    assert m["open_kl"] == pytest.approx(kl)
    assert m["tail_share"] == 0.0  # valid answers: blue, blue, red -- all head
    assert m["tail_coverage"] == 0.0
    assert m["invalid_rate"] == pytest.approx(2 / 5)
    assert m["true_tail_share"] == pytest.approx(1 - p["blue"] - p["red"] - p["green"])
    assert (m["n_deterministic"], m["n_open"]) == (3.0, 5.0)


def test_suite_metrics_tail_numbers_pool_tasks() -> None:
    examples = [*[_ex("colour", "blue")] * 4, *[_ex("fruit", "apple")] * 4]
    generations = ["teal", "teal", "navy", "blue", "apple", "quince", "car", "car"]
    m = suite_metrics(examples, generations)
    # Valid: teal, teal, navy, blue, apple, quince (6); tail among them: teal, teal, navy, quince (4).
    assert m["tail_share"] == pytest.approx(4 / 6)
    tail_sizes = len(tail_answers("colour")) + len(tail_answers("fruit"))  # 21 + 26
    assert tail_sizes == 47
    assert m["tail_coverage"] == pytest.approx(3 / 47)  # teal, navy, quince
    assert m["invalid_rate"] == pytest.approx(2 / 8)
    assert math.isnan(m["exact_match"])
    # Records (as data.py stores them) score like examples.
    records = [e.to_record() for e in examples]
    assert suite_metrics(records, generations) == pytest.approx(m, nan_ok=True)


def test_suite_metrics_all_invalid_gives_maximal_distance() -> None:
    m = suite_metrics([_ex("number", "seven")] * 3, ["banana"] * 3)
    assert m["open_tvd"] == pytest.approx(1.0)
    assert m["invalid_rate"] == 1.0 and math.isnan(m["tail_share"]) and m["tail_coverage"] == 0.0


def test_suite_metrics_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 examples but 1 generations"):
        suite_metrics([_ex("increment", "3", "2")] * 2, ["3"])
    assert TASKS["increment"].kind == DETERMINISTIC

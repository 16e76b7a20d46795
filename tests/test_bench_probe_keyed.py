"""benchmarks/probe_keyed.py: its two-phase schedules and the pairs it may summarise."""

from __future__ import annotations

import argparse

import pytest
from _benchmarks import load_benchmark

probe = load_benchmark("probe_keyed")


def test_a_schedule_reads_both_weightings_and_the_switch_point() -> None:
    assert probe.parse_schedule("1/0@0.75") == (1.0, 0.0, 0.75)
    assert probe.parse_schedule("0.2/0.9@0.5") == (0.2, 0.9, 0.5)


@pytest.mark.parametrize(("text", "message"), [
    ("1/0", r"--schedules '1/0': expected A/B@F"),
    ("1-0@0.5", r"expected A/B@F"),
    ("1/0@1", r"F in \(0, 1\)"),
    ("1.5/0@0.5", r"A and B must lie in \[0, 1\]"),
])
def test_a_bad_schedule_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        probe.parse_schedule(text)


def test_pairs_must_name_weightings_the_probe_plays(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        probe.main(["--alphas", "1", "0", "--pair", "1", "0.5"])
    assert "--pair 1 0.5: both must be among --alphas" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.main(["--alphas", "0.5", "--schedules", "1/0@0.5", "--pair-schedule", "0/1@0.5", "0.5"])
    assert "--pair-schedule 0/1@0.5 0.5: the schedule must be among --schedules" in capsys.readouterr().err

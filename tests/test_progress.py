"""arkd_env/progress.py: without a terminal, progress is a few plain lines on stdout, not a hidden bar."""

from __future__ import annotations

import pytest

from arkd_env import progress


def test_without_a_terminal_progress_prints_throttled_lines(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    bar = progress.bar(total=4, desc="warm-up", unit="step")
    assert isinstance(bar, progress.LineProgress)
    bar.set_description("train")
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    # The first update and the close print; the updates between fall inside LOG_EVERY_S.
    assert lines[0].startswith("train: 1/4 step (25%)") and "s left" in lines[0]
    assert lines[-1].startswith("train: 4/4 step (100%)") and len(lines) == 2


def test_every_update_prints_once_the_interval_has_passed(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert list(progress.track(["a", "b", "c"], desc="compare", total=3)) == ["a", "b", "c"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["compare: 1/3 it (33%)", "compare: 2/3 it (67%)",
                                                     "compare: 3/3 it (100%)"]

"""Every user error of the `arkd` command: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import arkd, one_error_line

from train.cli import main


@pytest.mark.parametrize(("argv", "fragment"), [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--preset", "nano", "--algo", "dqnx"], "unknown algorithm 'dqnx'"),
    (["train", "--preset", "nano", "--algo", "sac", "--set", "env.action_mode=binary"], "continuous actions"),
    (["train", "--preset", "nano", "--algo", "sac", "--set", "env.action_mode=grid"], "action_mode=grid is Discrete"),
    (["train", "--preset", "nano", "--set", "engine.lr=abc"], "engine.lr: expected a number"),
    (["train", "--preset", "nano", "--set", "engine.bogus=1"], "unknown key 'engine.bogus'"),
    (["train", "--preset", "nano", "--set", "nokey"], "expected key=value"),
    (["train", "--preset", "nano", "--config", "/nonexistent/x.yaml"], "config file not found"),
    (["train", "--resume", "/nonexistent/run"], "run folder not found"),
    (["train", "--preset", "nano", "--timesteps", "0"], "run.timesteps=0"),
    (["distill", "--preset", "nano", "--policy", "fkx"], "no such policy file"),
    (["distill", "--preset", "nano", "--policy", "phase:0.2/1"], "not a baseline: fkl, rkl, fixed:<alpha>, "
                                                                 "linear:<a>-><b>, cosine, phases:<a>/<b>/..."),
    (["distill", "--preset", "nano", "--policy", "fixed:1.5"], "must lie in [0, 1]"),
    (["compare", "--preset", "nano", "--policies", "fkl,nope.zip"], "nope.zip: no such policy file"),
    (["compare", "--preset", "nano", "--policies", "fkl", "--seeds", "x"], "--seeds 'x'"),
    (["evaluate", "/nonexistent/student", "--preset", "nano"], "student folder not found"),
    (["train", "--presett", "nano"], "unrecognized arguments"),
])
def test_user_errors(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if "--presett" in argv else contextlib.nullcontext():
        code = main(argv)
        assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert fragment in line


def test_resume_refuses_changed_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("preset: nano\n")
    assert main(["train", "--resume", str(run), "--algo", "sac"]) == 2
    assert "--algo cannot change it" in one_error_line(capsys.readouterr().err)
    (run / "run.json").write_text('{"format": 99}')
    assert main(["train", "--resume", str(run)]) == 2
    assert "run folder format 99" in one_error_line(capsys.readouterr().err)


def test_disk_full_is_one_line(tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from train import runs

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(runs, "create_run_dir", full)
    assert main(["train", "--preset", "nano", "--output-dir", str(tmp_path)]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        main(["train", "--preset", "nano", "--algo", "dqnx", "--debug"])


def test_subprocess_exit_status() -> None:
    done = arkd("distill", "--preset", "nano", "--policy", "linear:1")
    assert done.returncode == 2
    assert "expected linear:<a>-><b>" in one_error_line(done.stderr)

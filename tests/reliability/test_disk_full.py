"""The disk fills up while `arkd train` writes a checkpoint: the error is one line, the previous checkpoint stays
complete and loadable, nothing half-written is left, and the run resumes once there is space again."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY, TINY_PPO, one_error_line

from train import checkpoints
from train.cli import main

ARGS = [*TINY, *TINY_PPO, "--checkpoint-every", "2", "--set", "run.reference_policies=[]",
        "--set", "run.final_eval=false"]


def test_disk_full_during_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from agents import registry

    real_save = registry.save_agent
    calls: list[Path] = []

    def save_until_full(model: Any, path: str | Path) -> Path:
        calls.append(Path(path))
        if len(calls) < 2:
            return real_save(model, path)
        Path(path).write_bytes(b"PK\x03\x04 half a file")  # what a full disk leaves: a cut file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(registry, "save_agent", save_until_full)
    assert main(["train", *ARGS, "--timesteps", "6", "--output-dir", str(tmp_path), "--name", "full"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "model.zip" in line

    run = tmp_path / "full"
    root = run / checkpoints.CHECKPOINT_DIR
    assert [p.name for p in root.iterdir()] == ["step_2"]  # the failed step_4 left nothing behind
    assert not (run / "policy.zip").exists() and not list(run.glob(".*"))
    latest = checkpoints.latest(run)
    assert latest is not None
    assert registry.load_agent(latest / checkpoints.MODEL_FILE).num_timesteps == 2

    monkeypatch.setattr(registry, "save_agent", real_save)  # space again: the run resumes from step 2
    assert main(["train", "--resume", str(run)]) == 0
    assert registry.load_agent(run / "policy.zip").num_timesteps == 6
    assert checkpoints.latest(run) == root / "step_6"


def test_disk_full_while_replacing_the_policy_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from agents import registry
    from train.trainer import save_policy

    model = registry.make_agent("fixed:0.3", None)
    model.num_timesteps = 4
    first = save_policy(model, tmp_path)
    before = first.read_bytes()

    def full(model: Any, path: str | Path) -> Path:
        Path(path).write_bytes(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(registry, "save_agent", full)
    with pytest.raises(OSError, match="No space left"):
        save_policy(model, tmp_path)
    assert first.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["policy.zip"]


def test_disk_full_before_the_run_folder_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from train import runs

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(runs, "create_run_dir", full)
    assert main(["train", "--preset", "nano", "--output-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(tmp_path / "x") in line
    assert not list(tmp_path.iterdir())

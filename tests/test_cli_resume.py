"""`arkd train --resume`: the original command's flags are accepted again, changes are refused. (Killing and
resuming a run is tests/reliability/test_sigkill_resume.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY

COMMAND = ["train", "--algo", "ppo", *TINY, "--timesteps", "64", "--seed", "3"]


def resumed_config(run: Path, *flags: str) -> Any:
    from train.cli import _train_config, build_parser

    return _train_config(build_parser().parse_args([*flags, "--resume", str(run)]))[0]


@pytest.fixture()
def saved_run(tmp_path: Path) -> Path:
    from train.cli import _train_config, build_parser
    from train.trainer import write_run_files

    cfg, _ = _train_config(build_parser().parse_args([*COMMAND, "--output-dir", str(tmp_path)]))
    write_run_files(cfg, tmp_path / "run")
    return tmp_path / "run"


def test_resume_accepts_the_original_command(saved_run: Path) -> None:
    from train.trainer import load_run

    saved = load_run(saved_run)
    assert resumed_config(saved_run, *COMMAND, "--output-dir", str(saved_run.parent)) == saved
    assert resumed_config(saved_run, "train") == saved  # no flags: the saved config
    assert resumed_config(saved_run, "train", "--timesteps", "80").run.timesteps == 80
    # One of the original flags repeated alone keeps the others as saved (TINY set env.horizon=2).
    assert resumed_config(saved_run, "train", "--set", "env.updates_per_step=1") == saved
    assert resumed_config(saved_run, "train", "--preset", "nano") == saved
    from train.errors import UserError

    with pytest.raises(UserError, match=r"agent\.algo would change from 'ppo' to 'a2c'"):  # a --set alone counts
        resumed_config(saved_run, "train", "--set", "agent.algo=a2c")


@pytest.mark.parametrize(("flags", "message"), [
    (["--seed", "4"], "run.seed would change from 3 to 4"),
    (["--algo", "a2c"], "agent.algo would change from 'ppo' to 'a2c'"),
    (["--set", "engine.lr=0.5"], "engine.lr would change from"),
    (["--preset", "embedded"], "would change from"),
])
def test_resume_refuses_a_change_naming_key_and_values(saved_run: Path, flags: list[str], message: str) -> None:
    from train.errors import UserError

    with pytest.raises(UserError, match=message):
        resumed_config(saved_run, *COMMAND, *flags)

"""`arkd train --resume`: the original command's flags are accepted again, changes are refused; a run killed
with SIGKILL at a random moment resumes and reaches the final step count."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY, TINY_PPO, arkd, popen

TOTAL = 12
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


@pytest.mark.slow


def test_sigkill_then_resume(tmp_path: Path) -> None:
    from agents.registry import load_agent

    args = ["train", *TINY, *TINY_PPO, "--timesteps", str(TOTAL), "--checkpoint-every", "2",
            "--output-dir", str(tmp_path), "--name", "killed", "--set", "run.reference_policies=[]",
            "--set", "run.final_eval=false", "--set", "run.keep_checkpoints=10"]
    run = tmp_path / "killed"
    process = popen(*args)
    deadline = time.monotonic() + 400
    target = run / "checkpoints" / f"step_{2 * random.randint(1, 4)}"  # a random episode of the first 4
    while not target.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))  # then a random moment within the next episode
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done = arkd("train", "--resume", str(run))
    assert done.returncode == 0, done.stderr
    folders = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    assert folders[-1].name == f"step_{TOTAL}"
    for folder in folders:  # every checkpoint left behind loads, and none is partial
        assert not folder.name.startswith(".")
        model = load_agent(folder / "model.zip")
        assert model.num_timesteps == json.loads((folder / "state.json").read_text())["num_timesteps"]
    assert load_agent(run / "policy.zip").num_timesteps == TOTAL
    steps = [int(line.split(",")[0]) for line in (run / "learning_curve.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == TOTAL  # no episode counted twice after the resume

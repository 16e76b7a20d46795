"""Kill `arkd train` with SIGKILL at a random moment, resume it, and reach the final step count."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from _cli_helpers import TINY, TINY_PPO, arkd, popen

pytestmark = pytest.mark.slow
TOTAL = 12


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

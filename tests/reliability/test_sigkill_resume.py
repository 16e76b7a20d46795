"""`arkd train` on the nano preset killed with SIGKILL at 6 random moments, each time resumed with --resume:
every resume succeeds, the final step count is reached, and no checkpoint is ever seen half-written."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import yaml
from _cli_helpers import TINY, TINY_PPO, arkd, popen

from arkd_env.atomic import TEMP_PREFIX
from train import checkpoints

pytestmark = pytest.mark.slow
KILLS = 6  # each kill restarts a process (about 10 s of imports on 2 cores): six keep the suite in budget
TOTAL = 120  # env steps: 60 episodes of 2 steps, a checkpoint after each
SEED = 20240611  # of the kill moments


def latest_step(run: Path) -> int:
    found = checkpoints.complete(run / checkpoints.CHECKPOINT_DIR)
    return found[-1][0] if found else 0


def check_nothing_half_written(run: Path) -> None:
    """Every file a resume (or a user) reads is whole; leftovers of a killed write are hidden temporaries."""
    from agents.registry import load_agent

    root = run / checkpoints.CHECKPOINT_DIR
    for child in root.iterdir() if root.is_dir() else []:
        assert child.name.startswith((TEMP_PREFIX, "step_")), child
    for step, folder in checkpoints.complete(root):
        state = json.loads((folder / checkpoints.STATE_FILE).read_text())
        assert state["num_timesteps"] == step
        assert load_agent(folder / checkpoints.MODEL_FILE).num_timesteps == step
    yaml.safe_load((run / "config.yaml").read_text())
    assert json.loads((run / "run.json").read_text())["format"] == 1
    if (run / "policy.zip").exists():
        load_agent(run / "policy.zip")
    for hidden in run.glob(".*"):  # a killed atomic write leaves only its hidden temporary file
        assert hidden.name.startswith(TEMP_PREFIX), hidden


def test_sigkills_and_resumes_reach_the_final_step(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    run = tmp_path / "run"
    first = ["train", *TINY, *TINY_PPO, "--timesteps", str(TOTAL), "--checkpoint-every", "2", "--seed", "3",
             "--output-dir", str(tmp_path), "--name", "run", "--set", "run.reference_policies=[]",
             "--set", "run.final_eval=false", "--set", "run.keep_checkpoints=3"]
    progress = 0
    for kill in range(KILLS):
        process = popen(*(first if kill == 0 else ["train", "--resume", str(run)]))
        deadline = time.monotonic() + 300
        # Let this process write at least one new checkpoint, then kill it at a random moment shortly after:
        # inside an episode, a PPO update, a checkpoint write or the pruning of an old checkpoint.
        while latest_step(run) <= progress and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate()
        assert process.returncode == -signal.SIGKILL, f"kill {kill + 1}: the run ended first:\n{stderr}"
        check_nothing_half_written(run)
        assert latest_step(run) > progress, f"kill {kill + 1}: no progress"
        progress = latest_step(run)
    assert progress < TOTAL, f"the run finished before kill {KILLS}"

    done = arkd("train", "--resume", str(run))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    check_nothing_half_written(run)
    assert latest_step(run) == TOTAL
    from agents.registry import load_agent

    assert load_agent(run / "policy.zip").num_timesteps == TOTAL
    assert json.loads((run / "metrics.json").read_text())["num_timesteps"] == TOTAL
    curve = (run / "learning_curve.csv").read_text().splitlines()
    assert curve[0] == "env_steps,episode_return,episode_length"
    # one row per episode, none lost or counted twice across the restarts
    assert [int(line.split(",")[0]) for line in curve[1:]] == list(range(2, TOTAL + 1, 2))

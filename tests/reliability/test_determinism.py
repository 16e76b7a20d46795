"""Two runs with the same seeds on CPU, in two separate processes with different hash seeds, write identical
metrics JSON (wall-clock times aside): nothing may depend on the global RNG an agent shares with the engine, on
what one process did before, or on set and dict hash order.

GPU kernels (cuBLAS, atomics in scatter/index_add) are not bit-deterministic, so this guarantee is CPU-only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY, TINY_PPO, arkd

from train.cli import main

TIMING = {"train_wall_s", "wall_s"}  # the only fields allowed to differ: seconds of wall-clock time


def in_two_processes(*args: str) -> None:
    """Run ``arkd ARGS --name a|b`` as two processes with different PYTHONHASHSEEDs."""
    for name, hash_seed in (("a", "1"), ("b", "2")):
        done = arkd(*args, "--name", name, extra_env={"PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr


def metrics(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    present = TIMING & set(data)
    assert present, f"{path}: expected a wall-time field"
    return {k: v for k, v in data.items() if k not in TIMING}


@pytest.mark.slow
def test_two_trainings_with_one_seed_give_identical_metrics(tmp_path: Path) -> None:
    args = ["train", *TINY, *TINY_PPO, "--timesteps", "4", "--seed", "5", "--set", "engine.device=cpu",
            "--set", "agent.device=cpu", "--set", "run.reference_policies=[fkl]", "--output-dir", str(tmp_path)]
    in_two_processes(*args)
    a, b = metrics(tmp_path / "a" / "metrics.json"), metrics(tmp_path / "b" / "metrics.json")
    assert a == b
    assert a["num_timesteps"] == 4 and "final_episode" in a and a["reference_returns"]
    assert (tmp_path / "a" / "learning_curve.csv").read_text() == (tmp_path / "b" / "learning_curve.csv").read_text()


@pytest.mark.slow
def test_two_distillations_with_one_seed_give_identical_metrics(tmp_path: Path) -> None:
    # In one process (train and compare above cover separate processes): the second run must not depend on
    # what the first left in the process, the global RNG above all.
    args = ["distill", *TINY, "--policy", "linear:1->0", "--seed", "9", "--set", "engine.device=cpu"]
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    a, b = metrics(tmp_path / "a" / "metrics.json"), metrics(tmp_path / "b" / "metrics.json")
    assert a == b
    assert "rouge_l" in a["metrics"] and len(a["steps"]) == 3


@pytest.mark.slow
def test_two_comparisons_with_a_random_policy_give_identical_results(tmp_path: Path) -> None:
    for name, hash_seed in (("a", "1"), ("b", "2")):
        done = arkd("compare", *TINY, "--policies", "fkl,random", "--seeds", "2", "--output-dir",
                    str(tmp_path / name), extra_env={"PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr
    files = {name: sorted((tmp_path / name).rglob("seed_*.json")) for name in ("a", "b")}
    assert len(files["a"]) == len(files["b"]) == 4  # two policies × two seeds
    for a, b in zip(files["a"], files["b"], strict=True):
        assert a.name == b.name and metrics(a) == metrics(b), a

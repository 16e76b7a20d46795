"""Two runs with the same seeds on CPU write identical metrics JSON (wall-clock times aside).

GPU kernels (cuBLAS, atomics in scatter/index_add) are not bit-deterministic, so this guarantee is CPU-only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY, TINY_PPO

from train.cli import main

TIMING = {"train_wall_s", "wall_s"}  # the only fields allowed to differ: seconds of wall-clock time


def metrics(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    present = TIMING & set(data)
    assert present, f"{path}: expected a wall-time field"
    return {k: v for k, v in data.items() if k not in TIMING}


@pytest.mark.slow
def test_two_trainings_with_one_seed_give_identical_metrics(tmp_path: Path) -> None:
    args = ["train", *TINY, *TINY_PPO, "--timesteps", "4", "--seed", "5", "--set", "engine.device=cpu",
            "--set", "agent.device=cpu", "--set", "run.reference_policies=[fkl]", "--output-dir", str(tmp_path)]
    for name in ("a", "b"):
        assert main([*args, "--name", name]) == 0
    a, b = metrics(tmp_path / "a" / "metrics.json"), metrics(tmp_path / "b" / "metrics.json")
    assert a == b
    assert a["num_timesteps"] == 4 and "final_episode" in a and a["reference_returns"]
    assert (tmp_path / "a" / "learning_curve.csv").read_text() == (tmp_path / "b" / "learning_curve.csv").read_text()


@pytest.mark.slow
def test_two_distillations_with_one_seed_give_identical_metrics(tmp_path: Path) -> None:
    args = ["distill", *TINY, "--policy", "linear:1->0", "--seed", "9", "--set", "engine.device=cpu"]
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    a, b = metrics(tmp_path / "a" / "metrics.json"), metrics(tmp_path / "b" / "metrics.json")
    assert a == b
    assert "rouge_l" in a["metrics"] and len(a["steps"]) == 3

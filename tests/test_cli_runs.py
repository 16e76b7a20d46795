"""train/runs.py: run folder names cannot escape the output dir; atomic JSON without NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from arkd_env.atomic import atomic_write_text
from train.runs import create_run_dir, inside, read_json, sanitize, write_json


@pytest.mark.parametrize(("raw", "safe"), [("../../etc", "etc"), ("a/b\\c", "a-b-c"), ("..", "run"),
                                           ("pkg.mod:Class", "pkg.mod-Class"), ("fixed:0.3", "fixed-0.3")])
def test_sanitize(raw: str, safe: str) -> None:
    assert sanitize(raw) == safe


def test_run_dirs_stay_inside(tmp_path: Path) -> None:
    first = create_run_dir(tmp_path, "nano", "../../x", 0)
    assert first.parent == tmp_path.resolve() and first.name.startswith("nano__x__0__")
    second = create_run_dir(tmp_path, name="../evil")
    assert second == tmp_path.resolve() / "evil"
    assert create_run_dir(tmp_path, name="../evil").name == "evil-1"  # no collision
    with pytest.raises(ValueError, match="outside the output directory"):
        inside(tmp_path / ".." / "elsewhere", tmp_path)


def test_json_is_atomic_and_nan_free(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sub" / "m.json", {"a": math.nan, "b": [1.5, math.inf], "c": (1, 2)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temporary file left
    atomic_write_text(path, "{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(path)


def test_a_failed_command_removes_a_folder_holding_only_its_setup_files(tmp_path: Path) -> None:
    from train.runs import removed_on_error

    with pytest.raises(RuntimeError), removed_on_error():
        run = create_run_dir(tmp_path, "nano", "ppo", 1)
        for name in ("config.yaml", "run.json", "tb/events"):
            atomic_write_text(run / name, "x")
        raise RuntimeError("failed after set-up")
    assert not run.exists()
    with pytest.raises(RuntimeError), removed_on_error():
        kept = create_run_dir(tmp_path, "nano", "ppo", 2)
        atomic_write_text(kept / "checkpoints" / "step_2" / "state.json", "{}")
        raise RuntimeError("failed after a checkpoint")
    assert kept.exists()


def test_a_locked_run_folder_refuses_a_second_command(tmp_path: Path) -> None:
    from train.runs import locked

    with locked(tmp_path), pytest.raises(ValueError, match="another arkd command is using this run folder"), \
            locked(tmp_path):
        pass
    with locked(tmp_path):  # released with the first holder
        pass


def test_policies_whose_names_share_a_result_folder_are_refused(tmp_path: Path) -> None:
    from train.compare import run_compare, unique_labels
    from train.config import load_run_config
    from train.runs import sanitize

    # A saved policy in a run folder named like the sanitised baseline spec:
    assert unique_labels(["linear:1->0", "linear-1--0/policy.zip"]) == ["linear:1->0", "linear-1--0-2"]
    # Specs longer than a folder name may be, equal in their first 80 characters, still get folders of their own.
    long = "by-feature:instance_log_score_beta:" + "/".join(f"0.{i}=0.5" for i in range(1, 9))
    labels = unique_labels([long + "/0.95=1", long + "/0.95=0"])
    assert len({sanitize(name) for name in labels}) == 2
    with pytest.raises(ValueError, match=r"'x/y' and 'x-y' would share the result folder"):
        run_compare(load_run_config("nano"), ["fkl", "rkl"], [100], tmp_path, names=["x/y", "x-y"])
    assert not (tmp_path / "runs").exists()

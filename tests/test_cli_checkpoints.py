"""train/checkpoints.py: atomic checkpoint folders, a failed write (disk full) keeps the previous one."""

from __future__ import annotations

import errno
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from train import checkpoints


class FakeModel:
    """Just enough of an SB3 model for save_agent: num_timesteps and save(path)."""

    def __init__(self, steps: int, fail: bool = False) -> None:
        self.num_timesteps = steps
        self.fail = fail

    def save(self, path: str) -> None:
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data", json.dumps({"num_timesteps": self.num_timesteps}))


def test_interval_rounds_up_to_whole_episodes() -> None:
    assert checkpoints.interval(0, horizon=4, n_envs=1) == 4
    assert checkpoints.interval(5, horizon=4, n_envs=1) == 8
    assert checkpoints.interval(8, horizon=4, n_envs=2) == 8
    assert checkpoints.interval(9, horizon=2, n_envs=3) == 12


def test_save_latest_prune(tmp_path: Path) -> None:
    for step in (4, 8, 12):
        checkpoints.save(FakeModel(step), tmp_path, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_12", "step_8"]
    latest = checkpoints.latest(tmp_path)
    assert latest is not None and latest.name == "step_12"
    assert json.loads((latest / "state.json").read_text())["num_timesteps"] == 12


def test_partial_folders_are_ignored_and_cleaned(tmp_path: Path) -> None:
    checkpoints.save(FakeModel(4), tmp_path)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_8-abc").mkdir()
    (root / "step_9").mkdir()  # no state.json: incomplete
    latest = checkpoints.latest(tmp_path)
    assert latest is not None and latest.name == "step_4"
    checkpoints.clean_partial(tmp_path)
    assert not (root / ".tmp-step_8-abc").exists()


def test_disk_full_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: Any) -> None:
    checkpoints.save(FakeModel(4), tmp_path)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save(FakeModel(8, fail=True), tmp_path)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_4"]  # nothing half-written left
    latest = checkpoints.latest(tmp_path)
    assert latest is not None
    assert zipfile.is_zipfile(latest / "model.zip")


def test_reward_normalizer_statistics_survive_a_checkpoint(tmp_path: Path) -> None:
    from _toy_env import ToyDistillEnv
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from agents.registry import make_agent
    from arkd_env.env.wrappers import normalize_vec_rewards

    def venv() -> Any:
        return normalize_vec_rewards(VecMonitor(DummyVecEnv([lambda: ToyDistillEnv("mix")])))

    model = make_agent("ppo", venv(), n_steps=8, batch_size=8, n_epochs=1, seed=0)  # as arkd train builds it
    model.learn(8)
    stats = model.get_vec_normalize_env().ret_rms
    assert stats.count > 1  # it saw rewards
    folder = checkpoints.save(model, tmp_path)
    assert json.loads((folder / checkpoints.NORMALIZER_FILE).read_text())["var"] == pytest.approx(float(stats.var))
    resumed = checkpoints.load(folder, venv(), device="cpu")
    restored = resumed.get_vec_normalize_env().ret_rms
    assert (float(restored.mean), float(restored.var), restored.count) == \
        pytest.approx((float(stats.mean), float(stats.var), stats.count))

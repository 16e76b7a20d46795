"""Per student update logging: the engine's record of each applied update, and the TensorBoard callback writing
every k-th of them against the student updates run so far."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from arkd_env.config import load_preset
from arkd_env.engine import Distiller, UpdateRecord
from train.callbacks import TensorBoardCallback


def test_train_steps_records_each_applied_update_with_its_loss_and_learning_rate() -> None:
    cfg = load_preset("nano", {"engine.warmup_updates": 4, "engine.lr": 0.01}).engine
    distiller = Distiller.from_config(cfg)
    first = distiller.train_steps({"fkl": 0.5, "rkl": 0.5}, 2)
    second = distiller.train_steps({"fkl": 1.0}, 1)
    assert [r.update for r in first.update_log + second.update_log] == [1, 2, 3]
    # Warm-up scales the rate linearly: update u (counted from 1) runs at lr * u / warmup_updates.
    assert [r.lr for r in first.update_log + second.update_log] == pytest.approx([0.0025, 0.005, 0.0075])
    assert sum(r.loss for r in first.update_log) / 2 == pytest.approx(first.loss)
    assert isinstance(second.update_log[0], UpdateRecord) and second.update_log[0].loss == pytest.approx(second.loss)


def _info(weights: dict[str, float], losses: list[float]) -> dict[str, Any]:
    return {"weights": weights, "update_log": [{"update": i + 1, "loss": v, "lr": 0.1 * (i + 1)}
                                               for i, v in enumerate(losses)]}


def test_callback_logs_every_kth_update_against_the_updates_of_all_envs(tmp_path: Path) -> None:
    model = SimpleNamespace(logger=configure(str(tmp_path), ["tensorboard"]), num_timesteps=4)
    callback = TensorBoardCallback(updates_per_step=2, update_every=3)
    callback.init_callback(model)  # type: ignore[arg-type]  # the callback reads only these two attributes
    callback.on_training_start({}, {})  # resumed at 4 env steps: 8 updates are behind it
    model.num_timesteps = 6
    callback.locals = {"infos": [_info({"fkl": 1.0, "rkl": 0.0}, [5.0, 6.0]),
                                 _info({"fkl": 0.0, "rkl": 1.0}, [7.0, 8.0])]}
    callback.on_step()
    model.logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()

    def values(tag: str) -> dict[int, Any]:  # values are pytest.approx
        return {e.step: pytest.approx(e.value) for e in acc.Scalars(tag)}

    # Updates 9 and 10 are the first env's, 11 and 12 the second's; every third is logged.
    assert values("update/loss") == {9: 5.0, 12: 8.0}
    assert values("update/lr") == {9: 0.1, 12: 0.2}
    assert values("update/weight/fkl") == {9: 1.0, 12: 0.0}
    assert values("update/weight/rkl") == {9: 0.0, 12: 1.0}
    with pytest.raises(ValueError, match="update_every=0"):
        TensorBoardCallback(update_every=0)

"""Stable-Baselines3 callbacks of `arkd train`: TensorBoard, learning curve, checkpoints, progress.

TensorBoard tags written besides Stable-Baselines3's own (``rollout/*``, ``train/*``, ``time/*``), with the
global env step (over all envs) as the x axis:

- ``env/reward``                     reward of each env step
- ``env/weight/<component>``         the weights the env applied (``info["weights"]``)
- ``env/divergence/<component>``     mean value of each weighted divergence during the step
- ``env/val/<metric>``               validation metrics after the step (``val_fkl``, ``val_divergence``...)
- ``env/loss``                       mean training loss of the step
- ``rollout/actions``                histogram of the actions of each rollout
- the HParams tab                    agent hyperparameters and key engine/env settings

and, every ``UPDATE_LOG_EVERY``-th student update (from ``info["update_log"]``, one entry per applied update),
with the student updates run so far over all envs as the x axis:

- ``update/loss``                    loss of the update
- ``update/lr``                      learning rate of the update
- ``update/weight/<component>``      the weights the update applied
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, TensorBoardOutputFormat

from arkd_env.atomic import atomic_write_text
from arkd_env.progress import bar
from train import checkpoints

LEARNING_CURVE = "learning_curve.csv"
HPARAM_METRICS = {"rollout/ep_rew_mean": 0.0}
# Every update of a long run would fill the event files; a fraction still shows how the loss moves within a step.
UPDATE_LOG_EVERY = 4


def tensorboard_writer(logger: Any) -> Any:
    """The SummaryWriter behind an SB3 logger's TensorBoard output, or None."""
    for output in getattr(logger, "output_formats", []):
        if isinstance(output, TensorBoardOutputFormat):
            return output.writer
    return None


def flat_hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, bool | str | float | None]:
    """Scalars of a nested mapping with dotted keys; lists and objects become strings."""
    result: dict[str, bool | str | float | None] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            result.update(flat_hparams(value, f"{name}."))
        elif value is None or isinstance(value, bool | str):
            result[name] = value
        elif isinstance(value, int | float):
            result[name] = float(value)
        else:
            result[name] = str(value)
    return result


def update_scalars(record: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """The ``update/*`` tags of one student update (an ``update_log`` entry) and the weights it applied."""
    return {"update/loss": float(record["loss"]), "update/lr": float(record["lr"]),
            **{f"update/weight/{component}": float(w) for component, w in weights.items()}}


class TensorBoardCallback(BaseCallback):
    """Per env step scalars from the infos, per student update scalars from their ``update_log``, an action
    histogram per rollout and the HParams tab."""

    def __init__(self, hparams: Mapping[str, Any] | None = None, updates_per_step: int = 1,
                 update_every: int = UPDATE_LOG_EVERY) -> None:
        super().__init__()
        if update_every < 1:
            raise ValueError(f"update_every={update_every}: must be >= 1")
        self.hparams = dict(hparams or {})
        self.updates_per_step = updates_per_step
        self.update_every = update_every
        self.updates = 0  # student updates over all envs and episodes: the x axis of update/*
        self._actions: list[np.ndarray] = []
        self.writer: Any = None

    def _on_training_start(self) -> None:
        # A resumed run goes on from where its env steps left the axis, not from 0 over its earlier points
        # (the few updates skipped as non-finite before the checkpoint are not known here, so not subtracted).
        self.updates = self.num_timesteps * self.updates_per_step
        self.writer = tensorboard_writer(self.logger)
        if self.hparams:
            self.logger.record("hparams", HParam(flat_hparams(self.hparams), HPARAM_METRICS),
                               exclude=("stdout", "log", "json", "csv"))
            self.logger.dump(self.num_timesteps)

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        rewards = self.locals.get("rewards")
        actions = self.locals.get("clipped_actions", self.locals.get("actions"))
        if actions is not None:
            self._actions.append(np.asarray(actions, dtype=np.float64).reshape(len(infos) or 1, -1))
        if self.writer is None:
            return True
        first = self.num_timesteps - len(infos) + 1
        for i, info in enumerate(infos):
            step = first + i
            if rewards is not None:
                self._scalar("env/reward", float(np.asarray(rewards).reshape(-1)[i]), step)
            for group, key in (("weight", "weights"), ("divergence", "components"), ("val", "val")):
                for name, value in (info.get(key) or {}).items():
                    self._scalar(f"env/{group}/{name}", value, step)
            if "loss" in info:
                self._scalar("env/loss", info["loss"], step)
            self._log_updates(info)
        return True

    def _log_updates(self, info: Mapping[str, Any]) -> None:
        weights = info.get("weights") or {}
        for record in info.get("update_log") or []:
            self.updates += 1
            if self.updates % self.update_every == 0:
                for tag, value in update_scalars(record, weights).items():
                    self._scalar(tag, value, self.updates)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        value = float(value)
        if math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def _on_rollout_end(self) -> None:
        if self.writer is not None and self._actions:
            stacked = np.concatenate(self._actions)
            for dim in range(stacked.shape[1]):
                tag = "rollout/actions" if stacked.shape[1] == 1 else f"rollout/actions_{dim}"
                self.writer.add_histogram(tag, stacked[:, dim], self.num_timesteps)
            self.writer.flush()
        self._actions = []

    def _on_training_end(self) -> None:
        self._on_rollout_end()


class LearningCurveCallback(BaseCallback):
    """Appends (env steps, episode return, length) to ``learning_curve.csv`` at each episode end."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.path = run_dir / LEARNING_CURVE

    def _on_training_start(self) -> None:
        if not self.path.is_file():
            atomic_write_text(self.path, "env_steps,episode_return,episode_length\n")

    def _on_step(self) -> bool:
        rows = []
        for info in self.locals.get("infos") or []:
            episode = info.get("episode")
            if episode is not None:
                rows.append(f"{self.num_timesteps},{float(episode['r']):.8g},{int(episode['l'])}\n")
        if rows:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.writelines(rows)
        return True


def read_learning_curve(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / LEARNING_CURVE
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 2:
            try:
                points.append((int(parts[0]), float(parts[1])))
            except ValueError:
                continue  # a line cut by a kill
    return points


def truncate_learning_curve(run_dir: Path, max_steps: int) -> None:
    """Drop episodes logged after the checkpoint a resumed run restarts from (and lines cut by a kill)."""
    path = run_dir / LEARNING_CURVE
    if path.is_file():
        rows = [f"{s},{r:.8g},0" for s, r in read_learning_curve(run_dir) if s <= max_steps]
        lengths = {}
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split(",")
            if len(parts) == 3 and parts[2].isdigit():
                lengths[(parts[0], parts[1])] = parts[2]
        kept = []
        for row in rows:
            step, value, _ = row.split(",")
            kept.append(f"{step},{value},{lengths.get((step, value), '0')}")
        # Atomic: a kill during this rewrite must not lose the curve logged before the checkpoint.
        atomic_write_text(path, "\n".join(["env_steps,episode_return,episode_length", *kept]) + "\n")


class CheckpointCallback(BaseCallback):
    """A checkpoint every ``every`` env steps (a multiple of whole episodes of all envs)."""

    def __init__(self, run_dir: Path, every: int, keep: int) -> None:
        super().__init__()
        self.run_dir, self.every, self.keep = run_dir, every, keep
        self.last_saved = -1

    def _on_training_start(self) -> None:
        self.last_saved = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0 and self.num_timesteps != self.last_saved:
            self.save()
        return True

    def save(self) -> Path:
        path = checkpoints.save(self.model, self.run_dir, self.keep)
        self.last_saved = self.num_timesteps
        return path


class ProgressCallback(BaseCallback):
    """A tqdm bar over env steps (quiet when stderr is not a terminal)."""

    def __init__(self, total: int, start: int = 0) -> None:
        super().__init__()
        self.total, self.start = total, start
        self._bar: Any = None

    def _on_training_start(self) -> None:
        self._bar = bar(total=self.total, initial=self.start, desc="train", unit="step")

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(self.num_timesteps - self._bar.n)
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()

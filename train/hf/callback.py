"""A ``transformers.TrainerCallback`` that sets ARKD's divergence weights as training goes.

Every ``every`` optimizer steps it builds the observation a policy was trained on
(:func:`arkd_env.observation.build_observation`, from the last batch's logits, the last evaluation, the progress
and the weights in force) and applies the weights the policy chooses. The policy is a baseline spec
(``fixed:0.3``, ``linear:1->0``, ``cosine``, ``akl``...), a saved ``policy.zip``, or any object with
Stable-Baselines3's ``predict``. One that also has ``observe(action, reward)`` learns online: after each
evaluation it is rewarded with the drop of the evaluation metric since the one before.

The trainer must include :class:`~train.hf.loss.DistillationMixin` (:class:`~train.hf.loss.ARKDTrainer`); the
weights and the observation reach TensorBoard or W&B through the trainer's own logs (``arkd/*``). The
callback's state is written into every checkpoint and read back when training resumes from one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from transformers import TrainerCallback

from agents.baselines import BaselinePolicy, baseline_env_overrides, is_baseline_spec, make_baseline
from agents.registry import load_agent, read_observes
from arkd_env.atomic import atomic_write_text
from arkd_env.env.actions import ActionCodec
from arkd_env.eval.direction import as_loss
from arkd_env.observation import DEFAULT_FEATURES, build_observation, observation_space

STATE_FILE = "arkd_weighting.json"  # in each checkpoint folder
POLICY_FILE = "arkd_policy.zip"  # an online learner's own state, beside it
DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class PolicyHost(gym.Env[np.ndarray, Any]):
    """The weighting protocol (:class:`arkd_env.env.protocol.WeightingEnv`) without an env behind it: what a
    policy observes and how its actions become weights, so that baselines and saved agents act on a Trainer's
    numbers. It cannot be stepped."""

    def __init__(self, features: Sequence[str] | None = None, action_mode: str = "mix",
                 alpha_grid: Sequence[float] = DEFAULT_GRID, simplex_components: Sequence[str] = ("fkl", "rkl"),
                 simplex_temperature: float = 1.0) -> None:
        self.codec = ActionCodec(action_mode, alpha_grid, simplex_components, simplex_temperature)
        self.action_mode = action_mode
        self.component_names = self.codec.component_names
        # None: the env's default observation, the default features and then the weight of each component
        self.feature_names = (list(features) if features is not None
                              else [*DEFAULT_FEATURES, *(f"w_{c}" for c in self.component_names)])
        self.alpha_grid = list(self.codec.alpha_grid)
        self.simplex_temperature = float(simplex_temperature)
        self.observation_space = observation_space(self.feature_names)
        self.action_space = self.codec.space

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PolicyHost:
        """The host a policy saved with this record (:mod:`agents.policy_record`) expects."""
        return cls(record["features"], record["action_mode"], record.get("alpha_grid", DEFAULT_GRID),
                   record["components"], record.get("simplex_temperature", 1.0))

    def action_to_weights(self, action: Any) -> dict[str, float]:
        return self.codec.to_weights(action)

    def weights_to_action(self, weights: Mapping[str, float]) -> Any:
        return self.codec.from_weights(weights)

    def step(self, action: Any) -> Any:
        raise NotImplementedError("PolicyHost describes a policy's inputs and outputs; a Trainer does the steps")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError("PolicyHost describes a policy's inputs and outputs; a Trainer does the steps")


class WeightingCallback(TrainerCallback):
    """Sets ``trainer.arkd_weights`` every ``every`` steps from ``policy``.

    :param policy: a baseline spec, the path of a saved policy, or an object with ``predict(obs)``
    :param every: optimizer steps between two decisions (the env's ``updates_per_step``)
    :param features: the observation's features; by default the saved policy's record, else the env's default
    :param action_mode: how an action becomes weights (``mix``, ``grid``, ...); by default the record's, else mix
    :param alpha_grid: the α of the ``grid`` mode
    :param metric: the evaluation metric the observation's ``val_*`` features and an online reward follow;
        ``eval_loss`` of a DistillationMixin trainer is ½(FKL + RKL), the env's default reward metric
    """

    def __init__(self, policy: Any = "fixed:0.5", *, every: int = 10, features: Sequence[str] | None = None,
                 action_mode: str | None = None, alpha_grid: Sequence[float] | None = None,
                 metric: str = "eval_loss") -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r}: must be a whole number of steps >= 1")
        self.every, self.metric = every, metric
        self.policy, self.host = self._resolve(policy, features, action_mode, alpha_grid)
        self.online = callable(getattr(self.policy, "observe", None))
        # Schedules read only the progress; a learned policy also needs the batch features.
        self.needs_features = not isinstance(self.policy, BaselinePolicy)
        self.trajectory: list[dict[str, float]] = []  # {"step", weights...} of every decision
        self.val: list[float] = []  # the metric at each evaluation, as a loss
        self.grad_norm = 0.0
        self.last_action: Any = None
        self._trainer: Any = None

    @staticmethod
    def _resolve(policy: Any, features: Sequence[str] | None, action_mode: str | None,
                 alpha_grid: Sequence[float] | None) -> tuple[Any, PolicyHost]:
        def host(mode: str, components: Sequence[str] = ("fkl", "rkl")) -> PolicyHost:
            return PolicyHost(features, mode, alpha_grid or DEFAULT_GRID, components)

        if isinstance(policy, str) and is_baseline_spec(policy):
            if policy.strip().lower().startswith("greedy"):
                raise ValueError(f"policy={policy!r}: greedy probes each weighting by training and undoing it, "
                                 "which a Trainer run cannot do; use it in the env (arkd distill)")
            overrides = baseline_env_overrides(policy)
            target = host(overrides.get("action_mode", action_mode or "mix"),
                          overrides.get("simplex_components", ("fkl", "rkl")))
            return make_baseline(policy, target), target
        if isinstance(policy, str | Path):
            # A missing file is left to load_agent, whose error also lists the baseline names.
            record = read_observes(policy) if Path(policy).is_file() else None
            given = features is not None or action_mode is not None or alpha_grid is not None
            target = host(action_mode or "mix") if given or record is None else PolicyHost.from_record(record)
            return load_agent(policy, env=target, device="cpu"), target
        if not callable(getattr(policy, "predict", None)):
            raise ValueError(f"policy={policy!r}: give a baseline spec, the path of a saved policy, or an object "
                             "with predict(observation)")
        return policy, host(action_mode or "mix")

    # ------------------------------------------------------------------ wiring
    def bind(self, trainer: Any) -> None:
        """Called by the DistillationMixin trainer that this callback serves."""
        self._trainer = trainer
        head = trainer.model.get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0]) if head is not None else int(trainer.model.config.vocab_size)

    def _require_trainer(self) -> Any:
        if self._trainer is None:
            raise ValueError("WeightingCallback needs a trainer with DistillationMixin (train.hf.ARKDTrainer) "
                             "among whose callbacks it is")
        return self._trainer

    # ------------------------------------------------------------------ decisions
    def observation(self, step: int, max_steps: int) -> np.ndarray:
        trainer = self._require_trainer()
        now = self.val[-1] if self.val else 0.0
        before = self.val[-2] if len(self.val) > 1 else now
        return build_observation(self.host.feature_names, {**trainer.arkd_batch_features, "grad_norm": self.grad_norm},
                                 val_metric=now, previous_val_metric=before,
                                 progress=min(1.0, step / max(1, max_steps)), weights=trainer.arkd_weights,
                                 vocab_size=self.vocab_size)

    def decide(self, step: int, max_steps: int) -> dict[str, float]:
        trainer = self._require_trainer()
        obs = self.observation(step, max_steps)
        action, _ = self.policy.predict(obs, deterministic=not self.online)
        weights = self.host.action_to_weights(action)
        trainer.arkd_weights = weights
        trainer.arkd_observation = dict(zip(self.host.feature_names, obs.tolist(), strict=True))
        self.last_action = action
        self.trajectory.append({"step": float(step), **weights})
        return weights

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.trajectory or self.trajectory[-1]["step"] != state.global_step:
            self.decide(state.global_step, state.max_steps)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if step % self.every == 0 and self.trajectory and self.trajectory[-1]["step"] != step:
            self.decide(step, state.max_steps)
        if self.needs_features and (step + 1) % self.every == 0:
            self._require_trainer().arkd_want_features = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        value = (logs or {}).get("grad_norm")
        if isinstance(value, int | float) and math.isfinite(value):
            self.grad_norm = float(value)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        metrics = metrics or {}
        if self.metric not in metrics:
            raise ValueError(f"WeightingCallback(metric={self.metric!r}): the evaluation reported only "
                             f"{', '.join(sorted(metrics))}")
        self.val.append(as_loss(self.metric.removeprefix("eval_"), float(metrics[self.metric])))
        if self.online and len(self.val) > 1 and self.last_action is not None:
            self.policy.observe(self.last_action, self.val[-2] - self.val[-1])

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        trainer = self._require_trainer()
        return {"weights": dict(trainer.arkd_weights), "trajectory": self.trajectory, "val": self.val,
                "grad_norm": self.grad_norm, "batch_features": dict(trainer.arkd_batch_features),
                "last_action": None if self.last_action is None else np.asarray(self.last_action).tolist()}

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        if self.online:
            self.policy.save(folder / POLICY_FILE)
        atomic_write_text(folder / STATE_FILE, json.dumps(self.state_dict(), indent=2))

    def load_state(self, folder: Path) -> None:
        """Continue from the state saved in checkpoint ``folder`` (none there: start afresh)."""
        path = folder / STATE_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        trainer = self._require_trainer()
        trainer.arkd_weights = {k: float(v) for k, v in saved["weights"].items()}
        trainer.arkd_batch_features = {k: float(v) for k, v in saved["batch_features"].items()}
        self.trajectory, self.val, self.grad_norm = saved["trajectory"], saved["val"], float(saved["grad_norm"])
        self.last_action = None if saved["last_action"] is None else np.asarray(saved["last_action"])
        if self.online and (folder / POLICY_FILE).is_file():
            self.policy = type(self.policy).load(folder / POLICY_FILE, env=self.host)

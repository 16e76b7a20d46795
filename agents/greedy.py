"""The greedy one-step heuristic: try each candidate weighting, keep the best, undo the probes.

At every ``predict`` the policy snapshots the env's distiller, and for each candidate α runs
the updates one env step would run with that weighting (``distiller.train_steps``), scores the
result with ``distiller.evaluate()`` on the metric the env's reward uses, and restores the
snapshot. It returns the action of the best candidate. The cost of an env step therefore grows
to (candidates + 1)× the student updates (and candidates × the validation passes): with the
default five candidates, six times the updates of any other policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.baselines import BaselinePolicy, alpha_to_weights
from agents.env_access import EnvView

DEFAULT_CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_METRIC = "val_fkl"
# Where an env may keep its updates_per_step (the DistillEnv API does not fix the attribute name).
_UPDATES_ATTRS = ("updates_per_step", "cfg", "env_cfg", "config", "env_config")


def _updates_per_step(env: Any) -> int | None:
    for attr in _UPDATES_ATTRS:
        value = getattr(env, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        nested = getattr(value, "updates_per_step", None)
        if isinstance(nested, int):
            return nested
    return None


class GreedyPolicy(BaselinePolicy):
    """Picks, at each step, the candidate α with the best validation metric after a probe.

    Options: ``candidates`` (α values in [0, 1]), ``probe_steps`` (updates per probe; default the
    env's updates_per_step), ``metric`` (default ``env.reward_metric`` or ``val_fkl``) and
    ``maximize`` (default: True only for ROUGE-like metrics; divergences are minimised).
    """

    def __init__(self, spec: str, env: Any = None, candidates: Sequence[float] = DEFAULT_CANDIDATES,
                 probe_steps: int | None = None, metric: str | None = None,
                 maximize: bool | None = None) -> None:
        values = [float(c) for c in candidates]
        if not values or any(not 0.0 <= c <= 1.0 for c in values):
            raise ValueError(f"baseline 'greedy': candidates {list(candidates)} must be α values in [0, 1]")
        if probe_steps is not None and probe_steps < 1:
            raise ValueError(f"baseline 'greedy': probe_steps={probe_steps} must be >= 1")
        self.candidates = values
        self.probe_steps = probe_steps
        self.metric = metric
        self.maximize = maximize
        self.last_scores: dict[float, float] = {}  # candidate α -> score of the last probe, for logging
        super().__init__(spec, env, candidates=values, probe_steps=probe_steps, metric=metric,
                         maximize=maximize)

    def _check_env(self, view: EnvView) -> None:
        envs = view.local_envs()
        for env in envs:
            if not hasattr(env, "distiller"):
                raise ValueError(f"baseline 'greedy' needs an env with a `distiller`, "
                                 f"got {type(env).__name__}")
        if self.probe_steps is None and _updates_per_step(envs[0]) is None:
            raise ValueError("baseline 'greedy': cannot find the env's updates_per_step; pass probe_steps")

    def _settings(self, env: Any) -> tuple[int, str, bool]:
        steps = self.probe_steps or _updates_per_step(env)
        assert steps is not None  # checked in _check_env
        metric = self.metric or str(getattr(env, "reward_metric", None) or DEFAULT_METRIC)
        maximize = self.maximize if self.maximize is not None else "rouge" in metric
        return steps, metric, maximize

    def _candidate_weights(self) -> list[tuple[float, dict[str, float]]]:
        """Distinct weightings to probe, as the env will actually apply them (binary mode has two)."""
        view = self.view
        seen: list[dict[str, float]] = []
        result = []
        for alpha in self.candidates:
            wanted = alpha_to_weights(alpha, view.component_names, view.action_mode)
            applied = view.action_to_weights(view.weights_to_action(wanted))
            if applied not in seen:
                seen.append(applied)
                result.append((alpha, applied))
        return result

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        env = self.view.local_envs()[index]
        steps, metric, maximize = self._settings(env)
        distiller = env.distiller
        state = distiller.snapshot()
        scores: dict[float, float] = {}
        try:
            for alpha, weights in self._candidate_weights():
                distiller.restore(state)
                distiller.train_steps(weights, steps)
                # ROUGE needs generated responses, which the distiller only makes when asked.
                metrics = distiller.evaluate(generate=True) if "rouge" in metric else distiller.evaluate()
                if metric not in metrics:
                    raise ValueError(f"baseline 'greedy': metric {metric!r} is not among the distiller's "
                                     f"evaluation keys {sorted(metrics)}")
                value = float(metrics[metric])
                scores[alpha] = value if math.isfinite(value) else (-math.inf if maximize else math.inf)
        finally:
            distiller.restore(state)  # the real env step must start from the unprobed student
        self.last_scores = scores
        best = (max if maximize else min)(scores, key=lambda a: scores[a])
        return self._action_for(alpha_to_weights(best, self.view.component_names, self.view.action_mode))

    def weights_at(self, progress: float) -> dict[str, float]:
        raise ValueError("the greedy baseline chooses its weights by probing the distiller, not by progress")

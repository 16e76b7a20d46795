"""Small stand-ins for DistillEnv used by the agents tests (import from tests/, not a test module).

ToyDistillEnv is a user's own env: it implements the declared agent protocol
(arkd_env.env.protocol.LookaheadEnv: feature_names with "progress", component_names, action_mode,
action_to_weights/weights_to_action, updates_per_step, reward_metric, probe) and nothing else of DistillEnv,
with arithmetic instead of a model, so its best weighting is known by hand: each update changes val_fkl by
(α - target)² - 0.01 where α is the forward-KL weight.

SwitchingArms is one long episode of Discrete(3) arms whose best arm switches halfway: an online learner must
follow the switch within the episode.

StepBandit is a 3-step bandit for REINFORCE credit assignment: the observation is the one-hot
step index and the reward of step t depends only on the action of step t.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

COMPONENTS = {"mix": ["fkl", "rkl"], "binary": ["fkl", "rkl"],
              "head_tail": ["fkl_head", "fkl_tail", "rkl_head", "rkl_tail"]}


class ToyDistiller:
    def __init__(self, target: float) -> None:
        self.target = target
        self.val = 1.0
        self.updates = 0  # total train_steps updates, probes included

    def _alpha(self, weights: Mapping[str, float]) -> float:
        for key in ("fkl", "fkl_head", "akl"):
            if key in weights:
                return float(weights[key])
        raise KeyError(f"no forward weight in {dict(weights)}")

    def train_steps(self, weights: Mapping[str, float], n_steps: int) -> dict[str, float]:
        self.updates += n_steps
        self.val += n_steps * ((self._alpha(weights) - self.target) ** 2 - 0.01)
        return {"fkl": self.val}

    def evaluate(self, generate: bool = False) -> dict[str, float]:
        return {"val_fkl": self.val, "val_rkl": 2 * self.val}

    def snapshot(self) -> dict[str, float]:
        return {"val": self.val}

    def restore(self, state: Mapping[str, float]) -> None:
        self.val = float(state["val"])


class ToyDistillEnv(gym.Env):
    reward_metric = "val_fkl"

    def __init__(self, action_mode: str = "mix", horizon: int = 4, updates_per_step: int = 2,
                 simplex_components: list[str] | None = None, target: float = 0.3) -> None:
        self.action_mode = action_mode
        self.horizon = horizon
        self.updates_per_step = updates_per_step
        self.component_names = list(simplex_components or ["fkl", "rkl"]) if action_mode == "simplex" \
            else COMPONENTS[action_mode]
        self.feature_names = ["progress", "val_fkl", "bias"]
        self.observation_space = spaces.Box(-10.0, 10.0, (3,), np.float32)
        if action_mode == "binary":
            self.action_space: spaces.Space = spaces.Discrete(2)
        else:
            size = 1 if action_mode == "mix" else len(self.component_names)
            self.action_space = spaces.Box(-1.0, 1.0, (size,), np.float32)
        self.distiller = ToyDistiller(target)
        self.t = 0

    def action_to_weights(self, action: Any) -> dict[str, float]:
        if self.action_mode == "binary":
            return {"fkl": 1.0, "rkl": 0.0} if int(action) == 0 else {"fkl": 0.0, "rkl": 1.0}
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if self.action_mode == "mix":
            alpha = float((a[0] + 1) / 2)
            return {"fkl": alpha, "rkl": 1.0 - alpha}
        w = (a + 1) / 2
        if self.action_mode == "simplex":
            w = w / w.sum()
        return {name: float(v) for name, v in zip(self.component_names, w, strict=True)}

    def weights_to_action(self, weights: Mapping[str, float]) -> np.ndarray | int:
        if self.action_mode == "binary":
            return 0 if weights["fkl"] >= weights["rkl"] else 1
        if self.action_mode == "mix":
            return np.array([2 * weights["fkl"] - 1], dtype=np.float32)
        return np.array([2 * weights[n] - 1 for n in self.component_names], dtype=np.float32)

    def probe(self, weights: Mapping[str, float], updates: int | None = None,
              generate: bool = False) -> dict[str, float]:
        state = self.distiller.snapshot()
        try:
            self.distiller.train_steps(weights, updates or self.updates_per_step)
            return self.distiller.evaluate(generate)
        finally:
            self.distiller.restore(state)

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.horizon, self.distiller.val, 1.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.distiller.val = 1.0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        weights = self.action_to_weights(action)
        before = self.distiller.val
        self.distiller.train_steps(weights, self.updates_per_step)
        self.t += 1
        reward = float(np.clip(before - self.distiller.val, -5, 5))
        return self._obs(), reward, self.t >= self.horizon, False, {"weights": weights}


class StepBandit(gym.Env):
    """Three steps; reward 1 when step t's action is OPTIMAL[t] (binary) or near TARGETS[t] (Box)."""

    OPTIMAL = (0, 1, 0)
    TARGETS = (-0.6, 0.6, -0.6)

    def __init__(self, continuous: bool = False) -> None:
        self.continuous = continuous
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        obs[min(self.t, 2)] = 1.0
        return obs

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.continuous:
            reward = 1.0 - abs(float(np.asarray(action).reshape(-1)[0]) - self.TARGETS[self.t])
        else:
            reward = 1.0 if int(action) == self.OPTIMAL[self.t] else 0.0
        self.t += 1
        return self._obs(), reward, self.t >= 3, False, {}


# Mean reward of each arm before and after the switch: arm 0 is best, then arm 2. Arm 2 looks bad before the
# switch and arm 0 stays fair after it, so a bandit that never forgets has little reason to try arm 2 again.
BEFORE = (1.0, 0.0, -0.5)
AFTER = (0.25, 0.0, 1.0)


class SwitchingArms(gym.Env):
    """Discrete(3) arms with Gaussian rewards whose best arm switches halfway through one long episode."""

    def __init__(self, horizon: int = 400, noise: float = 0.5, start: int = 0) -> None:
        self.horizon, self.noise, self.start = horizon, noise, start
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(3, start=start)
        self.t = 0
        self.episode = 0  # resets so far
        self.arms: list[int] = []  # every arm played, over all episodes
        self.rewards: list[float] = []
        self.episodes: list[int] = []  # the episode of each step

    def means(self) -> tuple[float, float, float]:
        return BEFORE if self.t < self.horizon // 2 else AFTER

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.episode += 1
        return np.array([0.0], np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        arm = int(action) - self.start
        assert 0 <= arm < 3, action
        reward = self.means()[arm] + self.noise * float(self.np_random.normal())
        self.arms.append(arm)
        self.rewards.append(reward)
        self.episodes.append(self.episode)
        self.t += 1
        return np.array([self.t / self.horizon], np.float32), reward, self.t >= self.horizon, False, {}

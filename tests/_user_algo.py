"""A user-written algorithm for the registry tests: loaded as "_user_algo:ConstantSearch"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class ConstantSearch:
    """Tries random constant actions for one episode each and keeps the best (no SB3 base class)."""

    def __init__(self, env: Any = None, seed: int | None = None, verbose: int = 0) -> None:
        self.env = env
        self.seed = seed
        self.num_timesteps = 0
        self.best: Any = None if env is None else env.action_space.sample()
        self.best_return = -np.inf

    def learn(self, total_timesteps: int, **kwargs: Any) -> ConstantSearch:
        while self.num_timesteps < total_timesteps:
            action = self.env.action_space.sample()
            self.env.reset()
            total, done = 0.0, False
            while not done and self.num_timesteps < total_timesteps:
                _, reward, terminated, truncated, _ = self.env.step(action)
                total += float(reward)
                done = terminated or truncated
                self.num_timesteps += 1
            if total > self.best_return:
                self.best, self.best_return = action, total
        return self

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[Any, Any]:
        return self.best, state

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps({"best": np.asarray(self.best).tolist()}))

    @classmethod
    def load(cls, path: str, env: Any = None, device: str = "auto") -> ConstantSearch:
        agent = cls(env)
        agent.best = np.asarray(json.loads(Path(path).read_text())["best"], dtype=np.float32)
        return agent


class NoSave:
    def learn(self, total_timesteps: int) -> None: ...

    def predict(self, observation: Any) -> None: ...

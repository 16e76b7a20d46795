"""Uniform access to the DistillEnv API through gymnasium wrappers and SB3 VecEnvs.

Policies are handed whatever the harness has: a bare ``DistillEnv``, one wrapped by
``gymnasium.make`` (whose wrappers no longer forward attributes in gymnasium 1.x), or a
Stable-Baselines3 ``VecEnv``. :class:`EnvView` hides the difference; it always talks to the
first sub-environment of a VecEnv, since all of them share one configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv


def _innermost_vec_env(env: VecEnv) -> VecEnv:
    # VecEnvWrapper (VecNormalize, VecMonitor, ...) keeps the wrapped one in `.venv`.
    while hasattr(env, "venv"):
        env = env.venv
    return env


class EnvView:
    """Read attributes and call methods of a DistillEnv-like env, wrapped or vectorised."""

    def __init__(self, env: Any) -> None:
        if env is None:
            raise ValueError("an env is required (got None)")
        self.env = env
        self.is_vec = isinstance(env, VecEnv)

    @property
    def observation_space(self) -> gym.Space:
        return self.env.observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.env.action_space

    def has(self, name: str) -> bool:
        try:
            self.get(name)
        except AttributeError:
            return False
        return True

    def get(self, name: str) -> Any:
        """Attribute ``name`` of the (first) underlying env; AttributeError when absent."""
        if self.is_vec:
            if not self.env.has_attr(name):
                raise AttributeError(name)
            return self.env.get_attr(name, indices=0)[0]
        if isinstance(self.env, gym.Env):
            return self.env.get_wrapper_attr(name)
        return getattr(self.env, name)

    def call(self, name: str, *args: Any) -> Any:
        if self.is_vec:
            return self.env.env_method(name, *args, indices=0)[0]
        return self.get(name)(*args)

    # The DistillEnv API used by the policies -------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self.get("feature_names"))

    @property
    def component_names(self) -> list[str]:
        return list(self.get("component_names"))

    @property
    def action_mode(self) -> str:
        return str(self.get("action_mode"))

    def weights_to_action(self, weights: Mapping[str, float]) -> np.ndarray | int:
        return self.call("weights_to_action", dict(weights))

    def action_to_weights(self, action: Any) -> dict[str, float]:
        return dict(self.call("action_to_weights", action))

    def local_envs(self) -> list[Any]:
        """The unwrapped env objects living in this process (one per VecEnv slot).

        Raises ValueError for envs in other processes (SubprocVecEnv, Ray), whose state a
        policy cannot snapshot.
        """
        if not self.is_vec:
            return [self.env.unwrapped if isinstance(self.env, gym.Env) else self.env]
        inner = _innermost_vec_env(self.env)
        if isinstance(inner, DummyVecEnv):
            return [e.unwrapped for e in inner.envs]
        raise ValueError(f"{type(inner).__name__} runs its envs in other processes; this policy needs "
                         "in-process envs (a gymnasium env or a DummyVecEnv)")

"""Finding the env a weighting policy talks to, behind Gymnasium wrappers and Stable-Baselines3 VecEnvs.

Policies are handed whatever the harness has: a bare env, one wrapped by ``gymnasium.make`` (whose wrappers no
longer forward attributes in Gymnasium 1.x), or a VecEnv. :func:`protocol_envs` returns, per VecEnv slot, an
object implementing :class:`arkd_env.env.protocol.WeightingEnv`: the unwrapped env itself when it lives in this
process, otherwise a proxy that forwards exactly the protocol's members to the env in its worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from arkd_env.env.protocol import LookaheadEnv, WeightingEnv, missing_members


class RemoteEnv:
    """One slot of a VecEnv whose envs run in other processes (SubprocVecEnv, Ray), seen through the protocol."""

    def __init__(self, venv: VecEnv, index: int) -> None:
        self._venv, self._index = venv, index
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space
        self.feature_names: list[str] = list(self._get("feature_names"))
        self.component_names: list[str] = list(self._get("component_names"))
        self.action_mode: str = str(self._get("action_mode"))
        # Optional members (LookaheadEnv's, and the ones a policy record keeps) are copied only where the remote
        # env has them.
        for name in ("updates_per_step", "reward_metric", "alpha_grid", "simplex_temperature", "preset"):
            if venv.has_attr(name):
                setattr(self, name, self._get(name))

    def _get(self, name: str) -> Any:
        if not self._venv.has_attr(name):
            raise ValueError(f"the env lacks {name!r}, which weighting policies need (see "
                             "arkd_env.env.protocol.WeightingEnv)")
        return self._venv.get_attr(name, indices=self._index)[0]

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._venv.env_method(name, *args, indices=self._index, **kwargs)[0]

    def action_to_weights(self, action: Any) -> dict[str, float]:
        return dict(self._call("action_to_weights", action))

    def weights_to_action(self, weights: Mapping[str, float]) -> Any:
        return self._call("weights_to_action", dict(weights))

    def probe(self, weights: Mapping[str, float], updates: int | None = None,
              generate: bool = False) -> dict[str, float]:
        return dict(self._call("probe", dict(weights), updates, generate=generate))


def _innermost(venv: VecEnv) -> VecEnv:
    # VecEnvWrapper (VecNormalize, VecMonitor, ...) keeps the wrapped one in `.venv`.
    while hasattr(venv, "venv"):
        venv = venv.venv
    return venv


def protocol_envs(env: Any) -> list[WeightingEnv]:
    """The env behind ``env`` per VecEnv slot (one for a plain env), checked against :class:`WeightingEnv`."""
    if env is None:
        raise ValueError("an env is required (got None)")
    if isinstance(env, VecEnv):
        inner = _innermost(env)
        if isinstance(inner, DummyVecEnv):
            found: list[Any] = [e.unwrapped for e in inner.envs]
        else:
            found = [RemoteEnv(inner, i) for i in range(inner.num_envs)]
    else:
        found = [env.unwrapped if isinstance(env, gym.Env) else env]
    for candidate in found:
        missing = missing_members(candidate, WeightingEnv)
        if missing:
            raise ValueError(f"{type(candidate).__name__} does not implement the weighting protocol "
                             f"(arkd_env.env.protocol.WeightingEnv): it lacks {', '.join(missing)}")
    return found


def require_lookahead(env: WeightingEnv, who: str) -> LookaheadEnv:
    """``env`` as a :class:`LookaheadEnv`, or a ValueError naming what ``who`` misses."""
    missing = missing_members(env, LookaheadEnv)
    if missing:
        raise ValueError(f"{who} needs an env that can probe a weighting (arkd_env.env.protocol.LookaheadEnv); "
                         f"{type(env).__name__} lacks {', '.join(missing)}")
    assert isinstance(env, LookaheadEnv)
    return env

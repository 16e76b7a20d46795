"""Reward transforms around DistillEnv, kept outside the env as Gymnasium and Stable-Baselines3 keep them.

``env.normalize_reward`` divides rewards by a running standard deviation of the discounted return. A
``gymnasium.make`` of ``arkd_env/Distill-v0`` applies Gymnasium's ``NormalizeReward`` per env; ``arkd train``
applies SB3's ``VecNormalize`` to its VecEnv instead, so the statistics live in one process and are saved with
every checkpoint (:func:`normalizer_state`, :func:`restore_normalizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from arkd_env.env.distill_env import DistillEnv

RETURN_GAMMA = 0.99  # discount of the running return whose spread normalises rewards


def make_distill_env(**kwargs: Any) -> gym.Env[Any, Any]:
    """The registered entry point: a DistillEnv, wrapped in ``NormalizeReward`` when its config asks for it."""
    env = DistillEnv(**kwargs)
    if env.config.normalize_reward:
        return gym.wrappers.NormalizeReward(env, gamma=RETURN_GAMMA)
    return env


make_distill_env.metadata = DistillEnv.metadata  # type: ignore[attr-defined]  # gymnasium.make reads render modes


def normalize_vec_rewards(venv: Any) -> Any:
    """``venv`` (an SB3 VecEnv) with rewards normalised as ``normalize_reward`` promises; observations untouched."""
    from stable_baselines3.common.vec_env import VecNormalize

    # No clipping: VecNormalize's default ±10 would cut nan_penalty steps, which the env-level rule never did.
    return VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=RETURN_GAMMA, clip_reward=np.inf)


def normalizer_state(model: Any) -> dict[str, Any] | None:
    """The reward normaliser's statistics of an SB3 model's env, as JSON-able data (None without one)."""
    getter = getattr(model, "get_vec_normalize_env", None)  # baselines and user agents may have none
    venv = getter() if getter is not None else None
    if venv is None:
        return None
    rms = venv.ret_rms
    return {"mean": float(np.asarray(rms.mean)), "var": float(np.asarray(rms.var)), "count": float(rms.count)}


def restore_normalizer(model: Any, state: Mapping[str, Any]) -> None:
    """Put statistics from :func:`normalizer_state` back into the model's VecNormalize."""
    getter = getattr(model, "get_vec_normalize_env", None)
    venv = getter() if getter is not None else None
    if venv is None:
        raise ValueError("the checkpoint holds reward-normalisation statistics but this run's env has no "
                         "normaliser (env.normalize_reward changed?)")
    venv.ret_rms.mean = np.float64(state["mean"])
    venv.ret_rms.var = np.float64(state["var"])
    venv.ret_rms.count = float(state["count"])

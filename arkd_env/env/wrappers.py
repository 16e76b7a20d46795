"""Reward transforms around DistillEnv, kept outside the env as Gymnasium and Stable-Baselines3 keep them.

Besides normalisation, two rewards for an online run (one episode in which the agent learns):
:class:`DetrendedReward` and the prototype's :class:`RougeCheckpointReward`.

``env.normalize_reward`` divides rewards by a running standard deviation of the discounted return. A
``gymnasium.make`` of ``arkd_env/Distill-v1`` applies Gymnasium's ``NormalizeReward`` per env; ``arkd train``
applies SB3's ``VecNormalize`` to its VecEnv instead, so the statistics live in one process and are saved with
every checkpoint (:func:`normalizer_state`, :func:`restore_normalizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

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


class DetrendedReward(gym.RewardWrapper[Any, Any]):
    """Each reward minus a forecast of it from the rewards before: r'ₜ = rₜ − (lₜ₋₁ + bₜ₋₁), where the level l
    and the trend b follow Holt's linear exponential smoothing,

        lₜ = (1 − decay)·rₜ + decay·(lₜ₋₁ + bₜ₋₁)        bₜ = (1 − trend_decay)·(lₜ − lₜ₋₁) + trend_decay·bₜ₋₁

    started from l₁ = r₁, b₁ = 0. The first step of an episode has no forecast and gets 0. ``trend_decay`` 1
    keeps b at 0: the forecast is then a running mean of recent rewards.

    Why: inside one run the validation improvement of a step is dominated by where the run is (large early,
    tiny late), whatever the action. Subtracting what the recent steps predict leaves how this step did
    against them. A running mean alone lags a falling trend, so every reward then sits below it: on a
    `smollm2` run of fixed α = 0.5 (8 steps) the mean detrended reward was −0.13 with a bias-corrected
    running mean (decay 0.9) and −0.03 with the trend (decay = trend_decay = 0.5). It costs no probe
    updates but stays an estimate; the env's ``relative`` reward measures against a probe from the same
    state instead, for one step's updates per step.

    The level and trend are state of a run: :meth:`state_dict` / :meth:`load_state_dict` carry them across a
    resume.
    """

    def __init__(self, env: gym.Env[Any, Any], decay: float = 0.5, trend_decay: float = 0.5) -> None:
        super().__init__(env)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"DetrendedReward: decay={decay} must lie in [0, 1)")
        if not 0.0 <= trend_decay <= 1.0:
            raise ValueError(f"DetrendedReward: trend_decay={trend_decay} must lie in [0, 1]")
        self.decay = float(decay)
        self.trend_decay = float(trend_decay)
        self._level: float | None = None
        self._trend = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._level, self._trend = None, 0.0
        return self.env.reset(**kwargs)

    def reward(self, reward: SupportsFloat) -> float:
        value = float(reward)
        if self._level is None:
            self._level = value
            return 0.0
        forecast = self._level + self._trend
        level = (1.0 - self.decay) * value + self.decay * forecast
        self._trend = (1.0 - self.trend_decay) * (level - self._level) + self.trend_decay * self._trend
        self._level = level
        return value - forecast

    def state_dict(self) -> dict[str, float | None]:
        return {"level": self._level, "trend": self._trend}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        level = state["level"]
        self._level, self._trend = None if level is None else float(level), float(state["trend"])


class RougeCheckpointReward(gym.Wrapper[Any, Any, Any, Any]):
    """The reward of the ARKD authors' prototype: every ``every`` env steps (and at the episode's last step)
    the student's validation ROUGE-L, on [0, 1], minus ``baseline``; 0 at every other step.

    The ROUGE-L comes from ``rouge_size`` sampled responses to validation prompts (the ones the env's own
    ``rouge`` reward uses, never the held-out test examples); generating them costs no student update.
    ``info["checkpoint_rouge_l"]`` holds the score (×100, as everywhere in ARKD) at the steps that have one.
    """

    def __init__(self, env: gym.Env[Any, Any], every: int = 4, baseline: float = 0.5) -> None:
        super().__init__(env)
        if every < 1:
            raise ValueError(f"RougeCheckpointReward: every={every} must be >= 1")
        self.every = int(every)
        self.baseline = float(baseline)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = self.env.step(action)
        if int(info["step"]) % self.every and not (terminated or truncated):
            return obs, 0.0, terminated, truncated, info
        rouge = float(self.env.unwrapped.distiller.evaluate(generate=True)["rouge_l"])  # type: ignore[attr-defined]
        return obs, rouge / 100.0 - self.baseline, terminated, truncated, {**info, "checkpoint_rouge_l": rouge}

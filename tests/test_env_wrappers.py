"""The online rewards of arkd_env/env/wrappers.py, by hand: the detrended reward and the prototype's ROUGE reward."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from arkd_env.env.wrappers import DetrendedReward, RougeCheckpointReward


class Scripted(gym.Env):
    """Pays the scripted rewards in turn; its distiller's ROUGE-L rises by 10 per step (×100, as ARKD reports it)."""

    def __init__(self, rewards: list[float]) -> None:
        self.rewards = rewards
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0
        self.distiller = self
        self.generations = 0

    def evaluate(self, generate: bool = False) -> dict[str, float]:
        assert generate, "the prototype reward scores sampled generations"
        self.generations += 1
        return {"rouge_l": 10.0 * self.t}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self.rewards[self.t]
        self.t += 1
        return np.zeros(1, np.float32), reward, False, self.t >= len(self.rewards), {"step": self.t}


def rewards_of(env: gym.Env, n: int) -> list[float]:
    env.reset()
    return [float(env.step(0)[1]) for _ in range(n)]


def test_detrended_reward_by_hand() -> None:
    # decay 0.5, trend_decay 0.5. Step 1: no forecast, 0; l = 1, b = 0. Step 2: forecast 1, 3 − 1 = 2;
    # l = 0.5·3 + 0.5·1 = 2, b = 0.5·(2 − 1) = 0.5. Step 3: forecast 2.5, 2 − 2.5 = −0.5; l = 0.5·2 + 0.5·2.5
    # = 2.25, b = 0.5·0.25 + 0.5·0.5 = 0.375. Step 4: forecast 2.625, 5 − 2.625 = 2.375.
    env = DetrendedReward(Scripted([1.0, 3.0, 2.0, 5.0]), decay=0.5, trend_decay=0.5)
    assert np.allclose(rewards_of(env, 4), [0.0, 2.0, -0.5, 2.375])
    assert np.allclose(rewards_of(env, 1), [0.0])  # a reset forgets the run's trend
    # trend_decay 1: no trend, the forecast is the running mean (l = 2 after step 2, 2 after step 3)
    flat = DetrendedReward(Scripted([1.0, 3.0, 2.0, 5.0]), decay=0.5, trend_decay=1.0)
    assert np.allclose(rewards_of(flat, 4), [0.0, 2.0, 0.0, 3.0])


def test_the_trend_removes_the_bias_of_a_falling_run() -> None:
    # Progress that shrinks by the same amount every step: a running mean always forecasts too much.
    falling = [1.0 - 0.1 * t for t in range(10)]
    with_trend = rewards_of(DetrendedReward(Scripted(falling), 0.5, 0.5), 10)
    mean_only = rewards_of(DetrendedReward(Scripted(falling), 0.5, 1.0), 10)
    assert all(r < -0.09 for r in mean_only[2:])
    assert np.allclose(with_trend[-3:], 0.0, atol=0.02)


def test_detrended_reward_state_carries_a_run_across_a_restart() -> None:
    script = [1.0, 3.0, 2.0, 5.0, 0.5]
    whole = rewards_of(DetrendedReward(Scripted(script), 0.8, 0.6), 5)
    first = DetrendedReward(Scripted(script), 0.8, 0.6)
    head = rewards_of(first, 2)
    second = DetrendedReward(Scripted(script), 0.8, 0.6)
    second.reset()
    second.unwrapped.t = 2  # type: ignore[attr-defined]
    second.load_state_dict(first.state_dict())
    tail = [float(second.step(0)[1]) for _ in range(3)]
    assert np.allclose(head + tail, whole)
    with pytest.raises(ValueError, match=r"decay=1\.0"):
        DetrendedReward(Scripted(script), 1.0)
    with pytest.raises(ValueError, match=r"trend_decay=1\.5"):
        DetrendedReward(Scripted(script), 0.5, 1.5)


def test_rouge_checkpoint_reward_pays_every_k_steps_and_at_the_end() -> None:
    inner = Scripted([7.0] * 7)
    env = RougeCheckpointReward(inner, every=3, baseline=0.5)
    env.reset()
    steps = [env.step(0) for _ in range(7)]
    rewards = [float(s[1]) for s in steps]
    # steps 3 and 6 (ROUGE-L 30 and 60) and the last, 7 (70): ROUGE on [0, 1] minus 0.5; the env's 7 is never paid
    assert np.allclose(rewards, [0, 0, -0.2, 0, 0, 0.1, 0.2])
    assert [s[4].get("checkpoint_rouge_l") for s in steps] == [None, None, 30.0, None, None, 60.0, 70.0]
    assert inner.generations == 3  # generations only where a reward is due
    with pytest.raises(ValueError, match="every=0"):
        RougeCheckpointReward(inner, every=0)

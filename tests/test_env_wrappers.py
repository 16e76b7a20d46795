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
    # decay 0.5. Step 1: no estimate yet, 0; m = 0.5. Step 2: m̂ = 0.5 / (1 − 0.5) = 1, 3 − 1 = 2; m = 1.75.
    # Step 3: m̂ = 1.75 / (1 − 0.25) = 7/3, 2 − 7/3 = −1/3.
    env = DetrendedReward(Scripted([1.0, 3.0, 2.0]), decay=0.5)
    assert np.allclose(rewards_of(env, 3), [0.0, 2.0, -1 / 3])
    assert np.allclose(rewards_of(env, 1), [0.0])  # a reset forgets the run's trend


def test_detrended_reward_state_carries_a_run_across_a_restart() -> None:
    script = [1.0, 3.0, 2.0, 5.0, 0.5]
    whole = rewards_of(DetrendedReward(Scripted(script), 0.8), 5)
    first = DetrendedReward(Scripted(script), 0.8)
    head = rewards_of(first, 2)
    second = DetrendedReward(Scripted(script), 0.8)
    second.reset()
    second.unwrapped.t = 2  # type: ignore[attr-defined]
    second.load_state_dict(first.state_dict())
    tail = [float(second.step(0)[1]) for _ in range(3)]
    assert np.allclose(head + tail, whole)
    with pytest.raises(ValueError, match=r"decay=1\.0"):
        DetrendedReward(Scripted(script), 1.0)


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

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from _toy_env import StepBandit, SwitchingArms, ToyDistillEnv
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from agents.reinforce import Reinforce, ReinforcePolicy, discounted_returns
from arkd_env.env.wrappers import DetrendedReward

EYE = np.eye(3, dtype=np.float32)


def test_discounted_returns_by_hand() -> None:
    # G_2 = 3, G_1 = 2 + 0.5·3 = 3.5, G_0 = 1 + 0.5·3.5 = 2.75
    assert discounted_returns([1.0, 2.0, 3.0], 0.5) == [2.75, 3.5, 3.0]
    assert discounted_returns([1.0, 2.0], 0.0) == [1.0, 2.0]


def test_block_returns_by_hand() -> None:
    # blocks of 2: R_0 = 0 + 1 = 1, R_1 = 0 + 2 = 2, R_2 = 4 (a short last block); G_2 = 4, G_1 = 2 + 0.5·4 = 4,
    # G_0 = 1 + 0.5·4 = 3, and each step takes its block's return
    assert discounted_returns([0.0, 1.0, 0.0, 2.0, 4.0], 0.5, block=2) == [3.0, 3.0, 4.0, 4.0, 4.0]
    assert discounted_returns([0.0, 1.0, 0.0, 2.0], 0.0, block=2) == [1.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="block=0"):
        discounted_returns([1.0], 0.5, block=0)


class RewardAt(gym.Env):
    """Six steps with the one-hot step as observation; only step ``k`` pays (1, whatever the action)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.observation_space = spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.eye(6, dtype=np.float32)[min(self.t, 5)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = 1.0 if self.t == self.k else 0.0
        self.t += 1
        return self._obs(), reward, self.t >= 6, False, {}


def log_prob_gradients(k: int, **kwargs: Any) -> np.ndarray:
    """d(loss)/d(log π(a_t|s_t)) of each of the six steps in the one update of one episode of RewardAt(k)."""
    agent = Reinforce(env=RewardAt(k), n_episodes_per_update=1, normalize_returns=False, ent_coef=0.0, seed=0,
                      **kwargs)
    seen: list[th.Tensor] = []
    score = agent.policy.evaluate_actions

    def spy(obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        log_prob, entropy = score(obs, actions)
        log_prob.retain_grad()
        seen.append(log_prob)
        return log_prob, entropy

    agent.policy.evaluate_actions = spy  # type: ignore[method-assign]
    agent.learn(6)
    assert len(seen) == 1 and seen[0].grad is not None
    return seen[0].grad.numpy()


def test_credit_only_the_rewarded_step_gets_a_gradient() -> None:
    # γ = 0 (the online default): the reward of step 3 credits the action of step 3 and no other
    grad = log_prob_gradients(3, gamma=0.0)
    assert grad[3] != 0.0 and np.count_nonzero(grad) == 1, grad
    # γ > 0: the actions that led to it (steps 0-3) share the credit, the later ones get none
    grad = log_prob_gradients(3, gamma=0.9)
    assert np.all(grad[:4] != 0.0) and np.all(grad[4:] == 0.0), grad
    assert np.allclose(grad[:4] / grad[3], [0.9 ** 3, 0.9 ** 2, 0.9, 1.0])
    # a reward every 3 steps (the prototype's timing): step 2's reward credits its block, steps 0-2, only
    grad = log_prob_gradients(2, gamma=0.0, reward_every=3)
    assert np.all(grad[:3] != 0.0) and np.all(grad[3:] == 0.0), grad


def test_online_segments_learn_inside_one_episode_and_follow_a_switching_best_arm() -> None:
    # The online settings: an update after every segment of 2 steps of the one 400-step episode, each action
    # credited with its own detrended reward (a slow running mean is the baseline), and an entropy bonus that
    # keeps the arms tried once the first best arm has been found.
    before, after = [], []
    for seed in range(5):
        env = SwitchingArms(horizon=400)
        agent = Reinforce(env=DetrendedReward(env, 0.98, trend_decay=1.0), learning_rate=0.01, gamma=0.0, ent_coef=0.5,
                          n_episodes_per_update=1, n_steps_per_update=2, normalize_returns=False, seed=seed)
        agent.learn(400)
        arms = np.asarray(env.arms)
        assert set(env.episodes) == {1} and agent._n_updates == 200
        before.append(np.mean(arms[150:200] == 0))
        after.append(np.mean(arms[350:400] == 2))
    print(f"best-arm share, last quarter of each half: before {before}, after {after}")
    assert min(before) > 0.5 and min(after) > 1 / 3, (before, after)  # every seed, above chance after the switch
    assert np.mean(before) > 0.6 and np.mean(after) > 0.55, (before, after)


def bandit_agent(continuous: bool, seed: int = 0) -> Reinforce:
    env = make_vec_env(StepBandit, n_envs=8, seed=seed, env_kwargs={"continuous": continuous})
    return Reinforce(env=env, learning_rate=0.05, gamma=0.9, ent_coef=0.0, n_episodes_per_update=8, seed=seed)


def test_credit_assignment_binary_head_learns_a_different_action_per_step() -> None:
    # Step t pays 1 only for action OPTIMAL[t] = (0, 1, 0). Pairing a log-probability with the
    # return of another step (the prototype's bug) cannot learn this alternating pattern.
    agent = bandit_agent(continuous=False)
    agent.learn(960)
    actions, _ = agent.predict(EYE, deterministic=True)
    assert actions.tolist() == list(StepBandit.OPTIMAL)
    dist = agent.policy.distribution(th.as_tensor(EYE))
    assert isinstance(dist, th.distributions.Bernoulli)
    probs = dist.probs.detach().numpy()  # P(action = 1)
    assert probs[0] < 0.2 and probs[1] > 0.8 and probs[2] < 0.2


def test_credit_assignment_beta_head_learns_each_steps_target() -> None:
    agent = bandit_agent(continuous=True)
    agent.learn(1440)
    actions, _ = agent.predict(EYE, deterministic=True)
    assert actions.shape == (3, 1)
    assert np.allclose(actions[:, 0], StepBandit.TARGETS, atol=0.3)


def test_policy_heads_and_bounds() -> None:
    binary = Reinforce(env=ToyDistillEnv("binary"), seed=0)
    assert isinstance(binary.policy, ReinforcePolicy)
    dist = binary.policy.distribution(th.zeros(2, 3))
    assert type(dist).__name__ == "Bernoulli"
    box = Reinforce(env=ToyDistillEnv("head_tail"), seed=0)
    obs = th.zeros(64, 3)
    sampled = box.policy.sample(obs)
    assert sampled.shape == (64, 4) and float(sampled.min()) > -1 and float(sampled.max()) < 1
    log_prob, entropy = box.policy.evaluate_actions(obs, sampled)
    assert log_prob.shape == (64,) and entropy.shape == (64,) and th.isfinite(log_prob).all()
    # the edges of the box still have a finite log-probability
    edge = th.tensor([[-1.0, 1.0, -1.0, 1.0]])
    assert th.isfinite(box.policy.evaluate_actions(th.zeros(1, 3), edge)[0]).all()


def test_learn_counts_steps_logs_and_honours_callbacks(tmp_path: Path) -> None:
    agent = Reinforce(env=ToyDistillEnv("mix", horizon=4), n_episodes_per_update=1, seed=1,
                      tensorboard_log=str(tmp_path))
    agent.learn(8, tb_log_name="rf")
    assert agent.num_timesteps == 8 and agent._n_updates == 2 and agent._episode_num == 2
    assert list(tmp_path.glob("rf_1/events.out.tfevents.*"))

    class StopAt3(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 3

    agent.learn(100, callback=StopAt3())
    assert agent.num_timesteps == 3
    agent.learn(5, reset_num_timesteps=False)
    assert agent.num_timesteps == 8


def test_save_load_round_trip(tmp_path: Path) -> None:
    env = ToyDistillEnv("mix", horizon=4)
    agent = Reinforce(env=env, n_episodes_per_update=1, seed=2,
                      policy_kwargs={"net_arch": [8], "activation_fn": "relu"})
    agent.learn(8)
    agent.save(tmp_path / "rf")
    loaded = Reinforce.load(tmp_path / "rf", env=env)
    obs = np.stack([env.reset()[0], np.array([0.5, 0.9, 1.0], dtype=np.float32)])
    assert np.allclose(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    assert loaded.num_timesteps == 8 and loaded.gamma == agent.gamma
    assert loaded.policy.net_arch == [8] and loaded.policy.activation_fn is th.nn.ReLU
    detached = Reinforce.load(tmp_path / "rf.zip")
    expected = agent.predict(obs, deterministic=True)[0]
    assert np.allclose(detached.predict(obs, deterministic=True)[0], expected)
    loaded.learn(4)  # a loaded agent keeps training
    with pytest.raises(ValueError, match="action space mismatch"):
        Reinforce.load(tmp_path / "rf", env=ToyDistillEnv("binary"))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"gamma=1\.5"):
        Reinforce(env=ToyDistillEnv("mix"), gamma=1.5)
    with pytest.raises(ValueError, match="n_episodes_per_update=0"):
        Reinforce(env=ToyDistillEnv("mix"), n_episodes_per_update=0)
    with pytest.raises(ValueError, match="n_steps_per_update=-1"):
        Reinforce(env=ToyDistillEnv("mix"), n_steps_per_update=-1)
    with pytest.raises(ValueError, match="reward_every=0"):
        Reinforce(env=ToyDistillEnv("mix"), reward_every=0)
    with pytest.raises(ValueError, match="n_steps_per_update=5 must be a multiple of reward_every=2"):
        Reinforce(env=ToyDistillEnv("mix"), n_steps_per_update=5, reward_every=2)

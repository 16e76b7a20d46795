from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
from _toy_env import StepBandit, ToyDistillEnv
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from agents.reinforce import Reinforce, ReinforcePolicy, discounted_returns

EYE = np.eye(3, dtype=np.float32)


def test_discounted_returns_by_hand() -> None:
    # G_2 = 3, G_1 = 2 + 0.5·3 = 3.5, G_0 = 1 + 0.5·3.5 = 2.75
    assert discounted_returns([1.0, 2.0, 3.0], 0.5) == [2.75, 3.5, 3.0]
    assert discounted_returns([1.0, 2.0], 0.0) == [1.0, 2.0]


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

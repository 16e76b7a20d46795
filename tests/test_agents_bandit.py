"""DiscountedThompson (agents/bandit.py): the discounted posterior by hand, following a switching best arm within
one episode (and needing the discount to), online updates, reproducibility, JSON save/resume, errors, callbacks."""

from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _toy_env import SwitchingArms
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.bandit import ArmStats, DiscountedThompson, Prior, discount_update, empty_stats, posterior


class BoxEnv(SwitchingArms):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)  # type: ignore[assignment]


def toy(seed: int, **kwargs: Any) -> tuple[DiscountedThompson, SwitchingArms]:
    env = SwitchingArms(**{k: kwargs.pop(k) for k in ("horizon", "noise", "start") if k in kwargs})
    agent = DiscountedThompson(env=env, reward_std=0.5, seed=seed, **kwargs)
    return agent, env


# (1) the numeric core, by hand ----------------------------------------------------------------------------------

def test_discounted_statistics_and_posterior_by_hand() -> None:
    stats = empty_stats(3)
    stats = discount_update(stats, 0, 2.0, gamma=0.5)   # counts [1, 0, 0]      sums [2, 0, 0]
    stats = discount_update(stats, 1, -1.0, gamma=0.5)  # counts [0.5, 1, 0]    sums [1, -1, 0]
    before = ArmStats(stats.counts.copy(), stats.sums.copy())
    stats = discount_update(stats, 0, 4.0, gamma=0.5)   # counts [1.25, 0.5, 0] sums [4.5, -0.5, 0]
    np.testing.assert_allclose(stats.counts, [1.25, 0.5, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(stats.sums, [4.5, -0.5, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(before.counts, [0.5, 1.0, 0.0])  # the update made new arrays

    # prior N(1, 2²), reward std 1: precision = 1/4 + N, mean = (1/4 + S) / precision
    mean, std = posterior(stats, Prior(1.0, 2.0), reward_std=1.0)
    np.testing.assert_allclose(mean, [4.75 / 1.5, -0.25 / 0.75, 1.0], rtol=1e-12)
    np.testing.assert_allclose(std, [1 / math.sqrt(1.5), 1 / math.sqrt(0.75), 2.0], rtol=1e-12)
    # reward std 2: precision = 1/4 + N/4, mean = (1/4 + S/4) / precision; arm 0: 1.375 / 0.5625 = 22/9
    mean, std = posterior(stats, Prior(1.0, 2.0), reward_std=2.0)
    np.testing.assert_allclose(mean, [22 / 9, (0.25 - 0.125) / 0.375, 1.0], rtol=1e-12)
    np.testing.assert_allclose(std, [1 / math.sqrt(0.5625), 1 / math.sqrt(0.375), 2.0], rtol=1e-12)


def test_observe_outside_learn_is_the_discounted_update() -> None:
    agent, _ = toy(0, gamma=0.5)
    agent.observe(np.int64(0), 2.0)
    agent.observe(1, -1.0)
    np.testing.assert_allclose(agent.stats.counts, [0.5, 1.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(agent.stats.sums, [1.0, -1.0, 0.0], rtol=0, atol=1e-15)
    assert agent.predict(np.zeros(1), deterministic=True)[0] == 0  # arm 0's posterior mean is now the highest


def test_one_step_of_several_slots_discounts_once() -> None:
    stats = discount_update(empty_stats(2), [1], [3.0], gamma=0.9)
    both = discount_update(stats, [0, 1], [1.0, 5.0], gamma=0.9)
    np.testing.assert_allclose(both.counts, [1.0, 1.9], rtol=1e-15)
    np.testing.assert_allclose(both.sums, [1.0, 0.9 * 3.0 + 5.0], rtol=1e-15)


@pytest.mark.parametrize(("arm", "reward", "match"), [(3, 1.0, r"arm \[3\] outside 0..2"),
                                                      (0, float("nan"), "not finite"),
                                                      ([0, 1], [1.0], "2 arm.* for 1 reward")])
def test_discount_update_refuses_bad_input(arm: Any, reward: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        discount_update(empty_stats(3), arm, reward, gamma=0.9)


# (2) following a switch, and why the discount matters ----------------------------------------------------------

def best_arm_share(gamma: float, seed: int) -> tuple[float, float]:
    """Share of the best arm over the last quarter of each half of one 400-step episode."""
    agent, env = toy(seed, gamma=gamma)
    agent.learn(400)
    arms = np.asarray(env.arms)
    assert len(arms) == 400 and set(env.episodes) == {1}  # one episode: every decision made online within it
    return float(np.mean(arms[150:200] == 0)), float(np.mean(arms[350:400] == 2))


def test_discounted_bandit_follows_the_switch_and_the_undiscounted_one_does_not() -> None:
    seeds = range(5)
    discounted = np.array([best_arm_share(0.95, s) for s in seeds])
    plain = np.array([best_arm_share(1.0, s) for s in seeds])
    print(f"best-arm share, last quarter of each half: gamma=0.95 {discounted.mean(0)}, gamma=1 {plain.mean(0)}")
    assert np.all(discounted > 0.6), discounted  # before and after the switch, every seed
    assert plain[:, 0].mean() > 0.6  # without forgetting it finds the first best arm too...
    assert plain[:, 1].mean() < 0.4, plain  # ...but mostly keeps playing it after the switch
    assert discounted[:, 1].mean() - plain[:, 1].mean() > 0.4


# (3) online: the posterior moves during learn, after every step ------------------------------------------------

class Recorder(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.started = self.ended = 0
        self.counts: list[np.ndarray] = []
        self.rewards: list[float] = []

    def _on_training_start(self) -> None:
        self.started += 1

    def _on_step(self) -> bool:
        self.counts.append(self.model.stats.counts.copy())  # type: ignore[attr-defined]
        self.rewards.append(float(self.locals["rewards"][0]))
        assert self.locals["actions"].shape == (1,) and len(self.locals["infos"]) == 1
        return True

    def _on_training_end(self) -> None:
        self.ended += 1


def test_posterior_changes_after_every_step_of_learn() -> None:
    agent, env = toy(0, horizon=30)
    start = agent.posterior()
    recorder = Recorder()
    agent.learn(30, callback=recorder)
    assert agent.num_timesteps == 30 and agent._n_updates == 30
    assert (recorder.started, recorder.ended, len(recorder.counts)) == (1, 1, 30)
    # Each step added its one reward: the total discounted count grows at every step.
    totals = [float(c.sum()) for c in recorder.counts]
    np.testing.assert_allclose(totals, [sum(0.95**i for i in range(t + 1)) for t in range(30)], rtol=1e-12)
    # The statistics are exactly those of the played (arm, reward) sequence, with the rewards as the VecEnv
    # handed them over (DummyVecEnv stores rewards as float32).
    replay = empty_stats(3)
    for arm, reward in zip(env.arms, recorder.rewards, strict=True):
        replay = discount_update(replay, arm, reward, gamma=0.95)
    assert agent.stats is not None
    np.testing.assert_array_equal(agent.stats.counts, replay.counts)
    np.testing.assert_array_equal(agent.stats.sums, replay.sums)
    assert not np.allclose(agent.posterior()[0], start[0])
    assert recorder.rewards == pytest.approx(env.rewards, rel=1e-6)


# (4) reproducibility --------------------------------------------------------------------------------------------

def test_same_seed_same_actions_other_seed_other_actions() -> None:
    runs = []
    for seed in (7, 7, 8):
        agent, env = toy(seed, horizon=60)
        agent.learn(60)
        runs.append(env.arms)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# (5) save, load, continue == uninterrupted ---------------------------------------------------------------------

def test_save_load_continue_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole, whole_env = toy(3)
    whole.learn(300)

    first, env = toy(3)
    first.learn(170)
    first.save(tmp_path / "bandit")
    with zipfile.ZipFile(tmp_path / "bandit.zip") as archive:
        assert sorted(archive.namelist()) == ["arkd_agent.json", "bandit.json"]  # JSON only, no pickle
        record = json.loads(archive.read("bandit.json"))
    assert record["num_timesteps"] == 170 and len(record["counts"]) == 3
    # The VecEnv the first agent stepped (a plain env handed over again would get a fresh Monitor, which
    # refuses to step before a reset), continued mid-episode as it is.
    resumed = DiscountedThompson.load(tmp_path / "bandit", env=first.get_env(), force_reset=False)
    assert resumed.num_timesteps == 170 and resumed.gamma == 0.95 and resumed.reward_std == 0.5
    resumed.learn(130, reset_num_timesteps=False)

    assert resumed.num_timesteps == 300
    assert env.arms == whole_env.arms  # the same 300 decisions, bit for bit
    assert resumed.stats is not None and whole.stats is not None
    np.testing.assert_array_equal(resumed.stats.counts, whole.stats.counts)
    np.testing.assert_array_equal(resumed.stats.sums, whole.stats.sums)
    assert resumed.rng.bit_generator.state == whole.rng.bit_generator.state


def test_load_without_env_predicts_and_refuses_another_action_space(tmp_path: Path) -> None:
    agent, _ = toy(0, horizon=20)
    agent.learn(20)
    agent.save(tmp_path / "b.zip")
    loaded = DiscountedThompson.load(tmp_path / "b.zip")
    assert loaded.get_env() is None
    assert loaded.predict(np.zeros(1, np.float32), deterministic=True)[0] == agent.predict(
        np.zeros(1, np.float32), deterministic=True)[0]
    with pytest.raises(ValueError, match=r"action space mismatch.*Discrete\(3\).*Discrete\(3, start=1\)"):
        DiscountedThompson.load(tmp_path / "b.zip", env=SwitchingArms(start=1))
    with pytest.raises(ValueError, match=r"not a saved DiscountedThompson"):
        (tmp_path / "junk.zip").write_bytes(b"not a zip")
        DiscountedThompson.load(tmp_path / "junk.zip")


# (6) one-line errors --------------------------------------------------------------------------------------------

def test_refuses_a_non_discrete_action_space() -> None:
    with pytest.raises(ValueError, match=r"needs a Discrete action space.*got Box\(") as info:
        DiscountedThompson(env=BoxEnv())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gamma": 0.0}, r"gamma=0.0 must lie in \(0, 1\]"),
    ({"gamma": 1.5}, r"gamma=1.5 must lie in \(0, 1\]"),
    ({"gamma": float("nan")}, r"gamma=nan must be finite"),
    ({"gamma": "0.9"}, r"gamma='0.9' must be a number"),
    ({"prior_std": 0.0}, r"prior_std=0.0 must be > 0"),
    ({"prior_std": -1.0}, r"prior_std=-1.0 must be > 0"),
    ({"reward_std": 0}, r"reward_std=0 must be > 0"),
    ({"prior_mean": float("inf")}, r"prior_mean=inf must be finite"),
    ({"seed": -1}, r"seed=-1 must be"),
])
def test_refuses_bad_hyperparameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        DiscountedThompson(env=SwitchingArms(), **kwargs)
    assert "\n" not in str(info.value)


# (7) SB3 callbacks, logger, predict, registry -------------------------------------------------------------------

class StopAt(BaseCallback):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def _on_step(self) -> bool:
        return self.n_calls < self.calls


def test_sb3_callbacks_are_called_and_can_stop_training() -> None:
    agent, _ = toy(0, horizon=10)
    recorder = Recorder()
    agent.learn(25, callback=[recorder, StopAt(12)])  # a list becomes a CallbackList, as in SB3
    assert recorder.n_calls == 12 and agent.num_timesteps == 12
    assert recorder.num_timesteps == 12 and (recorder.started, recorder.ended) == (1, 1)
    calls: list[int] = []
    agent.learn(5, callback=lambda locals_, globals_: calls.append(1) is None, reset_num_timesteps=False)
    assert len(calls) == 5 and agent.num_timesteps == 17


def test_logs_the_chosen_arm_reward_and_posterior_means(tmp_path: Path) -> None:
    agent, env = toy(0, horizon=8)
    agent.set_logger(configure(str(tmp_path), ["csv"]))
    agent.learn(8)
    with open(tmp_path / "progress.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert [int(float(r["bandit/chosen_arm"])) for r in rows] == env.arms
    assert [float(r["bandit/reward"]) for r in rows] == pytest.approx(env.rewards)
    means = agent.posterior()[0]
    assert [float(rows[-1][f"bandit/posterior_mean_{i}"]) for i in range(3)] == pytest.approx(means)


def test_predict_single_and_batched_over_a_vecenv() -> None:
    venv = DummyVecEnv([lambda: SwitchingArms(horizon=50, start=1), lambda: SwitchingArms(horizon=50, start=1)])
    agent = DiscountedThompson(env=venv, reward_std=0.5, seed=0)
    agent.learn(100)
    assert agent.num_timesteps == 100 and agent._n_updates == 50
    means = agent.posterior()[0]
    batch, state = agent.predict(np.zeros((2, 1), np.float32), deterministic=True)
    assert state is None and batch.shape == (2,) and list(batch) == [int(np.argmax(means)) + 1] * 2
    single, _ = agent.predict(np.zeros(1, np.float32))
    assert single.shape == () and venv.action_space.contains(int(single))
    draws = agent.predict(np.zeros((64, 1), np.float32))[0]
    assert set(draws.tolist()) <= {1, 2, 3}


def test_through_the_registry_by_class_path(tmp_path: Path) -> None:
    from agents.registry import load_agent, make_agent, save_agent

    env = SwitchingArms(horizon=20)
    agent = make_agent("agents.bandit:DiscountedThompson", env, {"gamma": 0.9, "reward_std": 0.5}, seed=1)
    agent.learn(20)
    path = save_agent(agent, tmp_path / "policy")
    loaded = load_agent(path, env=SwitchingArms(horizon=20))
    assert isinstance(loaded, DiscountedThompson) and loaded.gamma == 0.9 and loaded.num_timesteps == 20
    np.testing.assert_array_equal(loaded.stats.counts, agent.stats.counts)

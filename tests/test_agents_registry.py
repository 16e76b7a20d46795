from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _nano import nano_env
from _toy_env import ToyDistillEnv
from stable_baselines3 import PPO

from agents.baselines import BaselinePolicy
from agents.registry import ALGORITHMS, known_names, load_agent, make_agent, save_agent
from agents.reinforce import Reinforce

HERE = Path(__file__).parent
# Tiny rollouts so each agent updates within a 2-step episode of the nano env.
TINY = {"n_steps": 2, "batch_size": 2, "n_epochs": 1}
TINY_OFF_POLICY = {"learning_starts": 1, "batch_size": 2}
TINY_HPARAMS = {
    "ppo": TINY, "recurrent_ppo": TINY, "a2c": {"n_steps": 2}, "trpo": {"n_steps": 2, "batch_size": 2},
    "sac": TINY_OFF_POLICY, "td3": TINY_OFF_POLICY, "ddpg": TINY_OFF_POLICY, "tqc": TINY_OFF_POLICY,
    "reinforce": {"n_episodes_per_update": 1},
    "dqn": {**TINY_OFF_POLICY, "train_freq": 1}, "qrdqn": {**TINY_OFF_POLICY, "train_freq": 1}, "bandit": {},
}


def parameters(agent: Any) -> dict[str, torch.Tensor]:
    """A copy of every tensor of the agent's policy (actor, critics and their targets), or of the bandit's arms."""
    if not hasattr(agent, "policy"):
        stats = agent.stats
        return {"counts": torch.tensor(stats.counts), "sums": torch.tensor(stats.sums)}
    return {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    assert before.keys() == after.keys()
    return [k for k in before if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_registered_agent_learns_a_few_steps_on_nano(name: str) -> None:
    env = nano_env("grid" if ALGORITHMS[name].discrete_only else "mix")
    agent = make_agent(name, env, TINY_HPARAMS[name], preset="nano", seed=0)
    before = parameters(agent)
    agent.learn(2)
    assert agent.num_timesteps == 2
    assert changed(before, parameters(agent)), f"{name}: learn(2) left every policy parameter as it was"
    obs, _ = env.reset()
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))


@pytest.mark.parametrize("name", ["ppo", "a2c", "trpo", "recurrent_ppo", "reinforce"])
def test_discrete_capable_agents_run_in_binary_mode(name: str) -> None:
    env = ToyDistillEnv("binary", horizon=2)
    agent = make_agent(name, env, TINY_HPARAMS[name], preset="nano", seed=0)
    agent.learn(2)
    action, _ = agent.predict(env.reset()[0], deterministic=True)
    assert int(action) in (0, 1)


def test_hyperparameters_as_keywords_and_zoo_aliases() -> None:
    env = ToyDistillEnv("mix", horizon=2)
    agent = make_agent("ppo", env, n_steps=4, batch_size=4, hyperparams={"n_steps": 8, "n_epochs": 1})
    assert (agent.n_steps, agent.batch_size, agent.n_epochs) == (4, 4, 1)  # keywords win over hyperparams=
    lstm = make_agent("ppo_lstm", env, n_steps=2, batch_size=2)
    assert type(lstm).__name__ == "RecurrentPPO"
    with pytest.raises(ValueError, match=r"unknown hyperparameter 'n_stepz'.*n_steps"):
        make_agent("ppo", env, n_stepz=3)


def test_discrete_only_agents_refuse_box_actions() -> None:
    with pytest.raises(ValueError, match=r"agent 'dqn' needs Discrete actions.*binary or grid"):
        make_agent("dqn", ToyDistillEnv("mix"))


@pytest.mark.parametrize("name", ["sac", "td3", "ddpg", "tqc"])
def test_box_only_agents_refuse_binary_mode(name: str) -> None:
    with pytest.raises(ValueError, match=rf"agent '{name}' needs continuous \(Box\) actions.*Discrete\(2\)"):
        make_agent(name, ToyDistillEnv("binary"))


def test_defaults_come_from_yaml_and_overrides_apply() -> None:
    env = ToyDistillEnv("mix")
    ppo = make_agent("ppo", env, preset="nano")
    assert (ppo.n_steps, ppo.batch_size, ppo.n_epochs) == (4, 4, 2)
    assert ppo.policy_kwargs["net_arch"] == [32, 32]  # from agents' nano defaults
    assert ppo.policy.net_arch == [32, 32]  # and handed on to the policy that is built
    tuned = make_agent("ppo", env, {"n_steps": 8, "policy_kwargs.net_arch": [16]}, preset="nano")
    assert tuned.n_steps == 8 and tuned.policy_kwargs["net_arch"] == [16]
    td3 = make_agent("td3", env)
    assert td3.action_noise is not None and td3.learning_starts == 16
    with pytest.raises(ValueError, match="agent 'ppo': unknown hyperparameter 'n_stepz'"):
        make_agent("ppo", env, {"n_stepz": 3})


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown agent 'dqnx'; known: ppo, a2c, sac.*dqn.*ppo_lstm.*fkl, rkl"):
        make_agent("dqnx", ToyDistillEnv("mix"))
    assert "recurrent_ppo" in known_names() and "greedy" in known_names()


def test_missing_sb3_contrib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # makes `import sb3_contrib` fail
    with pytest.raises(ImportError, match=r'pip install "arkd\[contrib\]"'):
        make_agent("tqc", ToyDistillEnv("mix"))


def test_user_class_by_import_path_trains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    env = ToyDistillEnv("mix", horizon=2)
    agent = make_agent("_user_algo:ConstantSearch", env, seed=0)
    agent.learn(6)
    assert agent.num_timesteps == 6 and np.isfinite(agent.best_return)
    save_agent(agent, tmp_path / "user.json")
    loaded = load_agent(tmp_path / "user.json", env, algo="_user_algo:ConstantSearch")
    assert np.allclose(loaded.predict(env.reset()[0])[0], agent.best)
    sb3_by_path = make_agent("stable_baselines3:A2C", env, {"n_steps": 2})
    before = parameters(sb3_by_path)
    sb3_by_path.learn(2)
    assert sb3_by_path.num_timesteps == 2 and changed(before, parameters(sb3_by_path))


@pytest.mark.parametrize(("target", "message"), [
    ("_user_algo:NoSave", "lacks save"),
    ("_user_algo:Missing", "has no attribute 'Missing'"),
    ("no_such_module_xyz:Algo", "cannot import module 'no_such_module_xyz'"),
])
def test_user_class_errors(monkeypatch: pytest.MonkeyPatch, target: str, message: str) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(ValueError, match=message):
        make_agent(target, ToyDistillEnv("mix"))


def test_ppo_save_load_predict_round_trip(tmp_path: Path) -> None:
    env = nano_env("mix")
    agent = make_agent("ppo", env, TINY_HPARAMS["ppo"], preset="nano", seed=0)
    agent.learn(2)
    obs, _ = env.reset()
    expected, _ = agent.predict(obs, deterministic=True)
    path = save_agent(agent, tmp_path / "ppo")
    assert path == tmp_path / "ppo.zip"
    with zipfile.ZipFile(path) as archive:
        assert "arkd_agent.json" in archive.namelist()
    loaded = load_agent(tmp_path / "ppo", env)
    assert isinstance(loaded, PPO)
    assert np.allclose(loaded.predict(obs, deterministic=True)[0], expected)
    # a plain SB3 save (no ARKD record) holds pickles ARKD cannot rebuild: refused unless the caller vouches
    agent.save(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"plain\.zip: its data holds pickled objects .*allow_pickle=True"):
        load_agent(tmp_path / "plain.zip")
    assert isinstance(load_agent(tmp_path / "plain.zip", allow_pickle=True), PPO)  # recognised from its fields


def test_reinforce_and_baseline_through_load_agent(tmp_path: Path) -> None:
    env = ToyDistillEnv("mix", horizon=2)
    rf = make_agent("reinforce", env, {"n_episodes_per_update": 1}, seed=0)
    rf.learn(2)
    rf.save(tmp_path / "rf")
    assert isinstance(load_agent(tmp_path / "rf.zip", env), Reinforce)
    baseline = make_agent("fixed:0.3", env)
    assert isinstance(baseline, BaselinePolicy)
    baseline.save(tmp_path / "base")
    loaded = load_agent(tmp_path / "base.zip", env)
    assert env.action_to_weights(loaded.predict(env.reset()[0])[0])["fkl"] == pytest.approx(0.3)
    assert isinstance(load_agent("cosine", env), BaselinePolicy)
    with pytest.raises(ValueError, match="'ppo' names an algorithm"):
        load_agent("ppo", env)
    with pytest.raises(ValueError, match="no saved policy at"):
        load_agent(tmp_path / "nothing", env)


def test_loading_onto_a_mismatched_env_names_the_action_mode(tmp_path: Path) -> None:
    agent = make_agent("ppo", ToyDistillEnv("mix"), {"n_steps": 2, "batch_size": 2})
    path = save_agent(agent, tmp_path / "ppo")
    with pytest.raises(ValueError, match=r"ppo.zip: action_mode: the policy was trained with 'mix', this one has "
                                         r"'head_tail'"):
        load_agent(path, ToyDistillEnv("head_tail"))

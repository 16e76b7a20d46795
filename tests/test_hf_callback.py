"""train.hf.callback: schedules, saved policies, the online bandit and checkpoints inside a transformers Trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _hf_tiny import collate, tiny_args, tiny_llama, tiny_rows
from _nano import nano_env

from agents import make_agent, save_agent
from agents.bandit import DiscountedThompson
from train.hf import ARKDTrainer, PolicyHost, WeightingCallback
from train.hf.callback import POLICY_FILE, STATE_FILE


def _train(tmp_path: Path, callback: WeightingCallback, **args: object) -> ARKDTrainer:
    trainer = ARKDTrainer(model=tiny_llama(1), teacher_model=tiny_llama(2), args=tiny_args(tmp_path, **args),
                          train_dataset=tiny_rows(), eval_dataset=tiny_rows(), data_collator=collate,
                          callbacks=[callback])
    return trainer


def test_a_linear_schedule_sets_the_weights_every_k_steps(tmp_path: Path) -> None:
    callback = WeightingCallback("linear:1->0", every=2)
    trainer = _train(tmp_path, callback)
    trainer.train()
    # Decisions at steps 0, 2 and 4 of 6, at progress step / 6.
    assert [d["step"] for d in callback.trajectory] == [0, 2, 4]
    assert [d["fkl"] for d in callback.trajectory] == pytest.approx([1.0, 2 / 3, 1 / 3])
    logged = [entry["arkd/w_fkl"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3, 1 / 3, 1 / 3])


def test_a_saved_policy_acts_on_the_trainers_observation(tmp_path: Path) -> None:
    env = nano_env("mix")
    path = save_agent(make_agent("ppo", env, {"n_steps": 2, "batch_size": 2}, seed=0), tmp_path / "policy")
    callback = WeightingCallback(str(path), every=3)
    assert callback.host.feature_names == env.unwrapped.feature_names  # read from the policy's record
    trainer = _train(tmp_path / "run", callback)
    trainer.train()
    observation = np.array(list(trainer.arkd_observation.values()), dtype=np.float32)
    assert trainer.arkd_observation["fkl"] > 0 and trainer.arkd_observation["progress"] == pytest.approx(0.5)
    action, _ = callback.policy.predict(observation, deterministic=True)
    assert callback.host.action_to_weights(action) == pytest.approx(trainer.arkd_weights)
    last_log = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert last_log["arkd/obs/fkl"] == pytest.approx(trainer.arkd_observation["fkl"])


def test_a_grid_policy_in_a_mix_callback_is_one_line(tmp_path: Path) -> None:
    path = save_agent(make_agent("ppo", nano_env("grid"), {"n_steps": 2, "batch_size": 2}), tmp_path / "policy")
    with pytest.raises(ValueError, match=r"policy.zip: action_mode: the policy was trained with 'grid', this one "
                                         r"has 'mix'$"):
        WeightingCallback(str(path), action_mode="mix")


def test_greedy_and_non_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="greedy probes each weighting"):
        WeightingCallback("greedy")
    with pytest.raises(ValueError, match="give a baseline spec, the path of a saved policy"):
        WeightingCallback(42)
    with pytest.raises(ValueError, match=r"no saved policy at 'runs/none/policy\.zip' and not a baseline name"):
        WeightingCallback("runs/none/policy.zip")
    with pytest.raises(ValueError, match="every=0"):
        WeightingCallback("fkl", every=0)


def test_an_online_bandit_learns_from_each_evaluation(tmp_path: Path) -> None:
    host = PolicyHost(["progress"], "grid", alpha_grid=[0.0, 1.0])
    bandit = DiscountedThompson(env=host, seed=0, reward_std=0.1)
    callback = WeightingCallback(bandit, every=2, features=["progress"], action_mode="grid", alpha_grid=[0.0, 1.0])
    trainer = _train(tmp_path, callback, eval_strategy="steps", eval_steps=2)
    trainer.train()
    assert len(callback.val) == 3  # evaluations at steps 2, 4 and 6
    assert bandit.stats is not None and bandit.stats.counts.sum() > 0  # rewarded after the second and third


def test_resuming_restores_the_callback_state(tmp_path: Path) -> None:
    first = WeightingCallback("linear:1->0", every=2)
    _train(tmp_path, first, save_strategy="steps", save_steps=2, max_steps=4).train()
    saved = tmp_path / "checkpoint-2" / STATE_FILE
    assert saved.is_file() and not (tmp_path / "checkpoint-2" / POLICY_FILE).exists()
    second = WeightingCallback("linear:1->0", every=2)
    _train(tmp_path, second, save_strategy="steps", save_steps=2, max_steps=4).train(
        resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert second.trajectory == first.trajectory  # step 0's decision came from the checkpoint, step 2's anew

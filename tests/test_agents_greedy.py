from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _toy_env import ToyDistillEnv
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.baselines import GreedyPolicy, make_baseline


def obs() -> np.ndarray:
    return np.array([0.0, 1.0, 1.0], dtype=np.float32)


def test_greedy_picks_the_candidate_closest_to_the_known_optimum_and_restores_the_student() -> None:
    env = ToyDistillEnv("mix", updates_per_step=2, target=0.3)
    env.reset()
    policy = make_baseline("greedy", env)
    assert isinstance(policy, GreedyPolicy)
    action, _ = policy.predict(obs())
    # Each update adds (α - 0.3)² - 0.01 to val_fkl: 0.25 is the best of {0, .25, .5, .75, 1}.
    assert env.action_to_weights(action) == pytest.approx({"fkl": 0.25, "rkl": 0.75})
    assert env.distiller.val == 1.0  # probes undone
    assert env.distiller.updates == 5 * 2  # five candidates × updates_per_step
    assert policy.last_scores[0.25] == pytest.approx(1.0 + 2 * (0.05**2 - 0.01))
    assert policy.last_scores[1.0] == pytest.approx(1.0 + 2 * (0.7**2 - 0.01))


def test_greedy_options_candidates_probe_steps_and_metric() -> None:
    env = ToyDistillEnv("mix", target=0.9)
    policy = make_baseline("greedy", env, candidates=[0.0, 1.0], probe_steps=3, metric="val_rkl")
    action, _ = policy.predict(obs())
    assert env.action_to_weights(action) == pytest.approx({"fkl": 1.0, "rkl": 0.0})
    assert env.distiller.updates == 2 * 3
    maximizing = make_baseline("greedy", env, candidates=[0.0, 1.0], probe_steps=1, maximize=True)
    assert env.action_to_weights(maximizing.predict(obs())[0])["fkl"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="metric 'rouge_l' is not among"):
        make_baseline("greedy", env, metric="rouge_l").predict(obs())
    with pytest.raises(ValueError, match="must be α values in"):
        make_baseline("greedy", env, candidates=[2.0])


def test_greedy_spec_names_its_candidates(tmp_path: Path) -> None:
    env = ToyDistillEnv("mix", updates_per_step=1, target=0.42)
    policy = make_baseline("greedy:0.4/0.5/0.6", env)
    assert isinstance(policy, GreedyPolicy) and policy.candidates == [0.4, 0.5, 0.6]
    action, _ = policy.predict(obs())
    assert env.action_to_weights(action)["fkl"] == pytest.approx(0.4)  # nearest listed candidate to 0.42
    assert env.distiller.updates == 3
    policy.save(tmp_path / "greedy.zip")
    assert GreedyPolicy.load(tmp_path / "greedy.zip", env=env).candidates == [0.4, 0.5, 0.6]
    with pytest.raises(ValueError, match="'x' is not a number"):
        make_baseline("greedy:0.4/x", env)


def test_greedy_in_binary_mode_probes_each_distinct_weighting_once() -> None:
    env = ToyDistillEnv("binary", updates_per_step=1, target=0.8)
    action, _ = make_baseline("greedy", env).predict(obs())
    assert int(action) == 0  # FKL (α=1) beats RKL (α=0) for target 0.8
    assert env.distiller.updates == 2


def test_greedy_on_a_vec_env_uses_each_slots_distiller() -> None:
    vec = DummyVecEnv([lambda: ToyDistillEnv("mix", target=0.0), lambda: ToyDistillEnv("mix", target=1.0)])
    actions, _ = make_baseline("greedy", vec).predict(np.stack([obs(), obs()]))
    assert actions[:, 0].tolist() == pytest.approx([-1.0, 1.0])  # α = 0 and α = 1


def test_greedy_needs_an_env_that_can_probe() -> None:
    from _toy_env import StepBandit

    class NoProbe(StepBandit):
        feature_names = ["a", "b", "c"]  # noqa: RUF012
        component_names = ["fkl", "rkl"]  # noqa: RUF012
        action_mode = "binary"

        def action_to_weights(self, action: int) -> dict[str, float]:
            return {"fkl": 1.0 - action, "rkl": float(action)}

        def weights_to_action(self, weights: dict[str, float]) -> int:
            return int(weights["rkl"] > weights["fkl"])

    assert make_baseline("fkl", NoProbe()).predict(obs())[0] == 0  # a plain WeightingEnv hosts the schedules
    with pytest.raises(ValueError, match=r"needs an env that can probe.*lacks probe, reward_metric, updates_per_step"):
        make_baseline("greedy", NoProbe())
    with pytest.raises(ValueError, match=r"does not implement the weighting protocol.*action_mode"):
        make_baseline("fkl", StepBandit())


def test_greedy_on_the_nano_env_leaves_the_student_unchanged() -> None:
    from _nano import nano_env

    env = nano_env("mix")
    obs, _ = env.reset()
    distiller = env.unwrapped.distiller
    before = distiller.evaluate()
    policy = make_baseline("greedy", env, candidates=[0.0, 1.0])
    assert isinstance(policy, GreedyPolicy)
    action, _ = policy.predict(obs)
    assert env.unwrapped.action_to_weights(action)["fkl"] in (0.0, 1.0)
    assert set(policy.last_scores) == {0.0, 1.0}
    best = min(policy.last_scores, key=policy.last_scores.__getitem__)
    assert env.unwrapped.action_to_weights(action)["fkl"] == best
    assert distiller.evaluate() == before  # probes undone

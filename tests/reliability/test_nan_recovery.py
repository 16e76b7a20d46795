"""Faults injected mid-episode into the student's loss, gradients and weights: the env goes back to its last good
state, says so in ``info``, and an agent learning on it keeps learning."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import arkd_env  # noqa: F401  (registers arkd_env/Distill-v0)

FAULTS = ("loss_nan", "grad_inf", "weights_nan")


class Injector:
    """Turns chosen student updates of one env into faults.

    ``loss_nan``: the update's loss is NaN. ``grad_inf``: its gradients are inf. ``weights_nan``: a weight
    becomes NaN as the update is applied, after the engine's finite loss-and-gradient check has passed.
    """

    def __init__(self, env: Any) -> None:
        self.distiller = env.unwrapped.distiller
        self.pending: list[str] = []  # faults of the next updates, in order ("" = a healthy update)
        self.seen: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._fault = ""
        update_loss, schedule = self.distiller._update_loss, self.distiller.scheduler.step

        def faulty_loss(weights: Any) -> Any:
            self._fault = self.pending.pop(0) if self.pending else ""
            loss, parts, batch = update_loss(weights)
            if self._fault:
                self.seen[self._fault] += 1
            if self._fault == "loss_nan":
                loss = loss * float("nan")
            elif self._fault == "grad_inf":
                loss.register_hook(lambda grad: grad * float("inf"))
            return loss, parts, batch

        def faulty_schedule(*args: Any, **kwargs: Any) -> Any:  # runs right after the optimizer step
            result = schedule(*args, **kwargs)
            if self._fault == "weights_nan":
                with torch.no_grad():
                    next(self.distiller.student.parameters()).fill_(float("nan"))
            return result

        self.distiller._update_loss = faulty_loss
        self.distiller.scheduler.step = faulty_schedule


def student(env: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in env.unwrapped.distiller.student.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in weights.values())


@pytest.fixture
def env() -> Iterator[Any]:
    made = gym.make("arkd_env/Distill-v0", preset="nano", horizon=6, updates_per_step=2,
                    max_consecutive_failures=3, nan_penalty=1.0)
    yield made
    made.close()


@pytest.mark.parametrize(("faults", "n_failed", "restored"), [
    (["loss_nan", "loss_nan"], 2, False),  # both updates skipped
    (["", "grad_inf"], 1, False),  # the second update skipped, the first applied
    (["", "weights_nan"], 0, True),  # both checks passed, the weights went NaN: the whole step is undone
])
def test_a_faulty_step_is_undone_and_the_next_one_is_healthy(env: Any, faults: list[str], n_failed: int,
                                                             restored: bool) -> None:
    inject = Injector(env)
    env.reset(seed=0)
    action = np.zeros(1, dtype=np.float32)
    _, _, _, _, first = env.step(action)
    assert first["n_failed"] == 0 and not first["restored"]
    good = student(env)
    updates = env.unwrapped.distiller.updates

    inject.pending = list(faults)
    _, reward, terminated, truncated, info = env.step(action)
    assert info["n_failed"] == n_failed and info["restored"] is restored
    assert info["consecutive_failures"] == 1 and not terminated and not truncated
    assert math.isfinite(reward) and all(np.isfinite(v) for v in info["val"].values())
    after = student(env)
    assert finite(after)
    if n_failed == len(faults) or restored:  # nothing of the step was kept: back to the last good state
        assert same(after, good) and env.unwrapped.distiller.updates == updates
        assert info["val"] == first["val"] and reward == -1.0  # no change, minus the nan_penalty
    else:
        assert not same(after, good) and env.unwrapped.distiller.updates == updates + len(faults) - n_failed

    obs, reward, _, _, info = env.step(action)  # the fault has passed: learning goes on from the good state
    assert info["n_failed"] == 0 and not info["restored"] and info["consecutive_failures"] == 0
    assert np.isfinite(obs).all() and math.isfinite(reward)
    assert finite(student(env)) and not same(student(env), after)


def test_repeated_faults_end_the_episode_in_a_good_state(env: Any) -> None:
    inject = Injector(env)
    env.reset(seed=0)
    good = student(env)
    inject.pending = ["weights_nan", "loss_nan"] * 3
    terminated = False
    for _ in range(3):
        _, reward, terminated, _, info = env.step(np.zeros(1, dtype=np.float32))
        assert math.isfinite(reward)
    assert terminated and info["consecutive_failures"] == 3
    assert same(student(env), good)


@pytest.mark.slow
def test_an_agent_keeps_learning_through_faults() -> None:
    """PPO on the nano env with every other env step faulty (the three kinds in turn): learning never stops
    and the agent's networks stay finite and keep changing after the faults."""
    from stable_baselines3 import PPO

    env = gym.make("arkd_env/Distill-v0", preset="nano", horizon=4, updates_per_step=1,
                   engine_overrides={"eval_size": 8})
    inject = Injector(env)
    schedule = itertools.cycle(["", "loss_nan", "", "grad_inf", "", "weights_nan"])

    class Faults(gym.Wrapper):
        def step(self, action: Any) -> Any:
            inject.pending = [next(schedule)]
            result = self.env.step(action)
            assert finite(student(self.env)) and math.isfinite(result[1])
            return result

    model = PPO("MlpPolicy", Faults(env), n_steps=4, batch_size=4, n_epochs=2, seed=0, device="cpu")
    start = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(8)
    middle = [p.detach().clone() for p in model.policy.parameters()]
    assert inject.seen == {"loss_nan": 2, "grad_inf": 1, "weights_nan": 1}
    model.learn(8, reset_num_timesteps=False)
    end = [p.detach().clone() for p in model.policy.parameters()]
    env.close()
    assert model.num_timesteps == 16
    assert all(torch.isfinite(p).all() for p in end)
    assert any(not torch.equal(a, b) for a, b in zip(start, middle, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(middle, end, strict=True))

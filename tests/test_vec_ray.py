"""Tests for arkd_env.vec.RayVecEnv: SB3 VecEnv over Ray actors (equality with SB3's vec envs, PPO, faults).

One local Ray (2 CPUs) is started for the whole module. Toy envs defined here stand in for the ARKD env;
the `nano` preset versions at the end run once arkd_env.env exists.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import arkd_env.vec.ray as vec_ray_module
from arkd_env.vec import ray_available
from arkd_env.vec.ray import ActorRestartWarning

requires_ray = pytest.mark.skipif(
    not ray_available(), reason='Ray is not installed (optional extra): pip install "arkd[ray]"'
)

MAX_STEPS = 5  # TimeLimit of the toy env
GOAL = 6  # the toy env terminates once the actions sum to GOAL


# --------------------------------------------------------------------------- toy environments
class ToyEnv(gym.Env):
    """Deterministic given its seed; terminates when the actions sum to `goal`, else a TimeLimit cuts it."""

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012 - gymnasium's convention

    def __init__(self, render_mode: str | None = None, goal: int = GOAL) -> None:
        self.observation_space = spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.render_mode = render_mode
        self.goal = goal
        self.episodes = 0
        self._state = np.zeros(3, np.float32)
        self._t = 0
        self._total = 0
        self._hang_s = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.episodes += 1
        self._state = self.np_random.uniform(-1.0, 1.0, size=3).astype(np.float32)
        if options and "offset" in options:
            self._state += np.float32(options["offset"])
        self._t, self._total = 0, 0
        return self._state.copy(), {"start": float(self._state[0]), "episode_no": self.episodes}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._hang_s:
            time.sleep(self._hang_s)
        a = int(action)
        self._t += 1
        self._total += a
        noise = self.np_random.normal(size=3).astype(np.float32) * np.float32(0.1)
        self._state = (np.float32(0.9) * self._state + np.float32(0.2 * (a - 1)) + noise).astype(np.float32)
        reward = float(-np.abs(self._state).sum())
        return self._state.copy(), reward, self._total >= self.goal, False, {"t": self._t}

    def render(self) -> np.ndarray:
        return np.full((4, 4, 3), self._t, dtype=np.uint8)

    def scaled(self, x: int, scale: int = 1) -> int:
        return x * scale

    def arm_hang(self, seconds: float) -> None:
        """Make every following step sleep `seconds` (a hung env)."""
        self._hang_s = seconds


class CrashEnv(ToyEnv):
    """Kills its own process on its `crash_at`-th step of life, once (a marker file remembers it)."""

    def __init__(self, marker: str, crash_at: int) -> None:
        super().__init__()
        self._marker, self._crash_at, self._life = marker, crash_at, 0

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._life += 1
        if self._life == self._crash_at and not os.path.exists(self._marker):
            Path(self._marker).touch()
            os._exit(1)
        return super().step(action)


class SnapshotEnv(ToyEnv):
    """Offers snapshot()/restore(); the episode counter is the state that must survive a restart."""

    def __init__(self, restore_returns_obs: bool) -> None:
        super().__init__()
        self._restore_returns_obs = restore_returns_obs

    def snapshot(self) -> dict[str, int]:
        return {"episodes": self.episodes}

    def restore(self, state: dict[str, int]) -> tuple[Any, dict] | None:
        self.episodes = state["episodes"]
        if self._restore_returns_obs:
            return np.full(3, 7.0, np.float32), {"restored": True}
        return None


def make_toy(render_mode: str | None = None) -> gym.Env:
    return TimeLimit(ToyEnv(render_mode=render_mode), max_episode_steps=MAX_STEPS)


def make_crash_factory(marker: Path, crash_at: int) -> Callable[[], gym.Env]:
    return lambda: TimeLimit(CrashEnv(str(marker), crash_at), max_episode_steps=MAX_STEPS)


def make_snapshot_factory(restore_returns_obs: bool) -> Callable[[], gym.Env]:
    return lambda: TimeLimit(SnapshotEnv(restore_returns_obs), max_episode_steps=MAX_STEPS)


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    if not ray_available():
        pytest.skip('Ray is not installed (optional extra): pip install "arkd[ray]"')
    import ray
    import ray.cloudpickle

    from arkd_env.vec import init_ray

    # Actors cannot import this test module by name, so ship its classes and functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started_here = not ray.is_initialized()
    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started_here:
        ray.shutdown()


def ray_vec(env_fns: list[Callable[[], gym.Env]], **kwargs: Any) -> vec_ray_module.RayVecEnv:
    # Half a CPU each, so that 2 envs plus a replacement actor fit in the 2-CPU test cluster.
    kwargs.setdefault("num_cpus_per_env", 0.5)
    return vec_ray_module.RayVecEnv(env_fns, **kwargs)


def step(vec: VecEnv, actions: list[int]) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """vec.step with a plain-array observation type (the toy envs have Box observations)."""
    obs, rewards, dones, infos = vec.step(np.array(actions))
    return np.asarray(obs), rewards, dones, list(infos)


def kill_and_wait(ray: Any, actor: Any) -> None:
    """ray.kill is asynchronous: wait until the actor is really gone, or a step sent now could still succeed."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            ray.get(actor.has_attr.remote("goal"), timeout=5.0)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers after 30 s")


def rollout(vec: VecEnv, actions: np.ndarray, seed: int, options: dict | None) -> list[Any]:
    """Everything observable from a seeded reset followed by `actions`, for comparison."""
    vec.seed(seed)
    vec.set_options(options)
    trace: list[Any] = [vec.reset(), [dict(i) for i in vec.reset_infos]]
    for step_actions in actions:
        obs, rewards, dones, infos = vec.step(step_actions)
        trace.append((obs, rewards, dones, list(infos), [dict(i) for i in vec.reset_infos]))
    return trace


def assert_same(a: Any, b: Any, path: str = "trace", dtypes: bool = True) -> None:
    """Exact, recursive equality of nested tuples/lists/dicts/arrays, with the location on failure.

    dtypes=False compares array values only: DummyVecEnv keeps rewards in a float32 buffer where
    SubprocVecEnv stacks the envs' Python floats (float64).
    """
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]", dtypes)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]", dtypes)
    elif isinstance(a, np.ndarray):
        if dtypes:
            assert a.dtype == np.asarray(b).dtype, f"{path}: dtype {a.dtype} != {np.asarray(b).dtype}"
        np.testing.assert_array_equal(a, np.asarray(b).astype(a.dtype), err_msg=path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def train_ppo(vec: VecEnv, total_timesteps: int, n_steps: int) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=n_steps,
        batch_size=n_steps,
        n_epochs=2,
        learning_rate=1e-3,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    before = [p.detach().clone().numpy() for p in model.policy.parameters()]
    model.learn(total_timesteps=total_timesteps)
    after = [p.detach().clone().numpy() for p in model.policy.parameters()]
    return model, before, after


# --------------------------------------------------------------------------- without Ray running
def test_importing_the_package_does_not_import_ray() -> None:
    code = "import sys, arkd_env, arkd_env.vec; assert 'ray' not in sys.modules, 'arkd_env.vec imported ray'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_without_ray_the_backend_imports_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    # A private copy of arkd_env/vec/ray.py, executed while Ray is unimportable: the module itself must load.
    spec = importlib.util.spec_from_file_location("_vec_ray_without_ray", vec_ray_module.__file__)
    assert spec is not None and spec.loader is not None
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    with pytest.raises(ImportError, match=r'pip install "arkd\[ray\]"'):
        backend.RayVecEnv([make_toy])
    with pytest.raises(ImportError, match=r'pip install "arkd\[ray\]"'):
        backend.init_ray()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"step_timeout": 0.0}, "step_timeout"),
        ({"num_gpus_per_env": -0.5}, "num_gpus_per_env"),
        ({"num_cpus_per_env": -1}, "num_cpus_per_env"),
        ({"snapshot_every": 0}, "snapshot_every"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], needle: str) -> None:
    from arkd_env.vec import RayVecEnv

    with pytest.raises(ValueError, match=needle):
        RayVecEnv([make_toy], **kwargs)
    with pytest.raises(ValueError, match="env_fns"):
        RayVecEnv([])


# --------------------------------------------------------------------------- equality with SB3's vec envs
@requires_ray
def test_results_equal_dummy_and_subproc(ray_session: Any) -> None:
    actions = np.random.default_rng(0).integers(0, 3, size=(14, 2))
    options = {"offset": 0.5}
    dummy = DummyVecEnv([make_toy, make_toy])
    subproc = SubprocVecEnv([make_toy, make_toy])
    ray_env = ray_vec([make_toy, make_toy])
    try:
        expected = rollout(subproc, actions, seed=123, options=options)
        got = rollout(ray_env, actions, seed=123, options=options)
        assert_same(got, expected)  # identical, dtypes included
        assert_same(got, rollout(dummy, actions, seed=123, options=options), dtypes=False)
    finally:
        for vec in (dummy, subproc, ray_env):
            vec.close()
    # The sequence must exercise every end-of-episode case, or the equality above proves little.
    infos = [info for step in got[2:] for info in step[3]]
    ends = [info for info in infos if "terminal_observation" in info]
    assert any(info["TimeLimit.truncated"] for info in ends), "no time-limit truncation in the sequence"
    assert any(not info["TimeLimit.truncated"] for info in ends), "no real termination in the sequence"
    assert all(info["TimeLimit.truncated"] is False for info in infos if "terminal_observation" not in info)
    # options apply to the first reset only (SB3 semantics): the offset shows in the first observations.
    assert np.all(got[0] >= -0.5) and np.all(got[0] <= 1.5)


@requires_ray
def test_env_method_get_set_attr_seed_wrappers_render(ray_session: Any) -> None:
    vec = ray_vec([lambda: make_toy("rgb_array"), lambda: make_toy("rgb_array")])
    try:
        assert vec.env_method("scaled", 3, scale=2) == [6, 6]
        assert vec.env_method("scaled", 5, indices=[1]) == [5]
        assert vec.get_attr("goal") == [GOAL, GOAL]
        vec.set_attr("goal", 99, indices=0)
        assert vec.get_attr("goal") == [99, GOAL]
        assert vec.get_attr("goal", indices=1) == [GOAL]
        assert vec.has_attr("goal") and not vec.has_attr("no_such_attribute")
        with pytest.raises(AttributeError):
            vec.get_attr("no_such_attribute")
        assert vec.env_is_wrapped(TimeLimit) == [True, True]
        assert vec.env_is_wrapped(RecordEpisodeStatistics, indices=[0]) == [False]
        assert vec.seed(7) == [7, 8]
        obs = vec.reset()
        reference = DummyVecEnv([make_toy, make_toy])
        reference.seed(7)
        np.testing.assert_array_equal(obs, reference.reset())
        assert vec.render_mode == "rgb_array"
        vec.step(np.array([1, 1]))
        images = [np.asarray(img) for img in vec.get_images()]
        assert [img.shape for img in images] == [(4, 4, 3), (4, 4, 3)]
        assert all(int(img[0, 0, 0]) == 1 for img in images)  # one step into the episode
        tiled = vec.render("rgb_array")
        assert tiled is not None and tiled.shape == (8, 4, 3)
    finally:
        vec.close()
    assert vec.closed


# --------------------------------------------------------------------------- learning
@requires_ray
def test_ppo_learns_through_ray_vec_env(ray_session: Any) -> None:
    vec = ray_vec([make_toy, make_toy])
    try:
        model, before, after = train_ppo(vec, total_timesteps=256, n_steps=32)
    finally:
        vec.close()
    assert model.num_timesteps >= 256
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True)), "policy did not change"


# --------------------------------------------------------------------------- faults
@requires_ray
def test_killed_actor_is_replaced_and_episode_truncated(ray_session: Any) -> None:
    # A whole CPU each: the replacement can only start once Ray has freed the killed actor's CPU.
    vec = ray_vec([make_toy, make_toy], num_cpus_per_env=1.0)
    reference = DummyVecEnv([make_toy])
    try:
        vec.seed(5)
        reference.seed(6)  # env 1 of `vec` gets seed 5 + 1
        obs, expected_obs = np.asarray(vec.reset()), np.asarray(reference.reset())
        old_actor = vec.actors[0]
        kill_and_wait(ray_session, old_actor)
        with pytest.warns(ActorRestartWarning, match="env 0 lost its actor"):
            new_obs, rewards, dones, infos = step(vec, [2, 2])
        assert vec.actors[0] is not old_actor
        assert vec.restart_counts == [1, 0]
        assert dones[0] and infos[0]["TimeLimit.truncated"] and rewards[0] == 0.0
        np.testing.assert_array_equal(infos[0]["terminal_observation"], obs[0])
        assert "actor_failure" in infos[0]
        assert vec.reset_infos[0]["episode_no"] == 1  # a fresh env from the factory, reset once
        # The other env carried on untouched, exactly like a local copy given the same seed and action.
        ref_obs, ref_rewards, ref_dones, _ = step(reference, [2])
        np.testing.assert_array_equal(expected_obs[0], obs[1])
        np.testing.assert_array_equal(new_obs[1], ref_obs[0])
        assert rewards[1] == ref_rewards[0] and dones[1] == ref_dones[0]
        # ... and the replacement steps normally afterwards.
        _, _, dones, infos = step(vec, [0, 0])
        assert not dones[0] and infos[0] == {"t": 1, "TimeLimit.truncated": False}
    finally:
        vec.close()


@requires_ray
def test_step_timeout_fires_on_hanging_env(ray_session: Any) -> None:
    timeout = 1.0
    vec = ray_vec([make_toy, make_toy], step_timeout=timeout)
    try:
        vec.reset()
        vec.env_method("arm_hang", 60.0, indices=0)
        start = time.monotonic()
        with pytest.warns(ActorRestartWarning, match=r"env 0 did not answer within step_timeout=1.0s"):
            _, _, dones, infos = step(vec, [1, 1])
        elapsed = time.monotonic() - start
        # The timeout, plus starting one replacement actor on a busy 2-core machine; never the 60 s hang.
        assert timeout <= elapsed < timeout + 15.0, elapsed
        assert dones[0] and infos[0]["TimeLimit.truncated"]
        assert not dones[1] and infos[1]["t"] == 1
        assert vec.restart_counts == [1, 0]
        start = time.monotonic()
        vec.step(np.array([1, 1]))  # the replacement does not hang
        assert time.monotonic() - start < timeout
    finally:
        vec.close()


@requires_ray
def test_learning_continues_after_actor_process_dies(ray_session: Any, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    vec = ray_vec([make_crash_factory(marker, crash_at=20), make_toy])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, before, after = train_ppo(vec, total_timesteps=128, n_steps=32)
        assert marker.exists(), "the env never crashed, the test proves nothing"
        restarts = [w for w in caught if issubclass(w.category, ActorRestartWarning)]
        assert len(restarts) == 1 and "env 0 lost its actor" in str(restarts[0].message)
        assert vec.restart_counts == [1, 0]
    finally:
        vec.close()
    assert model.num_timesteps >= 128
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))


@requires_ray
@pytest.mark.parametrize("restore_returns_obs", [False, True])
def test_replacement_restores_last_snapshot(ray_session: Any, restore_returns_obs: bool) -> None:
    vec = ray_vec([make_snapshot_factory(restore_returns_obs)])
    try:
        vec.reset()  # episode 1 (snapshot taken: episodes=1)
        # Action 0 never terminates: the TimeLimit ends episode 1 and episode 2 starts (snapshot: episodes=2).
        for _ in range(MAX_STEPS):
            _, _, dones, _ = step(vec, [0])
        assert dones[0] and vec.get_attr("episodes") == [2]
        kill_and_wait(ray_session, vec.actors[0])
        with pytest.warns(ActorRestartWarning, match="restored from its last snapshot"):
            obs, _, dones, infos = step(vec, [0])
        assert dones[0] and infos[0]["TimeLimit.truncated"]
        if restore_returns_obs:  # restore() gave the first observation of the new episode itself
            assert vec.get_attr("episodes") == [2]
            assert vec.reset_infos[0] == {"restored": True}
            np.testing.assert_array_equal(obs[0], np.full(3, 7.0, np.float32))
        else:  # restore() then reset(): a fresh factory env would say episodes == 1
            assert vec.get_attr("episodes") == [3]
            assert vec.reset_infos[0]["episode_no"] == 3
    finally:
        vec.close()


@requires_ray
def test_env_failing_every_time_raises_instead_of_looping(ray_session: Any) -> None:
    vec = ray_vec([make_toy], step_timeout=0.5, max_consecutive_failures=1)
    try:
        vec.reset()
        vec.env_method("arm_hang", 60.0)
        with pytest.warns(ActorRestartWarning):
            vec.step(np.array([1]))  # first failure: replaced
        vec.env_method("arm_hang", 60.0)
        with (
            pytest.raises(RuntimeError, match="env 0 failed 2 times in a row"),
            pytest.warns(ActorRestartWarning),
        ):
            vec.step(np.array([1]))
    finally:
        vec.close()


@requires_ray
def test_unschedulable_request_fails_with_resources_message(ray_session: Any) -> None:
    with pytest.raises(RuntimeError, match="did not start within startup_timeout"):
        ray_vec([make_toy], num_cpus_per_env=64.0, startup_timeout=1.0)


# --------------------------------------------------------------------------- the ARKD nano preset
def make_nano() -> gym.Env:
    import torch

    import arkd_env  # registers arkd_env/Distill-v0 inside the actor process too

    # One torch thread per env process (Ray does this for its actors; SubprocVecEnv workers would not).
    torch.set_num_threads(1)
    assert arkd_env is not None
    return gym.make("arkd_env/Distill-v0", preset="nano", horizon=4)


def nano_actions(space: spaces.Space, n_steps: int, n_envs: int) -> np.ndarray:
    space.seed(0)
    return np.stack([np.stack([space.sample() for _ in range(n_envs)]) for _ in range(n_steps)])


@pytest.fixture(scope="module")
def nano_ray_vec(ray_session: Any) -> Iterator[vec_ray_module.RayVecEnv]:
    """Two nano envs in Ray actors, shared by the nano tests (each actor process pays the torch imports)."""
    vec = ray_vec([make_nano, make_nano], num_cpus_per_env=1.0)
    yield vec
    vec.close()


@pytest.mark.slow
@requires_ray
def test_a_plain_gym_make_lambda_works_in_an_actor(ray_session: Any) -> None:
    # Nothing in this factory imports arkd_env: the actor must register the id itself.
    vec = ray_vec([lambda: gym.make("arkd_env/Distill-v0", preset="nano", horizon=2, updates_per_step=1)])
    try:
        obs = vec.reset()
        assert obs.shape == (1, *vec.observation_space.shape)
        _, rewards, _, infos = vec.step(np.zeros((1, 1), dtype=np.float32))
        assert np.isfinite(rewards).all() and infos[0]["weights"] == {"fkl": 0.5, "rkl": 0.5}
    finally:
        vec.close()


@pytest.mark.slow
@requires_ray
def test_nano_results_equal_subproc(nano_ray_vec: vec_ray_module.RayVecEnv) -> None:
    subproc = SubprocVecEnv([make_nano, make_nano])
    actions = nano_actions(subproc.action_space, 6, 2)  # horizon 4: crosses one episode end
    try:
        expected = rollout(subproc, actions, seed=11, options=None)
    finally:
        subproc.close()
    got = rollout(nano_ray_vec, actions, seed=11, options=None)
    # Same code, same seeds, one torch thread each: equal up to float reassociation at most.
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    for step_got, step_expected in zip(got[2:], expected[2:], strict=True):
        obs, rewards, dones, infos, _ = step_got
        np.testing.assert_allclose(obs, step_expected[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(rewards, step_expected[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(dones, step_expected[2])
        for info, info_expected in zip(infos, step_expected[3], strict=True):
            assert info["TimeLimit.truncated"] == info_expected["TimeLimit.truncated"]
            assert info["weights"] == pytest.approx(info_expected["weights"])
            assert ("terminal_observation" in info) == ("terminal_observation" in info_expected)
            if "terminal_observation" in info:
                np.testing.assert_allclose(
                    info["terminal_observation"], info_expected["terminal_observation"], rtol=1e-4, atol=1e-5
                )
    ends = [info for step in got[2:] for info in step[3] if "terminal_observation" in info]
    assert ends and all(info["TimeLimit.truncated"] for info in ends), "the horizon should truncate episodes"


@pytest.mark.slow
@requires_ray
def test_nano_ppo_learns_through_ray_vec_env(nano_ray_vec: vec_ray_module.RayVecEnv) -> None:
    model, before, after = train_ppo(nano_ray_vec, total_timesteps=256, n_steps=32)
    assert model.num_timesteps >= 256
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True)), "policy did not change"

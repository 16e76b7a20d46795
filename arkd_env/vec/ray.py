"""A Stable-Baselines3 ``VecEnv`` whose sub-environments live in Ray actors.

One actor per sub-environment, each built inside its actor from the same zero-argument factory you
would give ``DummyVecEnv``/``SubprocVecEnv`` (Ray cloudpickles the factory), each with its own resource
request (``num_cpus_per_env``, ``num_gpus_per_env``; fractional GPUs share a device). Steps run in
all actors at once; the step protocol (auto-reset, ``terminal_observation``, ``TimeLimit.truncated``,
``reset_infos``, seeds and options) follows ``SubprocVecEnv`` so results are identical for the same
seeds and actions.

Faults do not hang the learner: a step slower than ``step_timeout`` seconds, or an actor whose
process died, gets its actor killed and replaced from the factory. The replacement is restored from
the env's last snapshot when ``env.unwrapped`` offers ``snapshot()`` / ``restore(state)`` hooks
(otherwise it is simply reset), and the lost episode is reported as truncated: ``done=True``,
``info["TimeLimit.truncated"] = True``, ``info["terminal_observation"]`` = the last observation seen,
reward 0.0, plus an :class:`ActorRestartWarning`.

Snapshot hooks contract (optional, on the unwrapped env):
  ``snapshot() -> state``   any picklable object; taken in the actor after every reset (the start of an
                            episode) and, with ``snapshot_every=k``, every k steps; kept in Ray's object
                            store (not copied to the driver).
  ``restore(state)``        called in a fresh actor after a failure. If it returns ``(obs, info)``, that is
                            the first observation of the new episode; if it returns anything else the
                            env is then ``reset()`` to obtain it.

Ray is imported only when a Ray object is used, so this module imports without Ray installed.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from arkd_env import ARKDWarning

__all__ = ["ActorRestartWarning", "RayVecEnv", "init_ray"]

_INSTALL_HINT = 'install it with: pip install "arkd[ray]"'


class ActorRestartWarning(ARKDWarning, RuntimeWarning):
    """A sub-environment's Ray actor timed out or died and was replaced; its episode was truncated."""


def _require_ray() -> Any:
    """Import Ray on demand, with an actionable message when the optional extra is missing."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"arkd_env.vec.RayVecEnv needs Ray, which is not installed; {_INSTALL_HINT}"
        ) from err
    return ray


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    num_gpus: int | None = None,
    include_dashboard: bool = False,
    log_to_driver: bool = True,
    **init_kwargs: Any,
) -> dict[str, float]:
    """Start a local Ray, or connect to a running Ray cluster; return the cluster's total resources.

    address=None starts Ray on this machine with ``num_cpus``/``num_gpus`` (None: what the machine has).
    Otherwise ``address`` names an existing cluster: ``"HOST:6379"`` (the head's GCS address printed by
    ``ray start --head``, for a driver running on a cluster node), ``"auto"`` (the cluster this node
    belongs to) or ``"ray://HOST:10001"`` (Ray Client, for a driver outside the cluster). A cluster's
    resources are set by ``ray start --num-cpus/--num-gpus`` on each node, so num_cpus/num_gpus must be
    None then. Extra keyword arguments go to ``ray.init`` (e.g. ``runtime_env``). Calling it again when
    Ray is already up returns the running cluster's resources.
    """
    ray = _require_ray()
    if ray.is_initialized():
        return dict(ray.cluster_resources())
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=include_dashboard,
            log_to_driver=log_to_driver,
            **init_kwargs,
        )
    else:
        if num_cpus is not None or num_gpus is not None:
            raise ValueError(
                f"init_ray: num_cpus={num_cpus!r}/num_gpus={num_gpus!r} only apply to a local Ray; "
                f"the cluster at address={address!r} sets them with `ray start --num-cpus/--num-gpus`"
            )
        ray.init(address=address, log_to_driver=log_to_driver, **init_kwargs)
    return dict(ray.cluster_resources())


@functools.cache
def _env_actor_class() -> Any:
    """The Ray actor class wrapping one gymnasium env (built once, on first use).

    The class is defined inside this function on purpose: cloudpickle then ships it to workers by value,
    so an actor process does not import this module (and with it Stable-Baselines3 and torch, several
    seconds per actor) unless the env itself needs them.
    """
    ray = _require_ray()

    class EnvActor:
        """Owns one env; mirrors the command loop of SB3's SubprocVecEnv worker, one method per command."""

        def __init__(self, env_fn: Callable[[], Any], snapshots: bool, snapshot_every: int | None) -> None:
            # An actor is a fresh process: register ARKD's env ids there, as importing arkd_env did in the
            # driver, so `lambda: gym.make("arkd_env/Distill-v1", ...)` works as it does in SubprocVecEnv.
            # (The package's import is cheap: registration only.)
            import arkd_env  # noqa: F401

            env = env_fn()
            if not isinstance(env, gym.Env):
                # Old `gym` envs: let SB3 wrap them the way its own vec envs do.
                from stable_baselines3.common.vec_env.patch_gym import _patch_env

                env = _patch_env(env)
            self.env = env
            base = env.unwrapped
            self.has_hooks = callable(getattr(base, "snapshot", None)) and callable(
                getattr(base, "restore", None)
            )
            self.snapshots = snapshots and self.has_hooks
            self.snapshot_every = snapshot_every
            self.steps_since_snapshot = 0
            # SubprocVecEnv's worker reports the info of the most recent reset with every step.
            self.reset_info: dict[str, Any] = {}

        def describe(self) -> tuple[Any, Any, bool]:
            return self.env.observation_space, self.env.action_space, self.has_hooks

        def _snapshot(self, episode_start: bool) -> Any:
            """A new snapshot when one is due, else None (the driver keeps its previous one)."""
            if not self.snapshots:
                return None
            self.steps_since_snapshot += 0 if episode_start else 1
            due = episode_start or (
                self.snapshot_every is not None and self.steps_since_snapshot >= self.snapshot_every
            )
            if not due:
                return None
            self.steps_since_snapshot = 0
            hooks: Any = self.env.unwrapped
            return hooks.snapshot()

        def step(self, action: Any) -> tuple[tuple[Any, ...], Any]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            # SB3 flags a time-limit cut only when the env did not also terminate for real.
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_info = self.env.reset()
            snap = self._snapshot(episode_start=done)
            return (obs, reward, done, info, self.reset_info, snap is not None), snap

        def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[tuple[Any, ...], Any]:
            extra = {"options": options} if options else {}
            obs, self.reset_info = self.env.reset(seed=seed, **extra)
            snap = self._snapshot(episode_start=True)
            return (obs, self.reset_info, snap is not None), snap

        def resume(self, state: Any) -> tuple[tuple[Any, ...], Any]:
            """Start a new episode in a replacement actor: restore the last snapshot, else reset."""
            hooks: Any = self.env.unwrapped
            restored = hooks.restore(state) if state is not None and self.has_hooks else None
            if isinstance(restored, tuple) and len(restored) == 2:
                obs, self.reset_info = restored
            else:
                obs, self.reset_info = self.env.reset()
            snap = self._snapshot(episode_start=True)
            return (obs, self.reset_info, snap is not None), snap

        def render(self) -> Any:
            return self.env.render()

        def env_method(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return self.env.get_wrapper_attr(name)(*args, **kwargs)

        def get_attr(self, name: str) -> Any:
            return self.env.get_wrapper_attr(name)

        def has_attr(self, name: str) -> bool:
            try:
                self.env.get_wrapper_attr(name)
            except AttributeError:
                return False
            return True

        def set_attr(self, name: str, value: Any) -> None:
            setattr(self.env, name, value)

        def is_wrapped(self, wrapper_class: type) -> bool:
            layer = self.env
            while isinstance(layer, gym.Wrapper):
                if isinstance(layer, wrapper_class):
                    return True
                layer = layer.env
            return False

        def close(self) -> None:
            self.env.close()

    return ray.remote(EnvActor)


def _stack_observations(obs_list: Sequence[Any], space: spaces.Space) -> VecEnvObs:
    """Per-env observations -> one batch with the env index first (dict/tuple spaces stacked per part)."""
    if isinstance(space, spaces.Dict):
        return {key: np.stack([obs[key] for obs in obs_list]) for key in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([obs[i] for obs in obs_list]) for i in range(len(space.spaces)))
    return np.stack(obs_list)


def _failure_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray errors that mean "the actor or its node is gone" (not a bug raised by the env's own code)."""
    exc = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError")
    return tuple(getattr(exc, name) for name in names if hasattr(exc, name))


class RayVecEnv(VecEnv):
    """SB3 VecEnv with one Ray actor per sub-environment.

    :param env_fns: zero-argument env factories, as for SubprocVecEnv; each is called inside its actor
        (and again when that actor is replaced), so it must be picklable by cloudpickle.
    :param num_cpus_per_env: CPUs Ray reserves for each actor (fractions allowed). Ray also sets the actor's
        OMP_NUM_THREADS to this (at least 1).
    :param num_gpus_per_env: GPUs per actor; fractions (e.g. 0.5) put several envs on one GPU. Ray sets each
        actor's CUDA_VISIBLE_DEVICES to its GPU(s), so the env sees them as cuda:0, cuda:1, ...
    :param step_timeout: seconds a step (or reset) may take, counted from ``step_async``; a slower actor is
        killed, replaced and its episode truncated. None waits forever.
    :param startup_timeout: seconds to wait for an actor to be scheduled and to build its env (first start
        and replacements). A cluster without the requested resources fails here with a message instead of
        waiting forever.
    :param snapshots: take snapshots through the env's ``snapshot()/restore()`` hooks when it has them.
    :param snapshot_every: also snapshot every k steps within an episode (None: only at episode starts).
    :param max_consecutive_failures: an env that fails this many times in a row (no good step or reset in
        between) raises RuntimeError instead of being replaced again.
    :param actor_options: extra ``ActorClass.options(...)`` keywords, e.g. ``runtime_env`` or
        ``scheduling_strategy="SPREAD"`` to spread envs over nodes.

    Ray is started locally (all of this machine's CPUs) when it is not running yet; call :func:`init_ray`
    first to choose the resources or a cluster.
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        num_cpus_per_env: float = 1.0,
        num_gpus_per_env: float = 0.0,
        step_timeout: float | None = None,
        *,
        startup_timeout: float = 300.0,
        snapshots: bool = True,
        snapshot_every: int | None = None,
        max_consecutive_failures: int = 3,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        _check_arguments(
            env_fns,
            num_cpus_per_env,
            num_gpus_per_env,
            step_timeout,
            startup_timeout,
            snapshot_every,
            max_consecutive_failures,
        )
        self._ray = _require_ray()
        if not self._ray.is_initialized():
            init_ray()
        self._errors = _failure_errors(self._ray)
        self._env_fns = list(env_fns)
        self._options_for_actor = {
            "num_cpus": num_cpus_per_env,
            "num_gpus": num_gpus_per_env,
            # Replacement is done here (fresh factory + snapshot), not by Ray's own actor restarts.
            "max_restarts": 0,
            **(actor_options or {}),
        }
        self.step_timeout = step_timeout
        self.startup_timeout = startup_timeout
        self.max_consecutive_failures = max_consecutive_failures
        self._snapshots_on = snapshots
        self._snapshot_every = snapshot_every
        self.waiting = False
        self.closed = False
        self._pending: list[Any] = []
        self._deadline: float | None = None

        n_envs = len(env_fns)
        self.restart_counts = [0] * n_envs
        self._failures = [0] * n_envs
        self._snapshot_refs: list[Any] = [None] * n_envs
        self._actors = [self._spawn(i) for i in range(n_envs)]
        observation_space, action_space = self._wait_until_started()
        self._last_obs: list[Any] = [observation_space.sample() for _ in range(n_envs)]
        super().__init__(n_envs, observation_space, action_space)

    # ------------------------------------------------------------------ actors
    @property
    def actors(self) -> list[Any]:
        """The current actor handle of each env (replaced actors get new handles)."""
        return list(self._actors)

    def _spawn(self, index: int) -> Any:
        cls = _env_actor_class()
        actor = cls.options(**self._options_for_actor)
        return actor.remote(self._env_fns[index], self._snapshots_on, self._snapshot_every)

    def _wait_until_started(self) -> tuple[spaces.Space, spaces.Space]:
        refs = [actor.describe.remote() for actor in self._actors]
        try:
            described = self._ray.get(refs, timeout=self.startup_timeout)
        except self._ray.exceptions.GetTimeoutError as err:
            self._kill_all()
            raise RuntimeError(
                f"RayVecEnv: {len(refs)} env actors did not start within "
                f"startup_timeout={self.startup_timeout}s; "
                f"each asks for {self._options_for_actor['num_cpus']} CPU and "
                f"{self._options_for_actor['num_gpus']} GPU but Ray has {self._ray.available_resources()} "
                "available (lower num_cpus_per_env/num_gpus_per_env or add nodes)"
            ) from err
        except self._errors as err:
            self._kill_all()
            raise RuntimeError(f"RayVecEnv: an env factory failed inside its actor: {err}") from err
        return described[0][0], described[0][1]

    def _kill(self, index: int) -> None:
        # The actor may already be gone; there is nothing else to do then.
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[index], no_restart=True)

    def _kill_all(self) -> None:
        for index in range(len(self._actors)):
            self._kill(index)

    # ------------------------------------------------------------ collecting
    def _collect(self, refs: list[Any], deadline: float | None) -> list[tuple[Any, ...] | str]:
        """Each ref's value, or a string saying why that env failed (timed out / actor gone)."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=remaining)
        ready_set = set(ready)
        results: list[tuple[Any, ...] | str] = []
        for ref in refs:
            if ref not in ready_set:
                results.append(f"did not answer within step_timeout={self.step_timeout}s")
                continue
            try:
                results.append(self._ray.get(ref))
            except self._errors as err:
                results.append(f"lost its actor ({type(err).__name__})")
        return results

    def _note_success(self, index: int, result: tuple[Any, ...], snapshot_ref: Any) -> None:
        self._failures[index] = 0
        if result[-1]:  # the actor took a new snapshot with this call
            self._snapshot_refs[index] = snapshot_ref

    def _replace(self, index: int, reason: str, reset_args: tuple[int | None, dict[str, Any]] | None) -> Any:
        """Kill env `index`'s actor, start a new one and begin a new episode in it.

        reset_args=None resumes from the last snapshot (or resets); else reset(seed, options) is repeated.
        Returns the new actor's (obs, reset_info, took_snapshot) result.
        """
        while True:
            self._failures[index] += 1
            if self._failures[index] > self.max_consecutive_failures:
                raise RuntimeError(
                    f"RayVecEnv: env {index} failed {self._failures[index]} times in a row (last: {reason}); "
                    f"giving up (max_consecutive_failures={self.max_consecutive_failures})"
                )
            self._kill(index)
            self._actors[index] = self._spawn(index)
            self.restart_counts[index] += 1
            actor = self._actors[index]
            if reset_args is None:
                refs = actor.resume.options(num_returns=2).remote(self._snapshot_refs[index])
            else:
                refs = actor.reset.options(num_returns=2).remote(*reset_args)
            try:
                result = self._ray.get(refs[0], timeout=self.startup_timeout)
            except self._ray.exceptions.RayError as err:
                # Also covers a restore() that raised or a lost snapshot: retry without the snapshot.
                reason = f"its replacement failed ({type(err).__name__}: {str(err).splitlines()[0]})"
                self._snapshot_refs[index] = None
                continue
            if result[-1]:
                self._snapshot_refs[index] = refs[1]
            return result

    def _warn_replaced(self, index: int, reason: str, during: str) -> None:
        how = "restored from its last snapshot" if self._snapshot_refs[index] is not None else "reset"
        warnings.warn(
            f"RayVecEnv: env {index} {reason} during {during}; its actor was replaced from the env factory "
            f"and {how}" + (", and its episode reported as truncated" if during == "step" else ""),
            ActorRestartWarning,
            stacklevel=3,
        )

    # ---------------------------------------------------------------- VecEnv
    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [
            actor.step.options(num_returns=2).remote(action)
            for actor, action in zip(self._actors, actions, strict=True)
        ]
        self._deadline = None if self.step_timeout is None else time.monotonic() + self.step_timeout
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        pending, self._pending = self._pending, []
        collected = self._collect([refs[0] for refs in pending], self._deadline)
        self.waiting = False
        obs_list, rewards, dones, infos = [], [], [], []
        for index, outcome in enumerate(collected):
            if isinstance(outcome, str):
                self._warn_replaced(index, outcome, "step")
                obs, reset_info, _ = self._replace(index, outcome, None)
                reward, done = 0.0, True
                info = {
                    "TimeLimit.truncated": True,
                    "terminal_observation": self._last_obs[index],
                    "actor_failure": outcome,
                }
            else:
                self._note_success(index, outcome, pending[index][1])
                obs, reward, done, info, reset_info, _ = outcome
            self.reset_infos[index] = reset_info
            self._last_obs[index] = obs
            obs_list.append(obs)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
        return (
            _stack_observations(obs_list, self.observation_space),
            np.stack(rewards),
            np.stack(dones),
            infos,
        )

    def reset(self) -> VecEnvObs:
        # A step still in flight is abandoned: its actor answers it before the reset (calls are ordered).
        self._pending, self.waiting = [], False
        calls = [
            actor.reset.options(num_returns=2).remote(self._seeds[i], self._options[i])
            for i, actor in enumerate(self._actors)
        ]
        deadline = None if self.step_timeout is None else time.monotonic() + self.step_timeout
        collected = self._collect([refs[0] for refs in calls], deadline)
        obs_list = []
        for index, outcome in enumerate(collected):
            if isinstance(outcome, str):
                self._warn_replaced(index, outcome, "reset")
                outcome = self._replace(index, outcome, (self._seeds[index], self._options[index]))
            else:
                self._note_success(index, outcome, calls[index][1])
            obs, self.reset_infos[index], _ = outcome
            self._last_obs[index] = obs
            obs_list.append(obs)
        # As in SB3: seeds and options apply to one reset only.
        self._reset_seeds()
        self._reset_options()
        return _stack_observations(obs_list, self.observation_space)

    def close(self) -> None:
        if self.closed:
            return
        self._pending, self.waiting = [], False
        refs = [actor.close.remote() for actor in self._actors]
        # Give envs a chance to clean up (after any step still running), then free the actors regardless.
        self._ray.wait(refs, num_returns=len(refs), timeout=self.step_timeout or 30.0)
        self._kill_all()
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but get_images() needs `rgb_array`; "
                "returning None images.",
                stacklevel=2,
            )
            return [None for _ in self._actors]
        return list(self._ray.get([actor.render.remote() for actor in self._actors]))

    def has_attr(self, attr_name: str) -> bool:
        return all(self._ray.get([actor.has_attr.remote(attr_name) for actor in self._actors]))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return list(self._ray.get([a.get_attr.remote(attr_name) for a in self._targets(indices)]))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._ray.get([a.set_attr.remote(attr_name, value) for a in self._targets(indices)])

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        refs = [a.env_method.remote(method_name, method_args, method_kwargs) for a in self._targets(indices)]
        return list(self._ray.get(refs))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return list(self._ray.get([a.is_wrapped.remote(wrapper_class) for a in self._targets(indices)]))

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        return [self._actors[i] for i in self._get_indices(indices)]


def _check_arguments(
    env_fns: Sequence[Callable[[], gym.Env]],
    num_cpus_per_env: float,
    num_gpus_per_env: float,
    step_timeout: float | None,
    startup_timeout: float,
    snapshot_every: int | None,
    max_consecutive_failures: int,
) -> None:
    """One-line ValueErrors naming the bad argument and its value."""
    checks: Iterable[tuple[bool, str]] = (
        (len(env_fns) > 0, f"env_fns must hold at least one env factory, got {len(env_fns)}"),
        (all(callable(fn) for fn in env_fns), "env_fns must be callables returning a gymnasium.Env"),
        (num_cpus_per_env >= 0, f"num_cpus_per_env must be >= 0, got {num_cpus_per_env!r}"),
        (num_gpus_per_env >= 0, f"num_gpus_per_env must be >= 0, got {num_gpus_per_env!r}"),
        (step_timeout is None or step_timeout > 0, f"step_timeout must be > 0 or None, got {step_timeout!r}"),
        (startup_timeout > 0, f"startup_timeout must be > 0, got {startup_timeout!r}"),
        (
            snapshot_every is None or snapshot_every >= 1,
            f"snapshot_every must be >= 1 or None, got {snapshot_every!r}",
        ),
        (
            max_consecutive_failures >= 1,
            f"max_consecutive_failures must be >= 1, got {max_consecutive_failures!r}",
        ),
    )
    for ok, message in checks:
        if not ok:
            raise ValueError(f"RayVecEnv: {message}")

"""Building distillation environments from a RunConfig: one env, or a VecEnv for an agent."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym

from arkd_env.config import EngineConfig, EnvConfig
from arkd_env.env.wrappers import normalize_vec_rewards
from train.config import RunConfig

ENV_ID = "arkd_env/Distill-v1"


def make_env(preset: str, engine: EngineConfig, env_config: EnvConfig) -> gym.Env:
    """One DistillEnv built from resolved configs (picklable via functools.partial for subprocesses)."""
    import arkd_env  # noqa: F401  (registers the env id in this process)

    return gym.make(ENV_ID, preset=preset, engine=engine, env_config=env_config, disable_env_checker=True)


def configs_for(cfg: RunConfig, engine_seed: int | None = None) -> tuple[EngineConfig, EnvConfig]:
    """The configs of an env; one given ``engine_seed`` runs on that seed only, never on env.train_seeds."""
    if engine_seed is None:
        return cfg.engine, cfg.env
    return dataclasses.replace(cfg.engine, seed=engine_seed), dataclasses.replace(cfg.env, train_seeds=[])


def single_env(cfg: RunConfig, engine_seed: int | None = None) -> gym.Env:
    engine, env = configs_for(cfg, engine_seed)
    return make_env(cfg.preset, engine, env)


def vec_kind(cfg: RunConfig) -> str:
    kind = cfg.agent.vec_env
    if kind == "auto":
        return "dummy" if cfg.agent.n_envs == 1 else "subproc"
    return kind


def make_vec_env(cfg: RunConfig) -> Any:
    """The VecEnv the agent learns on: VecMonitor for episode returns, VecNormalize when rewards are normalised."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    # Rewards are normalised once, over all envs, by VecNormalize below, whose statistics checkpoints save.
    per_env = dataclasses.replace(cfg.env, normalize_reward=False)
    fns = [functools.partial(make_env, cfg.preset, cfg.engine, per_env) for _ in range(cfg.agent.n_envs)]
    kind = vec_kind(cfg)
    venv: Any
    if kind == "dummy":
        venv = DummyVecEnv(fns)  # type: ignore[arg-type]
    elif kind == "subproc":
        venv = SubprocVecEnv(fns)  # type: ignore[arg-type]
    else:
        from arkd_env.vec import init_ray, ray_available

        if not ray_available():
            raise ImportError('--ray needs Ray, which is not installed: pip install "arkd[ray]"')
        init_ray(cfg.agent.ray_address)
        from arkd_env.vec import RayVecEnv

        venv = RayVecEnv(fns, num_cpus_per_env=cfg.agent.cpus_per_env,  # type: ignore[arg-type]
                         num_gpus_per_env=cfg.agent.gpus_per_env, step_timeout=cfg.agent.step_timeout)
    monitored = VecMonitor(venv)  # inside the normaliser, so episode returns are logged unscaled
    return normalize_vec_rewards(monitored) if cfg.env.normalize_reward else monitored

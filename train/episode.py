"""One distillation run (one env episode) driven by a policy: a baseline spec or a saved agent."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arkd_env.config import ConfigError, EnvConfig, from_dict, read_yaml
from train.config import RunConfig
from train.envs import single_env
from train.runs import CONFIG_FILE, POLICY_FILE


@dataclass
class EpisodeResult:
    """What one distillation run did and reached."""

    policy: str
    seed: int
    episode_return: float
    steps: list[dict[str, Any]] = field(default_factory=list)  # per env step: weights, reward, val
    metrics: dict[str, float] = field(default_factory=dict)  # final validation + generation metrics
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"policy": self.policy, "seed": self.seed, "wall_s": self.wall_s,
                "metrics": {"episode_return": self.episode_return, **self.metrics}, "steps": self.steps}


def is_baseline(spec: str) -> bool:
    from agents.baselines import is_baseline_spec

    return is_baseline_spec(spec)


def policy_path(spec: str) -> Path:
    """The policy file a non-baseline spec points to: a file, or a run folder holding policy.zip."""
    path = Path(spec)
    if path.is_dir():
        path = path / POLICY_FILE
    if not path.is_file():
        from agents.baselines import BASELINE_NAMES

        raise FileNotFoundError(f"{spec}: no such policy file (and not a baseline: {', '.join(BASELINE_NAMES)})")
    return path


def label(spec: str) -> str:
    """A short name for tables and plots: the spec, or the run folder's name for a saved policy."""
    if is_baseline(spec):
        return spec.strip().lower()
    path = Path(spec)
    if path.name == POLICY_FILE or path.is_dir():
        return (path if path.is_dir() else path.parent).resolve().name or str(path)
    return path.stem


# What a saved policy's observations and actions mean; it is played with its own run's values of these.
POLICY_ENV_FIELDS = ("features", "probe_updates", "action_mode", "alpha_grid", "simplex_components",
                     "simplex_temperature")


def env_overrides(spec: str) -> dict[str, Any]:
    """Env settings a policy needs: a baseline's own, or those a saved policy was trained with (from the
    ``config.yaml`` beside it), so policies trained on different observations can share one comparison."""
    if is_baseline(spec):
        from agents.baselines import baseline_env_overrides

        return baseline_env_overrides(spec)
    config = policy_path(spec).parent / CONFIG_FILE
    if not config.is_file():
        return {}
    trained = read_yaml(config).get("env") or {}
    if not isinstance(trained, dict):
        raise ConfigError(f"{config}: 'env' must be a mapping, got {type(trained).__name__}")
    chosen = {key: trained[key] for key in POLICY_ENV_FIELDS if key in trained}
    # Typed and checked as a config file would be, so a damaged value is one line naming this file.
    typed = from_dict(EnvConfig, chosen, source=str(config), prefix="env")
    return {key: getattr(typed, key) for key in chosen}


def played_config(cfg: RunConfig, spec: str) -> RunConfig:
    """``cfg`` as ``spec`` is played: with the env settings the policy needs (:func:`env_overrides`)."""
    overrides = env_overrides(spec)
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, **overrides)) if overrides else cfg


def replaced_settings(cfg: RunConfig, spec: str) -> str | None:
    """One line naming the settings of ``cfg.env`` a saved policy replaces with its own, or None. A policy
    only understands the observations and actions it was trained on, so these win over ``--set env.…``."""
    if is_baseline(spec):
        return None
    changed = [f"env.{key}={value!r} (not {getattr(cfg.env, key)!r})"
               for key, value in env_overrides(spec).items() if value != getattr(cfg.env, key)]
    if not changed:
        return None
    return f"{spec}: played with the env settings it was trained with: {', '.join(changed)}"


def check_spec(spec: str) -> None:
    """Fail before any env is built when ``spec`` is neither a baseline nor an existing file."""
    if is_baseline(spec):
        from agents.baselines import make_baseline

        make_baseline(spec, None)  # parses fixed:/linear: values
    else:
        policy_path(spec)


def check_played(cfg: RunConfig, spec: str) -> None:
    """Fail before any work on a bad ``spec``; name on stderr the ``--set env.…`` values it replaces."""
    check_spec(spec)
    if note := replaced_settings(cfg, spec):
        print(note, file=sys.stderr)


def load_policy(spec: str, env: Any) -> Any:
    from agents.baselines import make_baseline
    from agents.registry import load_agent

    if is_baseline(spec):
        return make_baseline(spec, env)
    return load_agent(policy_path(spec), env=env, device="cpu")


def run_episode(policy: Any, env: Any, name: str, seed: int, generate: bool = True,
                options: Mapping[str, Any] | None = None) -> EpisodeResult:
    """Play one episode with deterministic actions; evaluate the final student (with generations), also on the
    held-out ``test_*`` examples no reward or probe saw. ``options`` go to ``reset`` (e.g. an instance).

    Each acting step's record keeps, under ``observed``, the observation its weights were chosen from, by
    feature name: what a learned policy reacted to can then be read off a comparison's seed files."""
    start = time.perf_counter()
    names = env.unwrapped.feature_names
    if hasattr(policy, "set_random_seed"):  # SB3 models and baselines: a seeded episode is a repeatable one
        policy.set_random_seed(seed)
    obs, info = env.reset(seed=seed, options=dict(options) if options else None)
    steps: list[dict[str, Any]] = [{"step": 0, "weights": info.get("weights", {}), "reward": 0.0,
                                    "val": info.get("val", {}), "instance": info.get("instance")}]
    state: Any = None
    episode_start = np.ones((1,), dtype=bool)
    total, done = 0.0, False
    while not done:
        action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        episode_start = np.zeros((1,), dtype=bool)
        observed = dict(zip(names, np.asarray(obs, dtype=float).ravel().tolist(), strict=True))
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        done = bool(terminated or truncated)
        steps.append({"step": int(info.get("step", len(steps))), "weights": info.get("weights", {}),
                      "reward": float(reward), "val": info.get("val", {}), "observed": observed,
                      "train": info.get("train", {}), "update_log": info.get("update_log", [])})
    distiller = env.unwrapped.distiller
    metrics = {k: float(v) for k, v in distiller.evaluate(generate=generate, held_out=True).items()}
    metrics["student_updates"] = float(env.unwrapped.episode_updates)  # the run's cost, probes included
    return EpisodeResult(policy=name, seed=seed, episode_return=total, steps=steps, metrics=metrics,
                         wall_s=time.perf_counter() - start)


def play(cfg: RunConfig, spec: str, seed: int, generate: bool = True) -> tuple[EpisodeResult, Any]:
    """Build the env ``spec`` needs on engine seed ``seed``, play one episode, return result and env."""
    env = single_env(played_config(cfg, spec), engine_seed=seed)
    policy = load_policy(spec, env)
    return run_episode(policy, env, label(spec), seed, generate), env

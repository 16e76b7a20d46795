"""Atomic checkpoints of a learning agent and finding the latest complete one.

A checkpoint is a folder ``checkpoints/step_<N>/`` holding ``model.zip`` (the agent, incl. its
``num_timesteps``), ``replay_buffer.pkl`` for off-policy agents, ``reward_normalizer.json`` (the VecNormalize
statistics) when rewards are normalised, and ``state.json``. It is
assembled in a hidden temporary folder and renamed into place (arkd_env.atomic), so a process killed
at any moment (SIGKILL included) leaves either the complete folder or none; leftovers of interrupted
writes are hidden folders that :func:`latest` ignores and :func:`clean_partial` removes.

Checkpoints are taken on episode boundaries of every env (the interval is rounded up to whole episodes),
where the engine state is the episode's initial one, rebuilt from the run's config; a resumed run thus
loses only the env steps after the last checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from arkd_env.atomic import atomic_path, remove_leftovers
from arkd_env.env.wrappers import normalizer_state, restore_normalizer

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"
STATE_FILE = "state.json"
NORMALIZER_FILE = "reward_normalizer.json"  # VecNormalize statistics, when env.normalize_reward is on
_STEP = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def interval(every: int, horizon: int, n_envs: int) -> int:
    """``every`` env steps rounded up to a whole number of episodes of all envs (0: one episode)."""
    block = horizon * n_envs
    return max(1, -(-max(every, 1) // block)) * block


def save(model: Any, run_dir: Path, keep: int = 2, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint of ``model`` at its ``num_timesteps``; keep the ``keep`` newest."""
    from agents.registry import save_agent

    root = checkpoint_root(run_dir)
    step = int(model.num_timesteps)
    target = root / f"step_{step}"
    with atomic_path(target, folder=True) as staging:
        save_agent(model, staging / MODEL_FILE)
        if hasattr(model, "save_replay_buffer") and getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(staging / BUFFER_FILE)
        normalizer = normalizer_state(model)
        if normalizer is not None:
            (staging / NORMALIZER_FILE).write_text(json.dumps(normalizer))
        state = {"num_timesteps": step, "time": time.time(), **(extra or {})}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    prune(root, keep)
    return target


def complete(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, folder), oldest first."""
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP.match(child.name)
            if match and (child / STATE_FILE).is_file() and (child / MODEL_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest(run_dir: Path) -> Path | None:
    found = complete(checkpoint_root(run_dir))
    return found[-1][1] if found else None


def prune(root: Path, keep: int) -> None:
    for _, folder in complete(root)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def clean_partial(run_dir: Path) -> None:
    """Remove temporary folders left by writes that were killed."""
    remove_leftovers(checkpoint_root(run_dir))


def load(folder: Path, env: Any, device: str = "auto") -> Any:
    """The agent of checkpoint ``folder`` attached to ``env``, with its replay buffer when it has one."""
    from agents.registry import load_agent

    hint = f"; delete {folder} to resume from the checkpoint before it"
    try:
        model = load_agent(folder / MODEL_FILE, env=env, device=device)
    except ValueError as err:
        raise ValueError(f"{err}{hint}") from None
    buffer = folder / BUFFER_FILE
    if buffer.is_file() and hasattr(model, "load_replay_buffer"):
        try:
            model.load_replay_buffer(buffer)
        except Exception as err:  # a damaged pickle raises many types
            raise ValueError(f"{buffer}: not a readable replay buffer ({type(err).__name__}: {err}){hint}") from None
    normalizer = folder / NORMALIZER_FILE
    if normalizer.is_file():
        try:
            restore_normalizer(model, json.loads(normalizer.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{normalizer}: not readable reward-normalisation statistics ({err}){hint}") from None
    if hasattr(model, "_last_obs"):
        model._last_obs = None  # a resumed run starts a fresh episode on the fresh envs
    return model

"""`arkd train`: learn a weighting policy, with TensorBoard, checkpoints, resume and a final evaluation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arkd_env.atomic import atomic_path, atomic_write_text
from arkd_env.config import DISCRETE_ACTION_MODES
from train import checkpoints, plots
from train.callbacks import (
    CheckpointCallback,
    LearningCurveCallback,
    ProgressCallback,
    TensorBoardCallback,
    read_learning_curve,
    truncate_learning_curve,
)
from train.config import RunConfig, build
from train.envs import make_vec_env, single_env, vec_kind
from train.episode import EpisodeResult, play, run_episode
from train.errors import Interrupted
from train.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    POLICY_FILE,
    locked,
    require_run_dir,
    run_kind,
    write_json,
    write_run_info,
)

TB_DIR = "tb"
# Each reference episode is a whole distillation run: a few seeds show their spread at a bounded cost.
REFERENCE_SEEDS = 3
# `arkd demo` trains for a few episodes only; three seeds of each reference policy would cost nearly as much again.
DEMO_REFERENCE_SEEDS = 1


@dataclass
class TrainResult:
    run_dir: Path
    num_timesteps: int
    metrics: dict[str, Any] = field(default_factory=dict)


def check_algo(cfg: RunConfig) -> None:
    """Unknown or unusable agent names, and devices that do not exist here, fail before any env is built."""
    from agents.registry import ALGORITHMS, canonical_name, check_action_kind, check_hyperparameters, known_names
    from arkd_env.assets.models import pick_device

    pick_device(cfg.engine.device, key="engine.device")
    pick_device(cfg.agent.device, key="agent.device")

    name = cfg.agent.algo
    if canonical_name(name) in ALGORITHMS:
        check_action_kind(name, cfg.env.action_mode in DISCRETE_ACTION_MODES, f"env.action_mode={cfg.env.action_mode}")
    elif ":" not in name:
        algos = [n for n in known_names() if canonical_name(n) in ALGORITHMS]
        raise ValueError(f"unknown algorithm {name!r} (known: {', '.join(algos)}, or 'package.module:Class')")
    check_hyperparameters(name, cfg.preset, cfg.agent.hparams)  # imports the class: a missing extra fails here
    if vec_kind(cfg) == "ray":
        from arkd_env.vec import ray_available

        if not ray_available():
            raise ImportError('--ray needs Ray, which is not installed: pip install "arkd[ray]"')


def write_run_files(cfg: RunConfig, run_dir: Path) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, cfg.to_yaml())
    write_run_info(run_dir, "train")


def load_run(run_dir: str | Path) -> RunConfig:
    """The resolved config of a train run folder, after checking the folder's format and kind."""
    path = require_run_dir(run_dir)
    if run_kind(path) != "train":
        raise ValueError(f"{path}: not a folder of `arkd train` (no train run.json); --resume continues only "
                         "train runs")
    from arkd_env.config import read_yaml

    return build(read_yaml(path / CONFIG_FILE), str(path / CONFIG_FILE))


def hparams_of(cfg: RunConfig) -> dict[str, Any]:
    from agents.hparams import load_hyperparams
    from agents.registry import canonical_name

    algo = canonical_name(cfg.agent.algo)
    values = load_hyperparams(algo if ":" not in algo else "", cfg.preset, cfg.agent.hparams)
    return {"algo": cfg.agent.algo, "seed": cfg.run.seed, "n_envs": cfg.agent.n_envs, "agent": values,
            "env": {k: getattr(cfg.env, k) for k in ("horizon", "updates_per_step", "action_mode", "reward")},
            "engine": {k: getattr(cfg.engine, k) for k in ("lr", "batch_size", "temperature", "seed")}}


def save_policy(model: Any, run_dir: Path) -> Path:
    """``policy.zip`` written atomically."""
    from agents.registry import save_agent

    with atomic_path(run_dir / POLICY_FILE) as tmp:
        save_agent(model, tmp)
    return run_dir / POLICY_FILE


def _new_model(cfg: RunConfig, venv: Any) -> Any:
    from agents.registry import make_agent

    return make_agent(cfg.agent.algo, venv, hyperparams=cfg.agent.hparams, preset=cfg.preset,
                      seed=cfg.run.seed, device=cfg.agent.device)


def learn(cfg: RunConfig, run_dir: Path, resume: bool = False) -> Any:
    """Learn until ``run.timesteps`` env steps (continuing from the latest checkpoint when resuming)."""
    from stable_baselines3.common.logger import configure

    checkpoints.clean_partial(run_dir)
    venv = make_vec_env(cfg)
    try:
        latest = checkpoints.latest(run_dir) if resume else None
        if latest is not None:
            model = checkpoints.load(latest, venv, device=cfg.agent.device)
            truncate_learning_curve(run_dir, int(model.num_timesteps))
        else:
            model = _new_model(cfg, venv)
            (run_dir / "learning_curve.csv").unlink(missing_ok=True)
        model.set_logger(configure(str(run_dir / TB_DIR), ["tensorboard"]))
        every = checkpoints.interval(cfg.run.checkpoint_every, cfg.env.horizon, cfg.agent.n_envs)
        saver = CheckpointCallback(run_dir, every, cfg.run.keep_checkpoints)
        callbacks = [TensorBoardCallback(hparams_of(cfg), updates_per_step=cfg.env.updates_per_step),
                     LearningCurveCallback(run_dir), saver,
                     ProgressCallback(cfg.run.timesteps, int(model.num_timesteps))]
        remaining = cfg.run.timesteps - int(model.num_timesteps)
        if remaining > 0:
            try:
                model.learn(remaining, callback=callbacks, reset_num_timesteps=latest is None, log_interval=1)
            except KeyboardInterrupt:
                saved = checkpoints.save(model, run_dir, cfg.run.keep_checkpoints)
                save_policy(model, run_dir)
                raise Interrupted(run_dir, saved) from None
        if checkpoints.latest(run_dir) is None or saver.last_saved != model.num_timesteps:
            checkpoints.save(model, run_dir, cfg.run.keep_checkpoints)
        save_policy(model, run_dir)
    finally:
        # A subprocess killed by Ctrl-C cannot be closed cleanly; nothing is lost by ignoring that.
        with contextlib.suppress(Exception):
            venv.close()
    return model


def reference_seeds(cfg: RunConfig, count: int = REFERENCE_SEEDS) -> list[int]:
    """The engine seeds the learning curve's fixed policies are played on: the seeds the agent trains on (the
    first ``count`` of ``env.train_seeds``), or ``engine.seed`` when it trains on that alone."""
    return list(cfg.env.train_seeds[:count]) or [cfg.engine.seed]


def play_references(cfg: RunConfig, specs: Sequence[str], count: int = REFERENCE_SEEDS
                    ) -> dict[str, list[EpisodeResult]]:
    """Each spec's episodes (no generations) on :func:`reference_seeds`, by policy label."""
    played: dict[str, list[EpisodeResult]] = {}
    for spec in specs:
        for seed in reference_seeds(cfg, count):
            result, env = play(cfg, spec, seed, generate=False)
            env.close()
            played.setdefault(result.policy, []).append(result)
    return played


def returns_of(played: Mapping[str, Sequence[EpisodeResult]]) -> dict[str, list[float]]:
    return {name: [r.episode_return for r in results] for name, results in played.items()}


def finish(cfg: RunConfig, run_dir: Path, model: Any, wall_s: float) -> dict[str, Any]:
    """Final evaluation episode, fixed references, plots and metrics.json."""
    metrics: dict[str, Any] = {"algo": cfg.agent.algo, "preset": cfg.preset, "num_timesteps": int(model.num_timesteps),
                               "train_wall_s": wall_s}
    curve = read_learning_curve(run_dir)
    metrics["episodes"] = len(curve)
    metrics["episode_returns"] = [r for _, r in curve]
    played = play_references(cfg, cfg.run.reference_policies)
    returns = returns_of(played)
    metrics["reference_seeds"] = reference_seeds(cfg)
    metrics["reference_returns"] = {name: sum(values) / len(values) for name, values in returns.items()}
    metrics["reference_returns_by_seed"] = returns
    runs = {name: [r.steps for r in results] for name, results in played.items()}
    if cfg.run.final_eval:
        env = single_env(cfg, engine_seed=cfg.engine.seed)  # one fixed seed, not a draw from env.train_seeds
        result = run_episode(model, env, "agent", cfg.engine.seed)
        env.close()
        metrics["final_episode"] = {"episode_return": result.episode_return, **result.metrics}
        runs = {"agent": [result.steps], **runs}
    plots.learning_curve(curve, returns, run_dir / "plots" / "learning_curve.png")
    if runs:
        plots.weight_trajectories(runs, run_dir / "plots" / "weights.png")
        plots.validation_curves(runs, run_dir / "plots" / "validation.png")
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def train(cfg: RunConfig, run_dir: Path, resume: bool = False, evaluate: bool = True) -> TrainResult:
    check_algo(cfg)
    if not resume:
        write_run_files(cfg, run_dir)
    with locked(run_dir):  # two resumes of one run would write the same learning curve and checkpoints
        start = time.perf_counter()
        model = learn(cfg, run_dir, resume)
        wall = time.perf_counter() - start
        metrics = finish(cfg, run_dir, model, wall) if evaluate else {"num_timesteps": int(model.num_timesteps)}
    return TrainResult(run_dir=run_dir, num_timesteps=int(model.num_timesteps), metrics=metrics)

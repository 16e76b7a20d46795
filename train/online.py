"""`arkd distill --online ALGO`: one distillation run in which the agent learns the weighting as the student trains.

This is the mode of the ARKD paper and its authors' prototype. The run is a single env episode, and its student is
the product. The agent acts at every env step (every ``env.updates_per_step`` student updates) and learns from
the rewards of that same episode: PPO after every rollout of a few steps, SAC after every step, REINFORCE after
every segment of a few steps, the bandit after every reward. Every agent is driven through its own ``learn``,
one stretch of steps at a time. The env wrapper :class:`OneRun` makes that work: SB3 resets an env whose
episode ended, and for an online run that reset must not rewind the student to its start.

Rewards (``online.reward``) are the env's reward minus its forecast from recent rewards (:class:`DetrendedReward`), the
env's reward as configured (for example ``env.reward=relative``, which pays with probe updates), or the
prototype's ROUGE-L − 0.5 every ``online.reward_every`` steps (:class:`RougeCheckpointReward`).

``prototype`` is the authors' algorithm as they describe it, with two things done differently from their code.
It is REINFORCE with a Bernoulli choice between pure FKL and pure RKL at each step, a 2×128 ReLU network over
their state features (progress, FKL, RKL, the AKL head/tail ratios, student cross-entropy), the reward above,
and an update every 5 rewards. Their reward came every 100 student updates and their agent acted at every
update; here it acts at every env step and the reward comes every ``online.reward_every`` env steps (default
1, which on the paper presets, 100 updates a step, is their cadence of rewards). A run shorter than 5 rewards
(the small presets) updates the policy only at its end. The first difference is credit: their update pairs
the 5 returns with the first 5 of the (about 500) log-probabilities saved since the last update. Here every
action is credited with the return of the reward block it belongs to
(:func:`agents.reinforce.discounted_returns` with ``block=reward_every``). The second is the loss: the mean
over actions, not their sum (with Adam this changes little). As in their code, returns are discounted over
the rewards of one update (γ = 0.99) and then standardised, so earlier blocks of an update carry larger
returns before standardisation.

Resuming: a checkpoint ``checkpoints/step_<N>/`` is written atomically after every ``online.checkpoint_every``
steps (rounded up to whole PPO rollouts). It holds the agent (with SAC's replay buffer), the engine state
(student, optimizer, schedule, data position, sampling RNG), the episode's state, the reward wrapper's
forecast, the last observation, the steps so far and the global RNGs. ``arkd distill --resume RUN_DIR``
continues from the latest one. On CPU it ends with the same student and metrics as a run never stopped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger

from arkd_env.atomic import atomic_path, atomic_write_text
from arkd_env.env.wrappers import DetrendedReward, RougeCheckpointReward
from train import checkpoints, plots
from train.compare import summary_writer, write_policy_run
from train.config import RunConfig, replace
from train.distill import STUDENT_DIR, TB_DIR
from train.envs import single_env
from train.episode import EpisodeResult
from train.errors import UserError
from train.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    ONLINE_FILE,
    POLICY_FILE,
    locked,
    require_kind,
    write_json,
    write_run_info,
)

ENGINE_FILE = "engine.pt"
EPISODE_FILE = "episode.json"
PROTOTYPE_FEATURES = ("progress", "fkl", "rkl", "akl_head_ratio", "akl_tail_ratio", "student_ce")
PROTOTYPE_REWARDS_PER_UPDATE = 5


@dataclass(frozen=True)
class OnlineAlgo:
    """How one ``--online`` name is built: the registered agent, the entry of its hyperparameter file, and
    the env settings it always runs with."""

    agent: str
    hparams_entry: str = "online"
    env: Mapping[str, Any] = field(default_factory=dict)


ONLINE_ALGOS: dict[str, OnlineAlgo] = {
    "ppo": OnlineAlgo("ppo"),
    "sac": OnlineAlgo("sac"),
    "reinforce": OnlineAlgo("reinforce"),
    "bandit": OnlineAlgo("bandit"),
    "prototype": OnlineAlgo("reinforce", "prototype",
                            {"action_mode": "binary", "features": list(PROTOTYPE_FEATURES)}),
}


def online_algo(name: str) -> OnlineAlgo:
    key = name.strip().lower()
    if key not in ONLINE_ALGOS:
        raise UserError(f"--online {name!r}: unknown online algorithm (known: {', '.join(ONLINE_ALGOS)})")
    return ONLINE_ALGOS[key]


def is_prototype(name: str) -> bool:
    return name.strip().lower() == "prototype"


def reward_kind(cfg: RunConfig, name: str) -> str:
    if cfg.online.reward != "auto":
        return cfg.online.reward
    return "prototype" if is_prototype(name) else "detrended"


def online_config(cfg: RunConfig, name: str) -> RunConfig:
    """``cfg`` with the env settings the algorithm runs with; refuses settings an online run cannot honour."""
    algo = online_algo(name)
    if cfg.env.normalize_reward:
        raise UserError("--online: env.normalize_reward=true is for episodic training; an online run detrends "
                        "its reward instead (online.reward), so set env.normalize_reward=false")
    if cfg.online.reward == "prototype" and not is_prototype(name):
        raise UserError(f"--online {name}: online.reward=prototype pays only every online.reward_every steps, "
                        "which only the prototype's agent credits; use it with --online prototype")
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, **algo.env)) if algo.env else cfg


def agent_hyperparams(cfg: RunConfig, name: str) -> dict[str, Any]:
    """The agent's entry for online runs, with the prototype's reward timing, under ``agent.hparams``."""
    from agents.hparams import load_hyperparams

    algo = online_algo(name)
    if is_prototype(name):
        every = cfg.online.reward_every
        timing: dict[str, Any] = {"n_steps_per_update": PROTOTYPE_REWARDS_PER_UPDATE * every}
        # The agent's reward blocks are the reward's own timing, whatever agent.hparams say.
        return load_hyperparams(algo.agent, algo.hparams_entry, {**timing, **cfg.agent.hparams,
                                                                  "reward_every": every})
    return load_hyperparams(algo.agent, algo.hparams_entry, cfg.agent.hparams)


def check_online(cfg: RunConfig, name: str) -> None:
    """Every refusal an online run has, before any env, model or folder is built: the name, the settings, the
    hyperparameters, and whether the agent can act in the env's action mode."""
    from agents.registry import check_action_kind, check_hyperparameters

    algo = online_algo(name)
    played = online_config(cfg, name)
    mode = played.env.action_mode
    check_action_kind(algo.agent, mode in ("binary", "grid"), f"{mode!r} (env.action_mode)")
    hparams = agent_hyperparams(cfg, name)
    check_hyperparameters(algo.agent, algo.hparams_entry, hparams)
    if algo.agent == "ppo":
        steps = int(hparams["n_steps"])
        if played.env.horizon % steps:
            raise UserError(f"--online {name}: env.horizon={played.env.horizon} is not a whole number of PPO "
                            f"rollouts of agent.hparams.n_steps={steps}")


class OneRun(gym.Wrapper[Any, Any, Any, Any]):
    """The single episode of an online run, recorded step by step. Only the first ``reset`` resets: SB3 resets
    an env whose episode ended, and here that would rewind the student to its start; a later one returns the
    current observation. ``steps`` has the records :func:`train.episode.run_episode` makes, with the reward the
    agent learned from and, under ``env_reward``, the env's own."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.started = False
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []

    @property
    def ended(self) -> bool:
        return bool(self.steps) and bool(self.steps[-1].get("done"))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.started:
            return self.obs, self.info
        self.obs, info = self.env.reset(**kwargs)
        self.started = True
        self.info = dict(info)
        self.steps = [{"step": 0, "weights": info.get("weights", {}), "reward": 0.0, "val": info.get("val", {})}]
        return self.obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        names = self.env.unwrapped.feature_names  # type: ignore[attr-defined]
        observed = dict(zip(names, np.asarray(self.obs, dtype=float).ravel().tolist(), strict=True))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.obs, self.info = obs, dict(info)
        record = {"step": int(info["step"]), "weights": info.get("weights", {}), "reward": float(reward),
                  "env_reward": self.env.unwrapped.last_reward,  # type: ignore[attr-defined]
                  "val": info.get("val", {}), "observed": observed, "train": info.get("train", {}),
                  "update_log": info.get("update_log", []), "done": bool(terminated or truncated)}
        if "checkpoint_rouge_l" in info:
            record["checkpoint_rouge_l"] = float(info["checkpoint_rouge_l"])
        self.steps.append(record)
        return obs, reward, terminated, truncated, info


def build_env(cfg: RunConfig, name: str, seed: int) -> OneRun:
    """The env of an online run on engine seed ``seed``: DistillEnv, its reward wrapper, :class:`OneRun`."""
    env: gym.Env[Any, Any] = single_env(online_config(cfg, name), engine_seed=seed)
    kind = reward_kind(cfg, name)
    if kind == "detrended":
        env = DetrendedReward(env, cfg.online.detrend_decay, cfg.online.trend_decay)
    elif kind == "prototype":
        env = RougeCheckpointReward(env, cfg.online.reward_every, cfg.online.rouge_baseline)
    return OneRun(env)


class AgentLog(KVWriter):
    """An SB3 logger output that keeps every dump (the agent's losses, entropy, rewards) as rows, so that they
    are saved with each checkpoint and written to TensorBoard from one complete record."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        del key_excluded
        row = {k: float(v) for k, v in key_values.items() if isinstance(v, int | float | np.number)}
        if row:
            self.rows.append({"step": float(step), **row})



class StopAtRunEnd(BaseCallback):
    """Ends a ``learn`` call once the run's one episode has ended: it can end before the steps asked for
    (``env.max_consecutive_failures`` failed steps in a row), and there is nothing left to step."""

    def __init__(self, run: OneRun) -> None:
        super().__init__()
        self.run = run

    def _on_step(self) -> bool:
        return not self.run.ended


def attach_log(model: Any, log: AgentLog) -> None:
    model.set_logger(Logger(folder=None, output_formats=[log]))


def update_period(model: Any) -> int:
    """Env steps between checkpoints at the least: a PPO (or A2C) rollout, whose buffer a checkpoint does not
    hold; one step for the other agents, whose state between updates a checkpoint keeps whole."""
    return max(1, int(getattr(model, "n_steps", 1) or 1))


def _rng_state() -> dict[str, Any]:
    legacy = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [legacy[0], np.asarray(legacy[1]).tolist(), *[float(v) if isinstance(v, float) else int(v)
                                                                  for v in legacy[2:]]],
            "python": [version, list(internal), gauss]}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _wrapper_of(env: gym.Env[Any, Any], kind: type) -> Any:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, kind):
            return env
        env = env.env
    return None


def save_checkpoint(run_dir: Path, model: Any, run: OneRun, log: AgentLog, keep: int) -> Path:
    from agents.registry import save_agent

    inner: Any = run.unwrapped
    target = checkpoints.checkpoint_root(run_dir) / f"step_{len(run.steps) - 1}"
    detrend = _wrapper_of(run, DetrendedReward)
    space_rng = getattr(getattr(model, "action_space", None), "np_random", None)
    episode = {"env": inner.episode_state(), "obs": np.asarray(run.obs).tolist(),
               "steps": run.steps, "agent_log": log.rows, "num_timesteps": int(model.num_timesteps),
               "detrend": None if detrend is None else detrend.state_dict(),
               "pending": model.pending_steps() if hasattr(model, "pending_steps") else None,
               "action_space_rng": None if space_rng is None else space_rng.bit_generator.state}
    with atomic_path(target, folder=True) as staging:
        save_agent(model, staging / checkpoints.MODEL_FILE)
        if getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(staging / checkpoints.BUFFER_FILE)
        buffer = io.BytesIO()
        torch.save({"engine": inner.snapshot(), "rng": _rng_state()}, buffer)
        (staging / ENGINE_FILE).write_bytes(buffer.getvalue())
        (staging / EPISODE_FILE).write_text(json.dumps(episode))
        (staging / checkpoints.STATE_FILE).write_text(json.dumps({"num_timesteps": int(model.num_timesteps)}))
    checkpoints.prune(checkpoints.checkpoint_root(run_dir), keep)
    return target


def load_checkpoint(folder: Path, run: OneRun, log: AgentLog, device: str) -> Any:
    """The agent of ``folder`` on ``run``'s env, with the engine, episode, wrappers and RNGs as saved."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    venv = BaseAlgorithm._wrap_env(run, verbose=0, monitor_wrapper=True)
    model = checkpoints.load(folder, venv, device=device)
    hint = f"; delete {folder} to resume from the checkpoint before it"
    try:
        episode = json.loads((folder / EPISODE_FILE).read_text())
        saved = torch.load(io.BytesIO((folder / ENGINE_FILE).read_bytes()), weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError) as err:
        raise ValueError(f"{folder}: not a readable online checkpoint ({type(err).__name__}: {err}){hint}") from None
    # A real reset first, through every wrapper (Gymnasium's order check, SB3's Monitor and VecEnv want one);
    # the saved episode then replaces all that it set.
    venv.reset()
    run.unwrapped.resume_episode(episode["env"], saved["engine"])  # type: ignore[attr-defined]
    run.steps = episode["steps"]
    run.obs = np.asarray(episode["obs"], dtype=np.float32)
    run.info = {}
    detrend = _wrapper_of(run, DetrendedReward)
    if detrend is not None and episode["detrend"] is not None:
        detrend.load_state_dict(episode["detrend"])
    log.rows = list(episode["agent_log"])
    model.num_timesteps = int(episode["num_timesteps"])
    if hasattr(model, "_last_obs"):  # SB3 and REINFORCE continue the same episode from its last observation
        model._last_obs = run.obs[None, :]
        model._last_episode_starts = np.zeros((1,), dtype=bool)
    if episode["pending"] is not None:
        model.load_pending_steps(episode["pending"])
    if episode["action_space_rng"] is not None:
        model.action_space.np_random.bit_generator.state = episode["action_space_rng"]
    _set_rng_state(saved["rng"])  # last: loading the agent reseeded the global generators
    return model


def new_agent(cfg: RunConfig, name: str, run: OneRun) -> Any:
    from agents.registry import make_agent

    algo = online_algo(name)
    return make_agent(algo.agent, run, hyperparams=agent_hyperparams(cfg, name), preset=None, seed=cfg.run.seed,
                      device=cfg.agent.device)


def write_outputs(out_dir: Path, name: str, seed: int, run: OneRun, log: AgentLog,
                  metrics: Mapping[str, float] | None = None, wall_s: float = 0.0) -> EpisodeResult:
    """metrics.json, plots and TensorBoard of the run so far (rewritten whole, so a resume leaves no
    duplicate points); ``metrics`` are the final student's, once the run has ended."""
    steps = run.steps
    result = EpisodeResult(policy=f"online-{name}", seed=seed,
                           episode_return=float(sum(s["reward"] for s in steps[1:])), steps=steps,
                           metrics=dict(metrics or {}), wall_s=wall_s)
    write_json(out_dir / METRICS_FILE, {**result.summary(), "online": name, "complete": metrics is not None,
                                        "agent_log": log.rows})
    if metrics is not None:
        plots.weight_trajectories({result.policy: [steps]}, out_dir / "plots" / "weights.png")
        plots.validation_curves({result.policy: [steps]}, out_dir / "plots" / "validation.png")
    shutil.rmtree(out_dir / TB_DIR, ignore_errors=True)
    write_policy_run([result], out_dir / TB_DIR)
    with summary_writer(out_dir / TB_DIR / "agent") as writer:
        for row in log.rows:
            for tag, value in row.items():
                if tag != "step":
                    writer.add_scalar(tag, value, int(row["step"]))
    return result


def run_online(cfg: RunConfig, name: str, seed: int, out_dir: Path, resume: bool = False) -> EpisodeResult:
    """The online run ``name`` on engine seed ``seed`` in ``out_dir``: from its latest checkpoint when
    ``resume``. Writes the student, policy.zip (the agent at the end), metrics.json with every step's
    weights and rewards and the agent's log, plots and TensorBoard events (``tb/``, ``tb/agent``)."""
    check_online(cfg, name)
    require_kind(out_dir, "distill", "--out")
    start = time.perf_counter()
    played = replace(online_config(cfg, name), engine={"seed": seed})  # the settings it runs with
    with locked(out_dir):
        if not resume:
            # A new run in a folder that held one: its checkpoints must not pass for this run's.
            shutil.rmtree(checkpoints.checkpoint_root(out_dir), ignore_errors=True)
            write_run_info(out_dir, "distill")
            write_json(out_dir / ONLINE_FILE, {"online": name, "seed": seed})
            atomic_write_text(out_dir / CONFIG_FILE, played.to_yaml())
        checkpoints.clean_partial(out_dir)
        run = build_env(cfg, name, seed)
        log = AgentLog()
        latest = checkpoints.latest(out_dir) if resume else None
        model = (load_checkpoint(latest, run, log, cfg.agent.device) if latest is not None
                 else new_agent(cfg, name, run))
        attach_log(model, log)
        horizon = int(run.unwrapped.config.horizon)  # type: ignore[attr-defined]
        period = update_period(model)
        every = -(-cfg.online.checkpoint_every // period) * period
        try:
            while not run.ended:
                done = len(run.steps) - 1 if run.started else 0
                model.learn(min(every, horizon - done), callback=StopAtRunEnd(run),
                            reset_num_timesteps=not run.started, progress_bar=False)
                model.logger.dump(step=model.num_timesteps)  # what an agent records between its own dumps
                save_checkpoint(out_dir, model, run, log, cfg.run.keep_checkpoints)
                write_outputs(out_dir, name, seed, run, log)
            inner: Any = run.unwrapped
            metrics = {k: float(v) for k, v in inner.distiller.evaluate(generate=True, held_out=True).items()}
            metrics["student_updates"] = float(inner.episode_updates)
            inner.distiller.save_student(out_dir / STUDENT_DIR)
            from train.model_card import write_model_card

            write_model_card(out_dir / STUDENT_DIR, played, f"online-{name}",
                             f"arkd distill --online {name} --config config.yaml", run.steps, metrics)
            from agents.registry import save_agent

            save_agent(model, out_dir / POLICY_FILE)
            return write_outputs(out_dir, name, seed, run, log, metrics, time.perf_counter() - start)
        finally:
            run.close()

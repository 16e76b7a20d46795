"""Benchmark env steps per second through DummyVecEnv, SubprocVecEnv and arkd_env.vec.RayVecEnv.

Cases: 1, 2 and 4 sub-environments of
- ``toy``: an env whose step burns a fixed amount of *CPU time* (``--step-time`` seconds of process CPU time,
  default 0.2, like a distillation step on CPU) or sleeps (``--mode sleep``, like waiting on a GPU);
- the ARKD presets named with ``--presets`` (e.g. ``nano embedded``) when arkd_env.env is importable.

Reported per case: env steps/s (all envs together), the speedup of 2 (and 4) envs over 1, and the per-step
overhead of Ray over SubprocVecEnv in ms (time per vec step, Ray minus Subproc). The pure overhead is also
measured on a zero-work toy step (``--overhead-steps`` steps with 1 env). Targets from the ARKD issue,
on a 2-core machine: Ray with 2 envs >= 1.6x the steps/s of 1 env when a step takes >= 0.2 s, and Ray's
per-step overhead over SubprocVecEnv < 10 ms. Other jobs on the machine lower every number; the load
average is recorded with the results.

    python benchmarks/bench_vec.py                          # toy env, 0.2 s CPU steps
    python benchmarks/bench_vec.py --presets nano embedded  # also the ARKD presets
    python benchmarks/bench_vec.py --ray-address HOST:6379  # Ray envs on an existing cluster

Results: benchmarks/results/bench_vec.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

RESULTS = Path(__file__).parent / "results" / "bench_vec.json"
BACKENDS = ("dummy", "subproc", "ray")


class BusyEnv(gym.Env):
    """Each step costs `step_time` seconds: of process CPU time (mode "cpu") or of sleeping (mode "sleep")."""

    def __init__(self, step_time: float, mode: str, episode_length: int = 50) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (8,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.step_time, self.mode, self.episode_length = step_time, mode, episode_length
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(8, np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self.mode == "sleep":
            time.sleep(self.step_time)
        else:
            # CPU time, not wall time: a step is a fixed amount of work however busy the machine is.
            end = time.process_time() + self.step_time
            while time.process_time() < end:
                pass
        self._t += 1
        obs = np.full(8, float(np.clip(action, -1, 1)[0]), np.float32)
        return obs, 0.0, False, self._t >= self.episode_length, {}


def toy_factory(step_time: float, mode: str) -> Callable[[], gym.Env]:
    return lambda: BusyEnv(step_time, mode)


def preset_factory(preset: str) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        import torch

        import arkd_env  # registers arkd_env/Distill-v0 in whichever process builds the env

        torch.set_num_threads(1)  # one core per env, as Ray does with num_cpus_per_env=1
        assert arkd_env is not None
        return gym.make("arkd_env/Distill-v0", preset=preset)

    return make


def build(backend: str, env_fns: list[Callable[[], gym.Env]], cpus: int) -> Any:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if backend == "dummy":
        return DummyVecEnv(env_fns)
    if backend == "subproc":
        return SubprocVecEnv(env_fns)
    from arkd_env.vec import RayVecEnv

    # Each env asks for an equal share of the CPUs, at most one, so that 4 envs fit on 2 cores.
    return RayVecEnv(env_fns, num_cpus_per_env=min(1.0, cpus / len(env_fns)))


def time_steps(vec: Any, n_steps: int, warmup: int) -> float:
    """Wall seconds per vec step (median-free: total over n_steps, after `warmup` untimed steps)."""
    vec.reset()
    actions = np.zeros((vec.num_envs, 1), np.float32)
    for _ in range(warmup):
        vec.step(actions)
    start = time.perf_counter()
    for _ in range(n_steps):
        vec.step(actions)
    return (time.perf_counter() - start) / n_steps


def run_case(env: str, backend: str, n_envs: int, make: Callable[[], gym.Env], steps: int, cpus: int) -> dict:
    vec = build(backend, [make] * n_envs, cpus)
    try:
        per_step = time_steps(vec, steps, warmup=2)
    finally:
        vec.close()
    row = {
        "env": env,
        "backend": backend,
        "n_envs": n_envs,
        "steps": steps,
        "s_per_vec_step": per_step,
        "env_steps_per_s": n_envs / per_step,
    }
    print(
        f"  {env:>10} {backend:>8} n={n_envs}: {row['env_steps_per_s']:8.2f} env steps/s "
        f"({per_step * 1e3:8.2f} ms per vec step)",
        flush=True,
    )
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Speedups over 1 env and Ray's per-step overhead over SubprocVecEnv, per env and backend."""
    by_key = {(r["env"], r["backend"], r["n_envs"]): r for r in rows}
    for r in rows:
        one = by_key.get((r["env"], r["backend"], 1))
        r["speedup_vs_1_env"] = r["env_steps_per_s"] / one["env_steps_per_s"] if one else None
        sub = by_key.get((r["env"], "subproc", r["n_envs"]))
        r["overhead_vs_subproc_ms"] = (
            (r["s_per_vec_step"] - sub["s_per_vec_step"]) * 1e3 if sub and r["backend"] == "ray" else None
        )
    return rows


def markdown(rows: list[dict]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| env | backend | envs | env steps/s | ms / vec step | speedup vs 1 env | Ray − Subproc (ms/step) |",
        "|-----|---------|-----:|------------:|--------------:|-----------------:|------------------------:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['backend']} | {r['n_envs']} | {r['env_steps_per_s']:.2f} | "
            f"{r['s_per_vec_step'] * 1e3:.1f} | {fmt(r['speedup_vs_1_env'], '.2f')}× | "
            f"{fmt(r['overhead_vs_subproc_ms'], '+.1f')} |"
        )
    return "\n".join(lines)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def machine_parallelism(seconds: float = 1.0) -> float:
    """Speedup plain processes get from running 2 CPU-bound jobs at once (2.0 on 2 idle cores).

    Other jobs sharing the cores lower it; it bounds what any vec env can reach in the `cpu` mode.
    """
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [0.01, 0.01])  # start both workers before timing
        start = time.perf_counter()
        pool.map(_burn, [seconds])
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_burn, [seconds, seconds], chunksize=1)
        two = time.perf_counter() - start
    return 2 * one / two


def overhead(steps: int, cpus: int) -> dict[str, float]:
    """Pure round-trip cost per vec step (ms) of each backend, 1 env doing no work."""
    make = toy_factory(0.0, "sleep")
    out = {}
    for backend in BACKENDS:
        vec = build(backend, [make], cpus)
        try:
            out[backend] = time_steps(vec, steps, warmup=20) * 1e3
        finally:
            vec.close()
    out["ray_minus_subproc"] = out["ray"] - out["subproc"]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4], help="numbers of sub-envs")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--step-time", type=float, default=0.2, help="seconds per toy step (default 0.2)")
    parser.add_argument(
        "--mode", choices=("cpu", "sleep"), default="cpu", help="toy step burns CPU time (default) or sleeps"
    )
    parser.add_argument("--steps", type=int, default=8, help="timed vec steps per toy case (default 8)")
    parser.add_argument("--presets", nargs="*", default=[], help="ARKD presets to benchmark, e.g. nano embedded")
    parser.add_argument("--preset-steps", type=int, default=4, help="timed vec steps per preset case")
    parser.add_argument("--overhead-steps", type=int, default=200, help="vec steps of the zero-work case")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: local Ray)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()
    # Measured first, while nothing of ours runs: what 2 CPU-bound processes can gain on this machine now.
    plain_speedup = machine_parallelism()
    if "ray" in args.backends:
        from arkd_env.vec import init_ray

        resources = init_ray(args.ray_address, None if args.ray_address else cpus, log_to_driver=False)
        cpus = int(resources.get("CPU", cpus))
    cases: list[tuple[str, Callable[[], gym.Env], int]] = [
        (f"toy-{args.mode}-{args.step_time:g}s", toy_factory(args.step_time, args.mode), args.steps)
    ]
    if args.presets:
        if importlib.util.find_spec("arkd_env.env") is None:
            print("arkd_env.env is not importable: skipping --presets", flush=True)
        else:
            cases += [(preset, preset_factory(preset), args.preset_steps) for preset in args.presets]
    rows = [
        run_case(name, backend, n, make, steps, cpus)
        for name, make, steps in cases
        for backend in args.backends
        for n in args.envs
    ]
    summarise(rows)
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1_5_15": load_before,
            "plain_process_speedup_2_jobs": plain_speedup,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    if {"subproc", "ray"} <= set(args.backends) and args.overhead_steps > 0:
        result["zero_work_ms_per_vec_step"] = overhead(args.overhead_steps, cpus)
    result["machine"]["load_avg_after"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(rows))
    if "zero_work_ms_per_vec_step" in result:
        zw = result["zero_work_ms_per_vec_step"]
        print("\nZero-work step, 1 env (ms per vec step): " + ", ".join(f"{k} {v:.2f}" for k, v in zw.items()))
    load = result["machine"]
    print(f"\nLoad average before/after: {load['load_avg_1_5_15']} / {load['load_avg_after']}")
    print(f"Plain processes, 2 CPU-bound jobs vs 1: {load['plain_process_speedup_2_jobs']:.2f}x (machine's bound)")
    print(f"Wrote {args.output}")
    return result


if __name__ == "__main__":
    main()

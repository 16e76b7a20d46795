"""Share of a DistillEnv step's wall time spent outside the student updates.

    python benchmarks/bench_env.py [--preset embedded] [--steps 6]

"Inside" is the time of the optimizer updates themselves (`Distiller.train_steps` minus the observation
features it computes); "outside" is everything else an env step does: features, snapshot for fault recovery,
validation, reward and observation bookkeeping. Writes benchmarks/results/bench_env_<preset>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from arkd_env.env import DistillEnv


def _timed(store: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store[key] += time.perf_counter() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    env = DistillEnv(preset=args.preset, horizon=args.steps)
    times = {"train_steps": 0.0, "features": 0.0, "evaluate": 0.0}
    distiller = env.distiller
    distiller.train_steps = _timed(times, "train_steps", distiller.train_steps)  # type: ignore[method-assign]
    distiller.features = _timed(times, "features", distiller.features)  # type: ignore[method-assign]
    distiller.evaluate = _timed(times, "evaluate", distiller.evaluate)  # type: ignore[method-assign]
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))  # warm-up
    times.update(dict.fromkeys(times, 0.0))
    start = time.perf_counter()
    for _ in range(args.steps - 1):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    total = time.perf_counter() - start
    updates = times["train_steps"] - times["features"]
    result = {"preset": args.preset, "steps": args.steps - 1, "updates_per_step": env.config.updates_per_step,
              "seconds_per_step": total / (args.steps - 1), "share_outside_updates": 1 - updates / total,
              "share_evaluate": times["evaluate"] / total, "share_features": times["features"] / total}
    out = Path(__file__).parent / "results" / f"bench_env_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

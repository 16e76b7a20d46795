"""Train (or reuse) a preset's built teacher and report its quality and training time.

    python benchmarks/bench_teacher.py --preset embedded [--force]

Prints the wall time of `prepare`, the exact match of greedy answers on the deterministic tasks of the
validation split and the open-task metrics of sampled answers, and writes them to
benchmarks/results/bench_teacher_<preset>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from arkd_env.assets import models
from arkd_env.assets.build import prepare
from arkd_env.config import load_preset
from arkd_env.engine import Distiller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--force", action="store_true", help="retrain even when the teacher is cached")
    parser.add_argument("--n", type=int, default=400, help="validation examples generated")
    args = parser.parse_args()

    cfg = load_preset(args.preset).engine
    start = time.perf_counter()
    folder = prepare(cfg, force=args.force)
    prepare_seconds = time.perf_counter() - start
    distiller = Distiller.from_config(cfg)
    distiller.student = distiller.teacher  # score the teacher with the student's evaluation code
    distiller._student_head = distiller._teacher_head
    metrics = distiller.generation_metrics(args.n)
    result = {"preset": args.preset, "prepare_seconds": round(prepare_seconds, 1), "cache": str(folder),
              "teacher_parameters": models.count_parameters(distiller.teacher),
              "threads": torch.get_num_threads(), **metrics}
    out = Path(__file__).parent / "results" / f"bench_teacher_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

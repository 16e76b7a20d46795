"""Design probe of the keyed benchmark (docs/results/history.md, "design 1"): how well the teacher reproduces the true
answer distributions, and where constant weightings (by default pure FKL, pure RKL and α = 0.5) leave a
student after one episode's updates.

Not the headroom study: a look, on a few seeds, at whether a design has a trade-off worth measuring, and at
how far apart two nearly equal weightings end (``--pair``: the same-seed perturbation noise σ). Each seed's
student (warm-started when the preset says so, ``engine.student.pretrain_steps``) starts from the same state
for every weighting, so rows of one seed are paired.

    python benchmarks/probe_keyed.py --seeds 300 301 --set engine.student.pretrain_steps=0
    python benchmarks/probe_keyed.py --seeds $(seq 400 419) --alphas 0.7 0.72 --pair 0.7 0.72 --workers 2 \
        --out runs/probe/noise.json
    python benchmarks/probe_keyed.py --instances train-k4-w16 train-k32-w24 --alphas 0 0.5 1

``--instances`` names instances of the shipped ``keyed`` instance set (arkd_env/configs/instances/): each is
probed on every seed, with its own student and keys and the preset's one teacher.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from typing import Any

import torch

from arkd_env.assets.data import keyed_spec
from arkd_env.assets.keyed import keyed_prompts
from arkd_env.atomic import atomic_write_text
from arkd_env.config import load_preset
from arkd_env.engine import Distiller
from arkd_env.eval.answers import AnswerSet, answer_scores, as_metrics
from arkd_env.eval.stats import paired_difference_ci, sample_std
from arkd_env.instances import shipped_instance_set

COLUMNS = ("val_score", "val_validity", "val_head_recall", "val_tail_recall", "val_exact_kl", "exact_match")


def _label(alpha: float) -> str:
    return f"α={alpha:g}"


def parse_schedule(text: str) -> tuple[float, float, float]:
    """``"A/B@F"``: α = A for the first fraction F of the updates, then B."""
    try:
        alphas, fraction = text.split("@")
        first, second = (float(a) for a in alphas.split("/"))
        share = float(fraction)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--schedules {text!r}: expected A/B@F, e.g. 1/0@0.75") from None
    if not (0 <= first <= 1 and 0 <= second <= 1 and 0 < share < 1):
        raise argparse.ArgumentTypeError(f"--schedules {text!r}: A and B must lie in [0, 1], F in (0, 1)")
    return first, second, share


def _schedule_label(schedule: tuple[float, float, float]) -> str:
    return f"α={schedule[0]:g}→{schedule[1]:g}@{schedule[2]:g}"


def _build(preset: str, overrides: list[str], instance: str | None = None) -> tuple[Any, Distiller]:
    cfg = load_preset(preset, overrides).engine
    if instance is not None:
        cfg = shipped_instance_set().get(instance).apply(cfg)
    return cfg, Distiller.from_config(cfg)


Job = tuple[str, list[str], str | None, int, list[float], list[tuple[float, float, float]]]


def _run_seed(job: Job) -> list[dict[str, Any]]:
    """Every weighting of one seed, from that seed's initial student; one row per weighting, "start" first.
    A schedule spends the same ``total_updates`` as a constant, in two phases."""
    preset, overrides, instance, seed, alphas, schedules = job
    cfg, distiller = _build(preset, overrides, instance)
    initial = distiller.initial_state(seed)
    plans: list[tuple[str, list[tuple[float, int]]]] = [("start", [])]
    plans += [(_label(a), [(a, cfg.total_updates)]) for a in alphas]
    for schedule in schedules:
        first = round(schedule[2] * cfg.total_updates)
        plans.append((_schedule_label(schedule), [(schedule[0], first), (schedule[1], cfg.total_updates - first)]))
    rows = []
    for label, phases in plans:
        distiller.restore(initial)
        began = time.perf_counter()
        for alpha, updates in phases:
            distiller.train_steps({"fkl": alpha, "rkl": 1.0 - alpha}, updates)
        metrics = distiller.evaluate(generate=True)
        rows.append({"instance": instance, "seed": seed, "policy": label,
                     "seconds": time.perf_counter() - began, **{c: metrics.get(c) for c in COLUMNS}})
    return rows


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cells = ["–" if row[c] is None else f"{row[c]:.3f}" for c in COLUMNS]
        print(f"| {row['instance'] or '-'} | {row['seed']} | {row['policy']} | " + " | ".join(cells)
              + f" | {row['seconds']:.0f} |", flush=True)


def _print_pair(rows: list[dict[str, Any]], first: str, second: str) -> None:
    """Per metric: mean and std over runs (instance × seed) of (first - second), and its paired 95% interval."""
    by = {(r["instance"] or "", r["seed"], r["policy"]): r for r in rows}
    seeds = sorted({(r["instance"] or "", r["seed"]) for r in rows})
    print(f"\npaired {first} − {second} over {len(seeds)} runs:", flush=True)
    for column in COLUMNS:
        a = [by[(*s, first)][column] for s in seeds]
        b = [by[(*s, second)][column] for s in seeds]
        if any(v is None for v in a + b):
            continue
        interval = paired_difference_ci(a, b)
        spread = sample_std([x - y for x, y in zip(a, b, strict=True)])
        print(f"  {column}: mean {interval.estimate:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}] "
              f"({interval.method}), std of the differences {spread:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="keyed")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="engine.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 301])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.0, 0.5],
                        help="constant FKL shares α to train with (α·FKL + (1-α)·RKL)")
    parser.add_argument("--schedules", type=parse_schedule, nargs="+", default=[], metavar="A/B@F",
                        help="two-phase weightings: α = A for the first fraction F of the updates, then B")
    parser.add_argument("--pair", type=float, nargs=2, metavar=("A", "B"), action="append", default=[],
                        help="two of --alphas whose paired differences to summarise (repeatable)")
    parser.add_argument("--pair-schedule", nargs=2, metavar=("A/B@F", "ALPHA"), action="append", default=[],
                        help="a schedule of --schedules against a constant of --alphas, paired (repeatable)")
    parser.add_argument("--instances", nargs="+", default=[None],
                        help="instances of the shipped keyed set to probe (default: the preset's own task)")
    parser.add_argument("--workers", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--out", help="write every row, and the resolved overrides, to this JSON file")
    args = parser.parse_args(argv)
    for pair in args.pair:
        if not set(pair) <= set(args.alphas):
            parser.error(f"--pair {pair[0]:g} {pair[1]:g}: both must be among --alphas")
    schedule_pairs = []
    for text, alpha in args.pair_schedule:
        schedule, constant = parse_schedule(text), float(alpha)
        if schedule not in args.schedules or constant not in args.alphas:
            parser.error(f"--pair-schedule {text} {alpha}: the schedule must be among --schedules and the "
                         f"constant among --alphas")
        schedule_pairs.append((_schedule_label(schedule), _label(constant)))

    start = time.perf_counter()
    # The parent builds (and caches) the teacher once, so workers only load it.
    cfg, distiller = _build(args.preset, args.overrides)
    answers = AnswerSet.build(keyed_prompts(keyed_spec(cfg.data)), distiller.tokenizer, cfg.data,
                              cfg.eval_batch_size)
    teacher = as_metrics(answer_scores(distiller.teacher, answers, distiller.vocab_size, distiller.device,
                                       beta=cfg.data.keyed.score_beta))
    del distiller
    print(f"built in {time.perf_counter() - start:.0f} s; teacher, on every key of the layout: "
          + ", ".join(f"{k} {v:.3f}" for k, v in teacher.items()), flush=True)
    print("| instance | seed | policy | " + " | ".join(COLUMNS) + " | s |", flush=True)
    print("|" + "---|" * (len(COLUMNS) + 4), flush=True)
    jobs: list[Job] = [(args.preset, args.overrides, instance, seed, args.alphas, args.schedules)
            for instance in args.instances for seed in args.seeds]
    rows: list[dict[str, Any]] = []
    if args.workers > 1:
        # One thread per worker: with a worker per core, more threads per process only contend.
        with multiprocessing.get_context("spawn").Pool(args.workers, torch.set_num_threads, (1,)) as pool:
            for seed_rows in pool.imap(_run_seed, jobs):
                _print_rows(seed_rows)
                rows += seed_rows
    else:
        for job in jobs:
            seed_rows = _run_seed(job)
            _print_rows(seed_rows)
            rows += seed_rows
    for first, second in [(_label(a), _label(b)) for a, b in args.pair] + schedule_pairs:
        _print_pair(rows, first, second)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps({"preset": args.preset, "overrides": args.overrides,
                                                "instances": args.instances, "teacher": teacher, "rows": rows},
                                               indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

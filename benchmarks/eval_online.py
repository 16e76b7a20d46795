"""Online agents against fixed and heuristic weightings, on paired engine seeds fixed before any run.

    python benchmarks/eval_online.py [--preset nano] [--seeds 300-319] [--report docs/results/online.md]

Every policy runs once per engine seed from the same initial student and data order (`arkd distill` for the
baselines, `arkd distill --online` for the agents) with the preset's env as configured. The final students are
scored on the held-out test examples (`test_*`), which no reward or probe saw. With an instance set
(`env.instances`), every test instance is played on every seed (`env.instance`), and these are the pairs;
the preset's own policies (`run.policies`) join the constants. Each finished run is kept under
`WORK/runs/` and read back (the online ones in their own folders, read back once complete and resumed from
their checkpoints before), so a killed invocation given the same `--work` continues where it stopped, and
invocations on disjoint seeds can share one `--work` and be reported together by one on all of them. The
report has one row per policy: mean ± std over seeds, `student_updates` (every update a run made, probes and lookaheads
included, which is where greedy and the relative reward pay), the paired differences against `fixed:0.5`,
the best constant and `greedy` (95% BCa bootstrap intervals by default, `--interval`), and the α trajectory of
each online agent, as the mean FKL share per step over seeds.

"The best constant" here is the best of the constants (`fkl`, `rkl`, `fixed:A`) *on these evaluation seeds*
(by the keyed benchmark's `val_score` where the runs have it, else the held-out divergence): an oracle choice
that favours the constant. An agent trained across episodes (`arkd train`) enters with
`--episodic RUN_DIR/policy.zip`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from arkd_env.atomic import atomic_write_text  # noqa: E402
from arkd_env.eval.direction import direction  # noqa: E402
from arkd_env.eval.stats import METHODS, SMALL_SAMPLE  # noqa: E402
from arkd_env.instances import instance_set_from  # noqa: E402
from train.compare import build_table, unique_labels  # noqa: E402
from train.config import RunConfig, load_run_config, replace  # noqa: E402
from train.episode import EpisodeResult, play  # noqa: E402
from train.online import run_online  # noqa: E402
from train.runs import sanitize  # noqa: E402

CONSTANTS = ("fkl", "rkl", "fixed:0.25", "fixed:0.5", "fixed:0.75")
HEURISTICS = ("akl", "greedy")
# name -> extra config the agent needs (the bandit chooses among the grid of α)
ONLINE: dict[str, dict[str, Any]] = {"online-bandit": {"action_mode": "grid"}, "online-reinforce": {},
                                     "online-ppo": {}, "online-sac": {}, "online-prototype": {}}
REFERENCE = "fixed:0.5"
DEFAULT_SEEDS = "300-319"  # chosen before any run of this script; no earlier result used them
# Held-out divergences where the preset holds test examples out (else the validation ones), then the
# generation and exact metrics (of the held-out prompts when there are any) and the cost.
SHOWN = ("test_divergence", "test_fkl", "test_rkl", "val_divergence", "val_score", "rouge_l", "exact_match",
         "tail_coverage", "student_updates")


def parse_seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        low, high = (int(v) for v in text.split("-"))
        return list(range(low, high + 1))
    return [int(v) for v in text.split(",") if v.strip()]


def finished_online(out: Path, algo: str, seed: int) -> EpisodeResult | None:
    """The result of a finished online run in ``out`` (its metrics.json once complete), else None. Resuming a
    finished run would evaluate and save its student again."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    if not kept.get("complete"):
        return None
    if (kept.get("online"), kept.get("seed")) != (algo, seed):
        raise SystemExit(f"{path}: a run of online {kept.get('online')!r} on seed {kept.get('seed')}, not of "
                         f"{algo!r} on seed {seed}; give eval_online another --work")
    metrics = dict(kept["metrics"])
    episode_return = metrics.pop("episode_return")
    return EpisodeResult(policy=kept["policy"], seed=seed, episode_return=episode_return, steps=kept["steps"],
                         metrics=metrics, wall_s=kept["wall_s"])


def online_result(cfg: RunConfig, name: str, seed: int, out: Path) -> EpisodeResult:
    algo = name.removeprefix("online-")
    finished = finished_online(out, algo, seed)
    if finished is not None:
        return finished
    # The agent's own seed follows the engine seed, so the results average over its exploration too.
    played = replace(cfg, env=ONLINE[name], run={"seed": seed})
    out.mkdir(parents=True, exist_ok=True)
    return run_online(played, algo, seed, out, resume=(out / "online.json").is_file())


def played_result(cfg: RunConfig, spec: str, seed: int, path: Path) -> EpisodeResult:
    """One episode of ``spec``, read back from ``path`` when an earlier (killed) invocation finished it."""
    if path.is_file():
        return EpisodeResult(**json.loads(path.read_text()))
    result = play(cfg, spec, seed)[0]
    atomic_write_text(path, json.dumps(dataclasses.asdict(result), default=float))
    return result


def paired_runs(cfg: RunConfig, seeds: list[int]) -> list[tuple[str | None, int, RunConfig]]:
    """Every (test instance, engine seed) pair with the config that poses it (``env.instance``: only that one
    when the config pins it); the preset's own task on each seed without an instance set."""
    if cfg.env.instances is None:
        return [(None, seed, cfg) for seed in seeds]
    names = [cfg.env.instance] if cfg.env.instance else instance_set_from(cfg.env.instances).names("test")
    return [(name, seed, replace(cfg, env={"instance": name})) for name in names for seed in seeds]


def baselines(cfg: RunConfig) -> list[str]:
    """The constants and heuristics, then the preset's own reference policies (``run.policies``)."""
    return list(dict.fromkeys([*CONSTANTS, *HEURISTICS, *cfg.run.policies]))


def primary_metric(run: dict[str, float]) -> str:
    """What the best constant is chosen by: the keyed benchmark's exact score where the runs have it, else the
    held-out divergence (the validation one where the preset holds no test examples out)."""
    for name in ("val_score", "test_divergence"):
        if name in run:
            return name
    return "val_divergence"


def best_constant(metrics: dict[str, list[dict[str, float]]], primary: str) -> str:
    """The played constant of :data:`CONSTANTS` with the best mean ``primary`` (higher or lower, as the metric
    ranks)."""
    sign = direction(primary)
    played = [c for c in CONSTANTS if c in metrics]  # all of them unless some were skipped
    return max(played, key=lambda c: sign * float(np.nanmean([m[primary] for m in metrics[c]])))


def fkl_share(step: dict[str, Any]) -> float:
    weights = step.get("weights", {})
    total = weights.get("fkl", 0.0) + weights.get("rkl", 0.0)
    return weights.get("fkl", 0.0) / total if total > 0 else math.nan


def trajectories(runs: dict[str, list[EpisodeResult]]) -> str:
    lines = ["| agent | mean FKL share per step (over seeds) |", "|---|---|"]
    for name, results in runs.items():
        if name.startswith("online-"):
            shares = np.array([[fkl_share(s) for s in r.steps[1:]] for r in results])
            lines.append(f"| {name} | {' '.join(f'{v:.2f}' for v in np.nanmean(shares, axis=0))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help="engine seeds: 300-319 or 300,301,...")
    parser.add_argument("--skip", action="append", default=[], metavar="POLICY",
                        help="leave a baseline or online agent out (repeatable; the report's command names it), "
                        "e.g. to fit a time budget: say so where the report is used")
    parser.add_argument("--episodic", action="append", default=[], metavar="POLICY_ZIP",
                        help="an agent trained across episodes (arkd train), played as a fixed policy")
    parser.add_argument("--work", default=None, help="folder of the runs (default runs/eval_online/<time>)")
    parser.add_argument("--report", default=None, help="Markdown report (default WORK/report.md)")
    parser.add_argument("--interval", default="bca", choices=METHODS,
                        help="the paired differences' intervals (default: the BCa bootstrap; auto: Student t "
                        f"below {SMALL_SAMPLE} pairs, percentile bootstrap above)")
    args = parser.parse_args()

    seeds = parse_seeds(args.seeds)
    cfg = load_run_config(args.preset, None, args.overrides)
    choices = [*baselines(cfg), *ONLINE]
    for skipped in args.skip:
        if skipped == REFERENCE:
            parser.error(f"--skip {REFERENCE}: the reference cannot be skipped, every difference needs it")
        if skipped not in choices:
            parser.error(f"--skip {skipped}: not a baseline or online agent of preset {args.preset!r} "
                         f"(choose from {', '.join(choices)})")
    work = Path(args.work or REPO / "runs" / "eval_online" / time.strftime("%Y%m%d-%H%M%S"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = paired_runs(cfg, seeds)
    start = time.perf_counter()
    runs: dict[str, list[EpisodeResult]] = {}
    specs = [*(s for s in baselines(cfg) if s not in args.skip), *args.episodic]
    for spec, name in zip(specs, unique_labels(specs), strict=True):
        folder = work / "runs" / sanitize(name)
        runs[name] = [played_result(played, spec, seed, folder / f"{where or 'task'}_{seed}.json")
                      for where, seed, played in pairs]
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    for name in (n for n in ONLINE if n not in args.skip):
        runs[name] = [online_result(played, name, seed, work / name / (where or "task") / f"seed_{seed}")
                      for where, seed, played in pairs]
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    metrics = {name: [r.metrics for r in results] for name, results in runs.items()}
    primary = primary_metric(metrics[REFERENCE][0])
    best = best_constant(metrics, primary)
    # greedy is the reference a learned policy has to beat at its own cost (6× the updates here)
    references = [r for r in dict.fromkeys([REFERENCE, best, "greedy"]) if r in metrics]
    table = build_table(metrics, [seed for _, seed, _ in pairs], references=references, method=args.interval)
    held_out = "test_divergence" in table.metrics  # then the validation divergence would only repeat it
    shown = [m for m in SHOWN if m in table.metrics and not (m == "val_divergence" and held_out)]
    wall = time.perf_counter() - start
    span = f"{seeds[0]}-{seeds[-1]}"
    where = (f"{len(pairs)} paired runs: every test instance of `{cfg.env.instances}` on engine seeds {span}"
             if cfg.env.instances else f"{len(seeds)} paired engine seeds {span}")
    report = (f"# Online agents on `{args.preset}` ({where})\n\n"
              f"Command: `python benchmarks/eval_online.py --preset {args.preset} --seeds {args.seeds}"
              + "".join(f" --set {o}" for o in args.overrides)
              + "".join(f" --skip {p}" for p in args.skip)
              + "".join(f" --episodic {p}" for p in args.episodic)
              + (f" --interval {args.interval}" if args.interval != "bca" else "") + "`; "
              f"{wall:.0f} s. Best constant on these seeds (oracle, by mean {primary}): `{best}`.\n\n"
              + table.markdown(shown) + "\n\n" + trajectories(runs) + "\n")
    target = Path(args.report) if args.report else work / "report.md"
    atomic_write_text(target, report)
    atomic_write_text(work / "metrics.json", json.dumps(metrics, default=float))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

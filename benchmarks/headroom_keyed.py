"""The headroom study of the keyed benchmark (issue 22, item 6): can weighting policies be told apart on it, and
how much could a policy that reacts to the instance or to the run gain over the best constant weighting?

    python benchmarks/headroom_keyed.py --out runs/headroom [--workers 2]

Everything is decided before it is run. The seeds and the instance set are fixed below and in
``arkd_env/configs/instances/`` (dated files), and nothing here is chosen after seeing a test result, except
the per-instance oracle, which is tuned on the test runs on purpose and flagged so.

1. **Tune** on the *training* instances × ``TUNE_SEEDS``: every constant α of ``--alphas`` and every open-loop
   schedule of ``--schedules``. The best constant and the best schedule are those of the highest mean
   final score (``val_score``) over these runs. The **instance-aware constant** reads one instance feature
   of the observation (``--instance-feature``, default the score's beta) and plays, linearly between the
   training instances' values of it, each training instance's own best constant (a ``by-feature`` spec,
   agents/baselines.py): the reference for a policy that reacts to the instance, tuned on training only.
2. **Test** on the *test* instances × ``EVAL_SEEDS``, every run paired (same instance, same engine seed, so
   the same initial student and data order): ``fkl``, ``rkl``, the best constant, its neighbour 0.02 away
   (the perturbation pair), the best schedule, the instance-aware constant, and every constant of
   ``--alphas`` again, from which each test instance's own best constant is picked (the **per-instance
   oracle**: tuned on test, an upper reference for a policy that recognises the instance, never a result).
3. **Report** (``report.md`` and ``report.json`` in ``--out``; the references' specs in ``references.json``):
   - σ, the same-seed perturbation noise: the standard deviation over runs of score(best) − score(best ± 0.02);
   - FKL against RKL on validity mass and tail recall: paired 95% intervals (which should exclude 0 in
     opposite directions: FKL less valid, RKL less of the tail);
   - the headroom, the better of the two dynamic references tuned on training (best schedule, instance-aware
     constant) minus the best constant: a paired 95% interval, and its size in units of σ (the issue asks
     for ≥ 3σ); the per-instance oracle minus the best constant beside it, as the ceiling of reacting to the
     instance.

There is no oracle *within* a run: nothing in this construction tells which α is best at a given point of it.

Each run is one episode of ``DistillEnv`` with ``env.instances`` set, played by the policy's ``arkd compare``
spec; its final metrics go to ``<out>/runs/<stage>/<instance>/seed_<s>/<spec>.json`` as it finishes, and a
rerun skips every file already there, so a killed study resumes. Intervals are Student t intervals below 30
pairs (``arkd_env.eval.stats``); with fewer than about 10 pairs read them as descriptive.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from arkd_env.atomic import atomic_write_text
from arkd_env.config import load_preset
from arkd_env.eval.stats import paired_difference_ci, sample_std
from arkd_env.instances import FEATURE_NAMES, InstanceSet, instance_set_from
from train.runs import sanitize

# Fixed on 2026-12-02, before any agent was trained and before any test run: tuning draws from env.train_seeds
# of the keyed preset (0-15), the test seeds are the preset's evaluation range (run.eval_seeds starts at 100).
TUNE_SEEDS = (0, 1)
EVAL_SEEDS = (100, 101, 102, 103, 104)
ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Open-loop schedules: from mean-seeking to mode-seeking and back, straight or in two halves.
SCHEDULES = ("linear:1->0.5", "linear:1->0.2", "linear:0.5->1", "linear:0.2->1", "phases:1/0.5", "phases:0.5/1",
             "phases:1/0.2", "phases:0.2/1", "cosine")
PERTURBATION = 0.02
SCORE = "val_score"
INSTANCE_FEATURE = "log_score_beta"  # of arkd_env.instances.FEATURE_NAMES
METRICS = (SCORE, "val_validity", "val_head_recall", "val_tail_recall", "val_exact_kl", "exact_match")

Job = tuple[str, list[str], str, str, int, list[str]]  # preset, overrides, instances, instance, seed, specs
_ENVS: dict[str, Any] = {}  # one env per worker process and configuration, reused by every job it runs


def _env(preset: str, overrides: list[str], instances: str, spec: str) -> Any:
    """The env ``spec`` is played in: a saved agent's own observations and actions (its run's action mode and
    α grid, train/episode.py), the preset's reward, so that no run pays for a training reward's probes."""
    from arkd_env.env import DistillEnv
    from train.episode import env_overrides

    own = env_overrides(spec)
    key = json.dumps([preset, overrides, instances, own], sort_keys=True)
    if key not in _ENVS:
        cfg = load_preset(preset, overrides)
        env_config = dataclasses.replace(cfg.env, instances=instances, train_seeds=[], **own)
        _ENVS[key] = DistillEnv(preset=preset, engine=cfg.engine, env_config=env_config)
    return _ENVS[key]


def run_path(out: Path, stage: str, instance: str, seed: int, spec: str) -> Path:
    name = sanitize(spec)
    if len(spec) > 64:
        # sanitize() cuts at 80 characters: a digest keeps long by-feature specs, which differ in their tails,
        # apart.
        name = f"{name[:48]}-{hashlib.sha1(spec.encode()).hexdigest()[:12]}"
    return out / "runs" / stage / instance / f"seed_{seed}" / f"{name}.json"


def play(job: Job) -> list[dict[str, Any]]:
    """Every spec of one (instance, seed), from that run's one initial student."""
    from train.episode import load_policy, run_episode

    preset, overrides, instances, instance, seed, specs = job
    rows = []
    for spec in specs:
        env = _env(preset, overrides, instances, spec)
        result = run_episode(load_policy(spec, env), env, spec, seed,
                             options={"instance": instance, "engine_seed": seed})
        alphas = [step["weights"].get("fkl") for step in result.steps[1:]]
        rows.append({"spec": spec, "instance": instance, "seed": seed, "wall_s": result.wall_s,
                     "alphas": alphas, **{m: result.metrics.get(m) for m in METRICS}})
    return rows


def run_stage(out: Path, stage: str, jobs: list[Job], workers: int) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Every (spec, instance, seed) of ``jobs``: read back when its file holds that run, else played and
    written. A file of another spec (two names that sanitize alike) is replayed, not trusted; the files are not
    keyed by the preset or the instance's contents, so a changed design needs a new ``--out``."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        *head, instance, seed, specs = job
        missing = []
        for spec in specs:
            path = run_path(out, stage, instance, seed, spec)
            row = json.loads(path.read_text()) if path.is_file() else None
            if row is not None and row.get("spec") == spec:
                done[spec, instance, seed] = row
            else:
                missing.append(spec)
        if missing:
            todo.append((*head, instance, seed, missing))  # type: ignore[arg-type]
    print(f"{stage}: {sum(len(j[-1]) for j in todo)} runs to play, {len(done)} already done", flush=True)

    def record(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            atomic_write_text(run_path(out, stage, row["instance"], row["seed"], row["spec"]), json.dumps(row))
            done[row["spec"], row["instance"], row["seed"]] = row
            print(f"  {stage} {row['instance']} seed {row['seed']} {row['spec']}: {SCORE} {row[SCORE]:.3f} "
                  f"({row['wall_s']:.0f} s)", flush=True)

    if workers > 1 and len(todo) > 1:
        # One thread per worker: with a worker per core, more threads per process only contend.
        with multiprocessing.get_context("spawn").Pool(workers, torch.set_num_threads, (1,)) as pool:
            for rows in pool.imap_unordered(play, todo):
                record(rows)
    else:
        for job in todo:
            record(play(job))
    return done


def mean_score(done: dict[tuple[str, str, int], dict[str, Any]], spec: str, runs: Sequence[tuple[str, int]]) -> float:
    return sum(done[spec, i, s][SCORE] for i, s in runs) / len(runs)


def best(done: dict[tuple[str, str, int], dict[str, Any]], specs: Sequence[str],
         runs: Sequence[tuple[str, int]]) -> str:
    """The spec of the highest mean score over ``runs`` (the first of a tie, in the given order)."""
    return max(specs, key=lambda spec: mean_score(done, spec, runs))


def constant(alpha: float) -> str:
    return f"fixed:{alpha:g}"


def neighbour(alpha: float) -> float:
    """The perturbed weighting: 0.02 above, or below when that would leave [0, 1]."""
    return round(alpha + PERTURBATION if alpha + PERTURBATION <= 1.0 else alpha - PERTURBATION, 6)


def paired(done: dict[tuple[str, str, int], dict[str, Any]], a: str, b: str, metric: str,
           runs: Sequence[tuple[str, int]]) -> dict[str, Any]:
    first = [done[a, i, s][metric] for i, s in runs]
    second = [done[b, i, s][metric] for i, s in runs]
    interval = paired_difference_ci(first, second)
    return {"a": a, "b": b, "metric": metric, "mean": interval.estimate, "low": interval.low,
            "high": interval.high, "n": interval.n, "method": interval.method,
            "std": sample_std([x - y for x, y in zip(first, second, strict=True)])}


def instance_aware(done: dict[tuple[str, str, int], dict[str, Any]], alphas: Sequence[float],
                   runs: Sequence[tuple[str, int]], instances: InstanceSet, feature: str) -> str:
    """The ``by-feature`` spec that plays, at each training instance's value of ``feature``, that instance's
    best constant on its tuning runs (linearly between them; instances of one value share the mean α)."""
    column = FEATURE_NAMES.index(feature)
    chosen: dict[float, list[float]] = {}
    for name in sorted({i for i, _ in runs}):
        spec = best(done, [constant(a) for a in alphas], [r for r in runs if r[0] == name])
        x = round(instances.get(name).features()[column], 6)
        chosen.setdefault(x, []).append(float(spec.removeprefix("fixed:")))
    points = "/".join(f"{x:g}={round(sum(a) / len(a), 6):g}" for x, a in sorted(chosen.items()))
    return f"by-feature:instance_{feature}:{points}"


def oracle_scores(done: dict[tuple[str, str, int], dict[str, Any]], alphas: Sequence[float],
                  runs: Sequence[tuple[str, int]]) -> tuple[dict[str, str], dict[tuple[str, int], float]]:
    """Each test instance's best constant on its own test runs, and the score it reaches on each run."""
    instances = sorted({i for i, _ in runs})
    chosen = {i: best(done, [constant(a) for a in alphas], [r for r in runs if r[0] == i]) for i in instances}
    return chosen, {(i, s): done[chosen[i], i, s][SCORE] for i, s in runs}


def report(done: dict[tuple[str, str, int], dict[str, Any]], tuned: dict[str, Any], alphas: Sequence[float],
           runs: Sequence[tuple[str, int]]) -> dict[str, Any]:
    best_constant, perturbed, schedule = tuned["constant"], tuned["perturbed"], tuned["schedule"]
    noise = paired(done, best_constant, perturbed, SCORE, runs)
    chosen, oracle = oracle_scores(done, alphas, runs)
    base = [done[best_constant, i, s][SCORE] for i, s in runs]
    oracle_gain = paired_difference_ci([oracle[r] for r in runs], base)
    dynamic = {"schedule": paired(done, schedule, best_constant, SCORE, runs),
               "instance-aware constant": paired(done, tuned["instance_aware"], best_constant, SCORE, runs)}
    top = max(dynamic, key=lambda k: dynamic[k]["mean"])
    sigma = noise["std"]
    return {"tuned": tuned, "noise": noise, "sigma": sigma,
            "fkl_vs_rkl": [paired(done, "fkl", "rkl", m, runs) for m in ("val_validity", "val_tail_recall")],
            "dynamic": dynamic, "best_dynamic": top,
            "oracle": {"mean": oracle_gain.estimate, "low": oracle_gain.low, "high": oracle_gain.high,
                       "n": oracle_gain.n, "method": oracle_gain.method, "chosen": chosen},
            "headroom": dynamic[top]["mean"], "headroom_in_sigma": dynamic[top]["mean"] / sigma if sigma else None,
            "means": {spec: mean_score(done, spec, runs) for spec in sorted({k[0] for k in done})
                      if all((spec, i, s) in done for i, s in runs)}}


def agent_rows(done: dict[tuple[str, str, int], dict[str, Any]], agent: str, result: dict[str, Any],
               runs: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """A learned policy against the best constant and the best dynamic reference, and the share of the
    headroom (the mean gain over the best constant, over the best dynamic reference's) it recovers."""
    reference = result["dynamic"][result["best_dynamic"]]["a"]  # the spec that row paired with the constant
    gain = paired(done, agent, result["tuned"]["constant"], SCORE, runs)
    return {"vs best constant": gain, "vs best dynamic": paired(done, agent, reference, SCORE, runs),
            "headroom share": gain["mean"] / result["headroom"] if result["headroom"] > 0 else None,
            "alphas": [done[agent, i, s]["alphas"] for i, s in runs]}


def plot_alphas(done: dict[tuple[str, str, int], dict[str, Any]], result: dict[str, Any],
                runs: Sequence[tuple[str, int]], folder: Path) -> None:
    """One figure per test instance: α per env step of every agent beside the references tuned on training."""
    from train.plots import weight_trajectories

    tuned = result["tuned"]
    names = {tuned["constant"]: f"best constant ({tuned['constant']})",
             tuned["schedule"]: f"best schedule ({tuned['schedule']})",
             tuned["instance_aware"]: "instance-aware constant", **{a: a for a in result["agents"]}}
    for instance in sorted({i for i, _ in runs}):
        seeds = [s for i, s in runs if i == instance]
        episodes = {label: [[{"step": k + 1, "weights": {"fkl": a, "rkl": 1.0 - a}}
                             for k, a in enumerate(done[spec, instance, s]["alphas"])] for s in seeds]
                    for spec, label in names.items()}
        weight_trajectories(episodes, folder / f"alphas_{instance}.png")


def markdown(result: dict[str, Any], command: str) -> str:
    def cell(row: dict[str, Any]) -> str:
        return f"{row['mean']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}] ({row['method']}, n={row['n']})"

    tuned = result["tuned"]
    lines = [f"# Keyed benchmark headroom\n\n`{command}`\n",
             f"- best constant on the training instances: `{tuned['constant']}` (mean score "
             f"{tuned['constant_score']:.4f}); best schedule: `{tuned['schedule']}` ({tuned['schedule_score']:.4f})",
             f"- σ (std over test runs of score({tuned['constant']}) − score({tuned['perturbed']})): "
             f"{result['sigma']:.4f}; mean difference {cell(result['noise'])}"]
    for row in result["fkl_vs_rkl"]:
        lines.append(f"- fkl − rkl on {row['metric']}: {cell(row)}")
    lines.append(f"- instance-aware constant (tuned on the training instances): `{tuned['instance_aware']}`")
    for name, row in result["dynamic"].items():
        lines.append(f"- {name} − best constant on {SCORE}: {cell(row)}")
    ratio = result["headroom_in_sigma"]
    lines.append(f"- headroom ({result['best_dynamic']}): {result['headroom']:+.4f} = "
                 + (f"{ratio:.2f} σ" if ratio is not None else "σ is 0") + " (the issue asks for ≥ 3σ)")
    oracle = result["oracle"]
    lines.append(f"- per-instance oracle (tuned on test, a ceiling, never a result) − best constant: {cell(oracle)}; "
                 + ", ".join(f"{i}: `{spec}`" for i, spec in oracle["chosen"].items()))
    for agent, row in result.get("agents", {}).items():
        share = row["headroom share"]
        lines.append(f"- `{agent}` − best constant: {cell(row['vs best constant'])}; − {result['best_dynamic']}: "
                     f"{cell(row['vs best dynamic'])}; share of the headroom recovered: "
                     + (f"{share:.0%}" if share is not None else "no headroom to recover"))
    lines += ["", "| policy | mean test score |", "|---|---|"]
    lines += [f"| `{spec}` | {score:.4f} |" for spec, score in sorted(result["means"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="keyed")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE (engine.*, env.*)")
    parser.add_argument("--instances", default="keyed", help="instance set: a shipped name or TRAIN.yaml:TEST.yaml")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=list(TUNE_SEEDS))
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    parser.add_argument("--instance-feature", default=INSTANCE_FEATURE, choices=FEATURE_NAMES,
                        help="the instance feature the instance-aware constant reads")
    parser.add_argument("--agents", nargs="+", default=[], metavar="POLICY",
                        help="saved policies (policy.zip or run folders) trained on the training instances, played "
                             "on every test run beside the references and scored against them")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if set(args.tune_seeds) & set(args.eval_seeds):
        parser.error("--tune-seeds and --eval-seeds must not share a seed")
    start = time.perf_counter()
    instances = instance_set_from(args.instances)
    common = (args.preset, args.overrides, args.instances)
    constants = [constant(a) for a in args.alphas]

    tune_runs = [(i, s) for i in instances.names("train") for s in args.tune_seeds]
    tune_specs = [*constants, *args.schedules]
    tuning = run_stage(args.out, "tune", [(*common, i, s, tune_specs) for i, s in tune_runs], args.workers)
    best_constant = best(tuning, constants, tune_runs)
    alpha = float(best_constant.removeprefix("fixed:"))
    schedule = best(tuning, args.schedules, tune_runs)
    tuned: dict[str, Any] = {"constant": best_constant, "constant_score": mean_score(tuning, best_constant, tune_runs),
                             "perturbed": constant(neighbour(alpha)), "schedule": schedule,
                             "schedule_score": mean_score(tuning, schedule, tune_runs),
                             "instance_aware": instance_aware(tuning, args.alphas, tune_runs, instances,
                                                              args.instance_feature)}
    print(f"tuned on the training instances: {tuned}", flush=True)

    test_runs = [(i, s) for i in instances.names("test") for s in args.eval_seeds]
    test_specs: list[str] = list(dict.fromkeys(["fkl", "rkl", best_constant, tuned["perturbed"], schedule,
                                                tuned["instance_aware"], *constants, *args.agents]))
    tested = run_stage(args.out, "test", [(*common, i, s, test_specs) for i, s in test_runs], args.workers)
    result = report(tested, tuned, args.alphas, test_runs)
    result["agents"] = {agent: agent_rows(tested, agent, result, test_runs) for agent in args.agents}
    if args.agents:
        plot_alphas(tested, result, test_runs, args.out)
    result["wall_s"] = time.perf_counter() - start
    command = "python benchmarks/headroom_keyed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(args.out / "report.json", json.dumps(result, indent=1))
    atomic_write_text(args.out / "report.md", markdown(result, command.strip()))
    references = {"best constant": best_constant, "best schedule": schedule,
                  "instance-aware constant": tuned["instance_aware"],
                  "per-instance oracle (tuned on test)": result["oracle"]["chosen"]}
    atomic_write_text(args.out / "references.json", json.dumps(references, indent=1))
    print(markdown(result, command.strip()), flush=True)
    print(f"total {result['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`arkd compare`: every policy on the same engine seeds, a mean ± std table of every metric, plots.

The engine seed sets the student's initialisation and the data order, so policy A and policy B on seed s
start from the same student and see the same batches; only the weighting differs. Results per run are
written to ``runs/<policy>/seed_<s>.json`` (per step: weights, reward, validation metrics and the observation
the weights were chosen from); ``table.json`` / ``table.md`` / ``table.csv`` aggregate them.

Because runs are paired by seed, each policy is also compared with reference policies (``run.reference_policies``
present in the table, else the first policy) on every ranked metric: the mean over seeds of the paired
difference (policy - reference) and its 95% interval (:mod:`arkd_env.eval.stats`): a Student t interval below
30 paired seeds, where a percentile bootstrap would be too narrow (it never reaches past the observed
differences), and a percentile bootstrap (10,000 resamples, fixed seed) from 30 on. Every non-reference policy
is compared with every reference; when all policies are references, each pair is compared once (later minus
earlier in table order).

TensorBoard (``tb/``): the table as text, and one run per policy, ``tb/<sanitized policy>/``, holding the mean
over seeds under tags every policy shares (``val/<metric>``, ``weight/<component>``, ``fkl_share``, ``reward``,
``update/*``), so one chart overlays the policies; with several seeds each seed's own values are under
``seed_<s>/<tag>``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arkd_env.eval import stats
from arkd_env.eval.direction import direction
from arkd_env.progress import track
from train import plots
from train.config import RunConfig, replace
from train.episode import EpisodeResult, check_played, label, play
from train.runs import sanitize, write_json, write_run_info


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    values: list[float]
    iqm: float = math.nan  # interquartile mean, rliable's robust aggregate


def summarize(values: Sequence[float]) -> Cell:
    """Mean, sample standard deviation and interquartile mean over the finite values (NaN when there are none)."""
    kept = [float(v) if v is not None else math.nan for v in values]
    return Cell(stats.mean(kept), stats.sample_std(kept), int(stats.finite(kept).size), kept,
                stats.interquartile_mean(kept))


def _tidy(value: float) -> float:
    """Averaging equal values over seeds can leave rounding residue (5.55e-18): print that as the 0 it is."""
    return 0.0 if abs(value) < 1e-12 else value


# Below this many paired seeds no difference is marked, whatever its interval: with a handful of seeds even the
# t interval leans on the differences being close to normal, which nobody can check on so few.
MIN_SEEDS_FOR_MARK = 10
# The columns a terminal shows first: the keyed benchmark's exact score and its parts, then the older tasks'.
HEADLINE_METRICS = ("episode_return", "val_score", "val_validity", "val_head_recall", "val_tail_recall",
                    "val_exact_kl", "exact_match", "val_divergence", "test_divergence", "rouge_l", "tail_coverage")
INTERVAL_NAMES = {"t": "Student t interval", "bootstrap": "percentile bootstrap interval, {resamples} resamples",
                  "bca": "BCa bootstrap interval, {resamples} resamples"}
# How each ``method`` of :func:`arkd_env.eval.stats.paired_difference_ci` chooses, for the tables' notes.
INTERVAL_RULES = {"auto": f"Student t below {stats.SMALL_SAMPLE} pairs, else percentile bootstrap",
                  "t": "Student t", "bootstrap": "percentile bootstrap", "bca": "BCa bootstrap"}


@dataclass
class Difference:
    """mean(policy - reference) over the seeds where both have a value, with its interval (``method``)."""

    policy: str
    reference: str
    metric: str
    mean: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"
    improvement: float = math.nan  # share of paired seeds on which the policy beats the reference, ties half

    def fmt(self) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{_tidy(self.mean):+.3g} (one seed, no interval)"
        mark = " *" if self.n >= MIN_SEEDS_FOR_MARK and (self.low > 0 or self.high < 0) else ""
        return f"{_tidy(self.mean):+.3g} [{_tidy(self.low):.3g}, {_tidy(self.high):.3g}]{mark}"


@dataclass
class Table:
    seeds: list[int]
    policies: list[str]
    metrics: list[str]
    cells: dict[str, dict[str, Cell]]  # policy -> metric -> cell
    best: dict[str, str]  # metric -> best policy
    references: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    confidence: float = stats.DEFAULT_CONFIDENCE
    resamples: int = stats.DEFAULT_RESAMPLES
    method: str = "auto"  # how the differences' intervals were chosen (stats.METHODS)

    def fmt(self, policy: str, metric: str) -> str:
        cell = self.cells[policy].get(metric)
        if cell is None or cell.n == 0:
            return "n/a"
        text = f"{cell.mean:.4g} ± {cell.std:.2g}"
        return f"**{text}**" if self.best.get(metric) == policy else text

    def markdown(self, metrics: Sequence[str] | None = None) -> str:
        """The table of ``metrics`` (default: every one) and their paired differences, as Markdown."""
        shown = list(self.metrics if metrics is None else metrics)
        head = ["policy", *shown]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join([p, *(self.fmt(p, m) for m in shown)]) + " |" for p in self.policies]
        note = (f"\nMean ± sample std over engine seeds {self.seeds}; **bold** = best per column "
                "(higher for returns, scores, ROUGE-L, exact match and recall; lower for divergences).\n")
        return "\n".join(lines) + "\n" + note + self.differences_markdown(shown)

    def headline(self) -> str:
        """What a terminal shows: the benchmark's score and its components first, when the runs have them, else
        the return and the held-out divergence, ROUGE-L and suite metrics; the files keep every column."""
        shown = [m for m in HEADLINE_METRICS if m in self.metrics] or self.metrics
        rest = len(self.metrics) - len(shown)
        more = f"\n({rest} more columns in table.md, table.csv and table.json.)\n" if rest else ""
        return self.markdown(shown) + more

    def differences_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """The paired differences as a second table: one row per (policy, reference), one column per metric."""
        chosen = [d for d in self.differences if metrics is None or d.metric in metrics]
        if not chosen:
            return ""
        ranked = list(dict.fromkeys(d.metric for d in chosen))
        by_pair: dict[tuple[str, str], dict[str, Difference]] = {}
        for d in chosen:
            by_pair.setdefault((d.policy, d.reference), {})[d.metric] = d
        # The headline metric leads (the return where the runs have one, else the keyed score or the held-out
        # divergence), not the alphabetically first column.
        lead = next((m for m in HEADLINE_METRICS if m in ranked), ranked[0])
        head = ["policy − reference", *ranked, f"P(better on {lead})"]
        lines = ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for (policy, reference), row in by_pair.items():
            cells = [row[m].fmt() if m in row else "n/a" for m in ranked]
            better = row[lead].improvement if lead in row else math.nan
            cells.append("n/a" if math.isnan(better) else f"{better:.2f}")
            lines.append("| " + " | ".join([f"{policy} − {reference}", *cells]) + " |")
        level = f"{100 * self.confidence:g}%"
        methods = sorted({d.method for d in chosen if d.n > 1})
        kinds = " or ".join(INTERVAL_NAMES[m].format(resamples=self.resamples) for m in methods) or "no interval"
        n = max(d.n for d in chosen)
        rule = f"; t below {stats.SMALL_SAMPLE} pairs" if self.method == "auto" else ""
        note = (f"\nMean paired difference over the engine seeds (same seed = same student initialisation and "
                f"data order) [{level} {kinds}{rule}]; * = the interval excludes 0, "
                f"marked only with at least {MIN_SEEDS_FOR_MARK} paired seeds. P(better): the share of paired "
                f"seeds on which the policy beats the reference, ties counting half (rliable's probability of "
                f"improvement, paired).")
        if n < MIN_SEEDS_FOR_MARK:
            note += f" With {n} seeds these are descriptive, not tests."
        return "\n".join(lines) + "\n" + note + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["policy", *(f"{m}_{s}" for m in self.metrics for s in ("mean", "std", "iqm")), "best"])
        for p in self.policies:
            row: list[Any] = [p]
            for m in self.metrics:
                cell = self.cells[p].get(m)
                row += (["", "", ""] if cell is None or cell.n == 0
                        else [repr(cell.mean), repr(cell.std), repr(cell.iqm)])
            row.append(";".join(m for m in self.metrics if self.best.get(m) == p))
            writer.writerow(row)
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "policies": self.policies, "metrics": self.metrics, "best": self.best,
                "rows": {p: {m: vars(c) for m, c in row.items()} for p, row in self.cells.items()},
                "references": self.references,
                "differences": [vars(d) for d in self.differences],
                "difference_settings": {"statistic": "mean of paired differences (policy - reference)",
                                        "interval": INTERVAL_RULES[self.method], "confidence": self.confidence,
                                        "resamples": self.resamples, "pairs": "same engine seed"}}


def difference_pairs(policies: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    """(policy, reference) pairs to compare: every non-reference policy against every reference, in order;
    when every policy is a reference, each pair once (later minus earlier). Unknown references are ignored;
    with none left the first policy is the reference."""
    refs = [r for r in dict.fromkeys(references) if r in policies] or list(policies[:1])
    pairs = [(p, r) for r in refs for p in policies if p not in refs]
    if not pairs:
        pairs = [(p, r) for i, r in enumerate(refs) for p in refs[i + 1:]]
    return pairs


def paired_differences(results: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[str],
                       pairs: Sequence[tuple[str, str]], confidence: float = stats.DEFAULT_CONFIDENCE,
                       resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0,
                       method: str = "auto") -> list[Difference]:
    """For each pair and ranked metric, the mean paired difference over seeds with its interval (``method``,
    as :func:`arkd_env.eval.stats.paired_difference_ci` takes it)."""
    out: list[Difference] = []
    for policy, reference in pairs:
        a, b = results[policy], results[reference]
        if len(a) != len(b):
            raise ValueError(f"policies {policy!r} and {reference!r} ran on {len(a)} and {len(b)} seeds; "
                             "paired differences need the same seeds")
        for metric in metrics:
            sign = direction(metric)
            if not sign:
                continue
            mine, theirs = [r.get(metric, math.nan) for r in a], [r.get(metric, math.nan) for r in b]
            interval = stats.paired_difference_ci(mine, theirs, confidence=confidence, resamples=resamples,
                                                  seed=seed, method=method)
            # One pair has no spread to resample: report the difference without an interval.
            low, high = (interval.low, interval.high) if interval.n > 1 else (math.nan, math.nan)
            out.append(Difference(policy, reference, metric, interval.estimate, low, high, interval.n,
                                  interval.method, stats.improvement_probability(mine, theirs, sign)))
    return out


def build_table(results: Mapping[str, Sequence[Mapping[str, float]]], seeds: list[int],
                references: Sequence[str] | None = None, confidence: float = stats.DEFAULT_CONFIDENCE,
                resamples: int = stats.DEFAULT_RESAMPLES, method: str = "auto") -> Table:
    """``results[policy]`` = metrics of each seed's run, in seed order; ``references`` = the policies the paired
    differences are taken against (see :func:`difference_pairs`); ``method`` = how their intervals are made."""
    metrics = sorted({m for runs in results.values() for run in runs for m in run})
    if "episode_return" in metrics:
        metrics.remove("episode_return")
        metrics.insert(0, "episode_return")
    cells = {p: {m: summarize([run.get(m, math.nan) for run in runs]) for m in metrics}
             for p, runs in results.items()}
    best: dict[str, str] = {}
    for m in metrics:
        sign = direction(m)
        ranked = sorted(((cells[p][m].mean * sign, p) for p in results if sign and cells[p][m].n), reverse=True)
        if len(ranked) > 1 and ranked[0][0] > ranked[1][0]:  # ties mark nobody
            best[m] = ranked[0][1]
    pairs = difference_pairs(list(results), list(references or []))
    refs = list(dict.fromkeys(r for _, r in pairs))
    differences = paired_differences(results, metrics, pairs, confidence=confidence, resamples=resamples,
                                     method=method)
    return Table(seeds=list(seeds), policies=list(results), metrics=metrics, cells=cells, best=best,
                 references=refs, differences=differences, confidence=confidence, resamples=resamples,
                 method=method)


@dataclass
class Comparison:
    table: Table
    out_dir: Path
    runs: dict[str, list[EpisodeResult]]
    plots: list[Path]


def merge_results(tables: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[str, list[dict[str, float]]]]:
    """The per-seed metrics behind saved tables (``table.json``), merged: a policy compared later joins an
    earlier comparison on the same seeds without replaying it. A policy in several tables keeps its last."""
    seeds: list[int] | None = None
    results: dict[str, list[dict[str, float]]] = {}
    for number, data in enumerate(tables, 1):
        if seeds is not None and list(data["seeds"]) != seeds:
            raise ValueError(f"table {number} ran on seeds {data['seeds']}, table 1 on {seeds}: paired "
                             "differences need the same seeds")
        seeds = list(data["seeds"])
        for policy, row in data["rows"].items():
            results[policy] = [{m: cell["values"][i] for m, cell in row.items() if cell["values"]}
                               for i in range(len(seeds))]
    return seeds or [], results


def pool_results(comparisons: Sequence[tuple[Sequence[int], Mapping[str, Sequence[Mapping[str, float]]]]]
                 ) -> tuple[list[int], dict[str, list[dict[str, float]]]]:
    """Comparisons on disjoint engine seeds as one over all their seeds, for the policies every one of them
    played: more seeds, so tighter intervals, without replaying the runs."""
    seeds = [seed for group, _ in comparisons for seed in group]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"seed {repeated[0]} is in two of the pooled comparisons: pooling needs disjoint seeds")
    common = [policy for policy in comparisons[0][1] if all(policy in results for _, results in comparisons)]
    return seeds, {policy: [dict(run) for _, results in comparisons for run in results[policy]] for policy in common}


def unique_labels(specs: Sequence[str]) -> list[str]:
    labels: list[str] = []
    for spec in specs:
        name = label(spec)
        candidate, k = name, 2
        while sanitize(candidate) in {sanitize(existing) for existing in labels}:
            # Cut first: sanitize() keeps 80 characters, so a suffix on a longer name would never tell it apart.
            candidate, k = f"{name[:64]}-{k}", k + 1
        labels.append(candidate)
    return labels


def play_one(cfg: RunConfig, spec: str, seed: int) -> EpisodeResult:
    result, env = play(cfg, spec, seed)
    env.close()
    return result


def _use_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def _play_all(cfg: RunConfig, jobs: Sequence[tuple[str, str, int]]) -> Iterator[tuple[str, int, EpisodeResult]]:
    """(name, seed, result) of every job, as they finish: here, or in ``run.workers`` processes."""
    workers = min(cfg.run.workers, len(jobs))
    if workers <= 1:
        for spec, name, seed in jobs:
            yield name, seed, play_one(cfg, spec, seed)
        return
    # Spawned, not forked: forking a process whose torch threads are running can deadlock the child.
    # The cores are shared out, since one torch process per core is far faster on tiny models than
    # processes competing for every core.
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_use_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(play_one, cfg, spec, seed): (name, seed) for spec, name, seed in jobs}
        for future in as_completed(futures):
            name, seed = futures[future]
            yield name, seed, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a failed run (or Ctrl-C) must not wait for the others


def run_compare(cfg: RunConfig, specs: Sequence[str], seeds: Sequence[int], out_dir: Path,
                names: Sequence[str] | None = None, references: Sequence[str] | None = None) -> Comparison:
    """Play every spec on every seed; ``names`` replaces the specs' labels in tables and plots; ``references``
    (table names) defaults to the labels of ``run.reference_policies``. With an instance set and no
    ``env.instance``, each seed poses a test instance (drawn by the seed, so the same one for every policy):
    policies are compared where no agent trained."""
    if cfg.env.instances is not None and cfg.env.instance is None:
        cfg = replace(cfg, env={"instance_split": "test"})
    for spec in specs:
        check_played(cfg, spec)
    labels = list(names) if names is not None else unique_labels(specs)
    folders: dict[str, str] = {}
    for name in labels:  # each policy's seed files go to runs/<sanitized name>/: two names must not share one
        other = folders.setdefault(sanitize(name), name)
        if other != name:
            raise ValueError(f"policies {other!r} and {name!r} would share the result folder "
                             f"{out_dir / 'runs' / sanitize(name)}; give them distinct names")
    write_run_info(out_dir, "compare")
    jobs = [(spec, name, seed) for spec, name in zip(specs, labels, strict=True) for seed in seeds]
    done: dict[tuple[str, int], EpisodeResult] = {}
    for name, seed, result in track(_play_all(cfg, jobs), desc="compare", total=len(jobs)):
        result.policy = name
        done[name, seed] = result
        write_json(out_dir / "runs" / sanitize(name) / f"seed_{seed}.json", result.summary())
    runs = {name: [done[name, seed] for seed in seeds] for name in labels}  # seed order: differences pair by it
    if references is None:
        references = [label(spec) for spec in cfg.run.reference_policies]
    table = build_table({n: [{"episode_return": r.episode_return, **r.metrics} for r in rs]
                         for n, rs in runs.items()}, list(seeds), references=references)
    write_outputs(table, out_dir)
    episodes = {name: [r.steps for r in rs] for name, rs in runs.items()}
    figures = [plots.weight_trajectories(episodes, out_dir / "plots" / "weights.png"),
               plots.validation_curves(episodes, out_dir / "plots" / "validation.png")]
    write_tensorboard(table, runs, out_dir / "tb")
    return Comparison(table=table, out_dir=out_dir, runs=runs, plots=figures)


def write_outputs(table: Table, out_dir: Path) -> None:
    from arkd_env.atomic import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "table.md", table.markdown())
    atomic_write_text(out_dir / "table.csv", table.csv())
    write_json(out_dir / "table.json", table.to_json())


Scalars = dict[str, dict[int, float]]  # tag -> x -> value


def step_scalars(steps: Sequence[Mapping[str, Any]]) -> Scalars:
    """The TensorBoard scalars of one episode. Per env step: ``val/<metric>``, ``weight/<component>``,
    ``fkl_share`` (:func:`train.plots.fkl_share`) and ``reward``; per student update, when the steps carry an
    ``update_log``, every ``UPDATE_LOG_EVERY``-th update's ``update/*`` tags, against the engine's update count.
    Values that are missing or not finite are left out."""
    scalars: Scalars = {}
    for step in steps:
        for tag, x, value in _points(step):
            if value is not None and math.isfinite(float(value)):
                scalars.setdefault(tag, {})[x] = float(value)
    return scalars


def _points(step: Mapping[str, Any]) -> Iterator[tuple[str, int, Any]]:
    x = int(step["step"])
    for metric, value in (step.get("val") or {}).items():
        yield f"val/{metric}", x, value
    if x == 0:
        return  # the reset record: nothing applied, nothing earned
    weights = step.get("weights") or {}
    yield from ((f"weight/{component}", x, weight) for component, weight in weights.items())
    yield "fkl_share", x, plots.fkl_share(step)
    yield "reward", x, step.get("reward")
    yield from _update_points(step.get("update_log") or [], weights)


def _update_points(log: Sequence[Mapping[str, float]], weights: Mapping[str, float]
                   ) -> Iterator[tuple[str, int, float]]:
    from train.callbacks import UPDATE_LOG_EVERY, update_scalars

    for record in log:
        update = int(record["update"])
        if update % UPDATE_LOG_EVERY == 0:
            yield from ((tag, update, value) for tag, value in update_scalars(record, weights).items())


def mean_scalars(per_seed: Sequence[Mapping[str, Mapping[int, float]]]) -> Scalars:
    """Each tag's mean over the seeds, at each x, over the seeds that logged it there."""
    tags = dict.fromkeys(tag for one in per_seed for tag in one)
    out: Scalars = {}
    for tag in tags:
        band = plots.seed_band([one.get(tag, {}) for one in per_seed])
        out[tag] = dict(zip(band.xs, band.mean, strict=True))
    return out


def policy_scalars(results: Sequence[EpisodeResult]) -> Scalars:
    """One policy's TensorBoard run: the mean over its seeds under the tags of :func:`step_scalars`, so that
    one chart overlays the policies' runs; with several seeds also each seed's own, as ``seed_<s>/<tag>``."""
    per_seed = [step_scalars(r.steps) for r in results]
    scalars = mean_scalars(per_seed)
    if len(results) > 1:
        for result, one in zip(results, per_seed, strict=True):
            scalars.update({f"seed_{result.seed}/{tag}": values for tag, values in one.items()})
    return scalars


def summary_writer(log_dir: Path) -> contextlib.closing[Any]:
    from torch.utils.tensorboard import SummaryWriter

    return contextlib.closing(SummaryWriter(str(log_dir)))


def write_policy_run(results: Sequence[EpisodeResult], log_dir: Path) -> None:
    with summary_writer(log_dir) as writer:
        for tag, values in policy_scalars(results).items():
            for x, value in sorted(values.items()):
                writer.add_scalar(tag, value, x)


def write_table_text(table: Table, log_dir: Path) -> None:
    with summary_writer(log_dir) as writer:
        writer.add_text("comparison/table", table.markdown(), 0)


def write_tensorboard(table: Table, runs: Mapping[str, Sequence[EpisodeResult]], log_dir: Path) -> None:
    """The table as text (``comparison/table``) in ``log_dir``, and one run per policy in
    ``log_dir/<sanitized policy>`` (:func:`policy_scalars`)."""
    write_table_text(table, log_dir)
    for name, results in runs.items():
        write_policy_run(results, log_dir / sanitize(name))

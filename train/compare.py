"""`arkd compare`: every policy on the same engine seeds, a mean ± std table of every metric, plots.

The engine seed sets the student's initialisation and the data order, so policy A and policy B on seed s
start from the same student and see the same batches; only the weighting differs. Results per run are
written to ``runs/<policy>/seed_<s>.json``; ``table.json`` / ``table.md`` / ``table.csv`` aggregate them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train import plots
from train.config import RunConfig
from train.episode import EpisodeResult, check_spec, label, play
from train.progress import track
from train.runs import sanitize, write_json

HIGHER_IS_BETTER = ("episode_return", "rouge_l", "exact_match", "tail_coverage")
LOWER_IS_BETTER = ("val_", "open_kl", "open_tvd", "invalid_rate")
NO_RANKING = ("n_deterministic", "n_open", "true_tail_share", "tail_share")


def direction(metric: str) -> int:
    """+1 when larger is better, -1 when smaller is better, 0 for descriptive columns."""
    if metric in NO_RANKING:
        return 0
    if metric.startswith(HIGHER_IS_BETTER):
        return 1
    if metric.startswith(LOWER_IS_BETTER):
        return -1
    return 0


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    values: list[float]


def summarize(values: Sequence[float]) -> Cell:
    """Mean and sample standard deviation over the finite values (NaN when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return Cell(math.nan, math.nan, 0, [float(v) if v is not None else math.nan for v in values])
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return Cell(float(np.mean(finite)), std, len(finite), [float(v) if v is not None else math.nan for v in values])


@dataclass
class Table:
    seeds: list[int]
    policies: list[str]
    metrics: list[str]
    cells: dict[str, dict[str, Cell]]  # policy -> metric -> cell
    best: dict[str, str]  # metric -> best policy

    def fmt(self, policy: str, metric: str) -> str:
        cell = self.cells[policy].get(metric)
        if cell is None or cell.n == 0:
            return "n/a"
        text = f"{cell.mean:.4g} ± {cell.std:.2g}"
        return f"**{text}**" if self.best.get(metric) == policy else text

    def markdown(self) -> str:
        head = ["policy", *self.metrics]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join([p, *(self.fmt(p, m) for m in self.metrics)]) + " |" for p in self.policies]
        note = (f"\nMean ± sample std over engine seeds {self.seeds}; **bold** = best per column "
                "(higher for returns, ROUGE-L, exact match and tail coverage; lower for divergences).\n")
        return "\n".join(lines) + "\n" + note

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["policy", *(f"{m}_{s}" for m in self.metrics for s in ("mean", "std")), "best"])
        for p in self.policies:
            row: list[Any] = [p]
            for m in self.metrics:
                cell = self.cells[p].get(m)
                row += ["", ""] if cell is None or cell.n == 0 else [repr(cell.mean), repr(cell.std)]
            row.append(";".join(m for m in self.metrics if self.best.get(m) == p))
            writer.writerow(row)
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "policies": self.policies, "metrics": self.metrics, "best": self.best,
                "rows": {p: {m: vars(c) for m, c in row.items()} for p, row in self.cells.items()}}


def build_table(results: Mapping[str, Sequence[Mapping[str, float]]], seeds: list[int]) -> Table:
    """``results[policy]`` = metrics of each seed's run, in seed order."""
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
    return Table(seeds=list(seeds), policies=list(results), metrics=metrics, cells=cells, best=best)


@dataclass
class Comparison:
    table: Table
    out_dir: Path
    runs: dict[str, list[EpisodeResult]]
    plots: list[Path]


def unique_labels(specs: Sequence[str]) -> list[str]:
    labels: list[str] = []
    for spec in specs:
        name = label(spec)
        candidate, k = name, 2
        while candidate in labels:
            candidate, k = f"{name}-{k}", k + 1
        labels.append(candidate)
    return labels


def run_compare(cfg: RunConfig, specs: Sequence[str], seeds: Sequence[int], out_dir: Path,
                names: Sequence[str] | None = None) -> Comparison:
    """Play every spec on every seed; ``names`` replaces the specs' labels in tables and plots."""
    for spec in specs:
        check_spec(spec)
    labels = list(names) if names is not None else unique_labels(specs)
    runs: dict[str, list[EpisodeResult]] = {name: [] for name in labels}
    jobs = [(spec, name, seed) for spec, name in zip(specs, labels, strict=True) for seed in seeds]
    for spec, name, seed in track(jobs, desc="compare"):
        result, env = play(cfg, spec, seed)
        env.close()
        result.policy = name
        runs[name].append(result)
        write_json(out_dir / "runs" / sanitize(name) / f"seed_{seed}.json", result.summary())
    table = build_table({n: [{"episode_return": r.episode_return, **r.metrics} for r in rs]
                         for n, rs in runs.items()}, list(seeds))
    write_outputs(table, out_dir)
    first = {name: rs[0].steps for name, rs in runs.items()}
    figures = [plots.weight_trajectories(first, out_dir / "plots" / "weights.png"),
               plots.validation_curves(first, out_dir / "plots" / "validation.png")]
    write_tensorboard(table, first, out_dir / "tb")
    return Comparison(table=table, out_dir=out_dir, runs=runs, plots=figures)


def write_outputs(table: Table, out_dir: Path) -> None:
    from train.runs import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "table.md", table.markdown())
    atomic_write_text(out_dir / "table.csv", table.csv())
    write_json(out_dir / "table.json", table.to_json())


def write_tensorboard(table: Table, trajectories: Mapping[str, Sequence[Mapping[str, Any]]], log_dir: Path,
                      writer: Any = None) -> None:
    """The table as text (``comparison/table``) and each policy's validation curve and weights."""
    from torch.utils.tensorboard import SummaryWriter

    own = writer is None
    writer = writer or SummaryWriter(str(log_dir))
    writer.add_text("comparison/table", table.markdown(), 0)
    for name, steps in trajectories.items():
        tag = sanitize(name)
        for s in steps:
            for metric in ("val_divergence", "val_fkl", "val_rkl"):
                if metric in s.get("val", {}):
                    writer.add_scalar(f"compare/{tag}/{metric}", float(s["val"][metric]), int(s["step"]))
            for comp, w in s.get("weights", {}).items():
                writer.add_scalar(f"compare/{tag}/weight_{comp}", float(w), int(s["step"]))
    writer.flush()
    if own:
        writer.close()

"""PNG plots (matplotlib, Agg backend): the FKL share of the weights, validation curves, the agent's learning curve.

Runs over several engine seeds are drawn as their mean with a min–max band: a comparison runs few seeds, too few
for a standard deviation to mean much, while min–max shows the range every seed fell in.
Each ``*_figure`` function builds the figure (tests read its lines and ticks); the function of the same name
without the suffix saves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

from arkd_env.atomic import atomic_path

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Steps = Sequence[Mapping[str, Any]]  # one episode: a record per env step (weights, val, observed, ...)
Runs = Mapping[str, Sequence[Steps]]  # policy -> its episodes, one per engine seed

SMALL_MULTIPLES_ABOVE = 6  # more policies than this on one set of axes cannot be told apart
GRID_COLUMNS = 3
SMOOTHING_WINDOW = 10  # episodes in the learning curve's rolling mean
BAND_ALPHA = 0.2
BAND_NOTE = "mean over seeds, band = min–max"
FKL_PARTS = ("fkl", "fkl_head", "fkl_tail")
RKL_PARTS = ("rkl", "rkl_head", "rkl_tail")


def _save(fig: Figure, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def line_styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and dash pattern per policy, distinct for up to 40 policies.

    The colour cycle has 10 colours; a comparison of the whole bench has about 20 policies, so colours alone
    would give two policies the same line.
    """
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dashes = ["-", "--", ":", "-."]
    return {name: {"color": cycle[i % len(cycle)], "linestyle": dashes[(i // len(cycle)) % len(dashes)]}
            for i, name in enumerate(names)}


def _legend_right(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure, beside the panels, so that it never hides a line."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center left", handlelength=3,
                   bbox_to_anchor=(1.0, 0.5), frameon=False)


def _integer_steps(ax: Axes) -> None:
    """Steps are counts: a tick at 4.5 env steps names a point that does not exist."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------------------------------- pure helpers
def fkl_share(step: Mapping[str, Any]) -> float:
    """The FKL share α of a step's KL weight: w_fkl / (w_fkl + w_rkl), head and tail parts counted with their KL.

    AKL weighs each token's FKL by its head-gap ratio and its RKL by the rest, so it counts by its effective
    share: the mean head ratio over the step's own tokens (``train``, its last batch after its updates), or, in a
    record without that, the ratio in the observation its weights were chosen from (``observed``). Components
    of neither KL (ce, jsd, ...) are left out. NaN when the step weighs neither KL, or weighs AKL with no head
    ratio known.
    """
    weights = step.get("weights") or {}
    fkl = sum(float(weights.get(c, 0.0)) for c in FKL_PARTS)
    rkl = sum(float(weights.get(c, 0.0)) for c in RKL_PARTS)
    akl = float(weights.get("akl", 0.0))
    if akl:
        # The step's own tokens (its last batch, after its updates) when the env reported them; else the ratio
        # the policy observed before choosing.
        head = (step.get("train") or {}).get("akl_head_ratio", (step.get("observed") or {}).get("akl_head_ratio"))
        if head is None:
            return math.nan
        fkl += akl * float(head)
        rkl += akl * (1.0 - float(head))
    total = fkl + rkl
    return fkl / total if total > 0 else math.nan


def step_series(steps: Steps, value: Callable[[Mapping[str, Any]], float | None]) -> dict[int, float]:
    """env step -> ``value(step)``, for the steps where it is a finite number."""
    out: dict[int, float] = {}
    for step in steps:
        v = value(step)
        if v is not None and math.isfinite(float(v)):
            out[int(step["step"])] = float(v)
    return out


def val_series(steps: Steps, metric: str) -> dict[int, float]:
    return step_series(steps, lambda s: (s.get("val") or {}).get(metric))


def weight_series(steps: Steps) -> dict[int, float]:
    """α per acting step; the reset record (step 0) applied no weights."""
    return step_series([s for s in steps if s.get("weights") and int(s["step"]) > 0], fkl_share)


@dataclass(frozen=True)
class Band:
    """Per x: the mean over the seeds that have a value there, and the lowest and highest of those values."""

    xs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def seed_band(series: Sequence[Mapping[int, float]]) -> Band:
    xs = sorted({x for one in series for x in one})
    columns = [[one[x] for one in series if x in one] for x in xs]
    return Band(xs=xs, mean=[sum(c) / len(c) for c in columns], low=[min(c) for c in columns],
                high=[max(c) for c in columns])


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and up to ``window - 1`` before it: a trailing mean, so no point looks ahead."""
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# ---------------------------------------------------------------------------------------------- drawing
def _held_from_previous_step(band: Band) -> Band:
    """The band with its first value also at the step before: the weights of step t are held from env step t-1
    to t, so each one draws as the stretch up to its step, the first one included."""
    return Band(xs=[band.xs[0] - 1, *band.xs], mean=[band.mean[0], *band.mean], low=[band.low[0], *band.low],
                high=[band.high[0], *band.high])


def _draw_band(ax: Axes, band: Band, style: Mapping[str, Any], label: str, steps: bool) -> None:
    """The mean as a line (a staircase for weights, which hold over a step) over its min–max band."""
    if not band.xs:
        return
    if steps:
        held = _held_from_previous_step(band)
        ax.step(held.xs, held.mean, where="pre", marker="o", markersize=3, markevery=list(range(1, len(held.xs))),
                label=label, **style)
        ax.fill_between(held.xs, held.low, held.high, step="pre", alpha=BAND_ALPHA, color=style["color"],
                        linewidth=0)
        return
    ax.plot(band.xs, band.mean, marker="o", markersize=3, label=label, **style)
    ax.fill_between(band.xs, band.low, band.high, alpha=BAND_ALPHA, color=style["color"], linewidth=0)


def _alpha_axes(ax: Axes) -> None:
    ax.set_ylim(-0.05, 1.05)
    _integer_steps(ax)


def weights_figure(runs: Runs) -> Figure:
    """The FKL share α per env step (:func:`fkl_share`): every policy on one panel, or with more than
    ``SMALL_MULTIPLES_ABOVE`` policies a grid of panels, one policy each, sharing both axes."""
    styles = line_styles(list(runs))
    bands = {name: seed_band([weight_series(steps) for steps in episodes]) for name, episodes in runs.items()}
    title = f"FKL share α of the KL weight per env step ({BAND_NOTE})"
    if len(runs) <= SMALL_MULTIPLES_ABOVE:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        for name, band in bands.items():
            _draw_band(ax, band, styles[name], name, steps=True)
        _alpha_axes(ax)
        ax.set_xlabel("env step")
        ax.set_ylabel("α = FKL share")
        ax.set_title(title)
        _legend_right(fig, [ax])
        return fig
    rows = math.ceil(len(runs) / GRID_COLUMNS)
    fig, grid = plt.subplots(rows, GRID_COLUMNS, figsize=(3.2 * GRID_COLUMNS, 2.2 * rows), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    panels = list(grid.ravel())
    for ax, (name, band) in zip(panels, bands.items(), strict=False):
        _draw_band(ax, band, styles[name], name, steps=True)
        _alpha_axes(ax)
        ax.set_title(name, fontsize=8)
    for ax in panels[len(runs):]:
        ax.remove()  # an empty panel would read as a policy with no data
    for ax in grid[:, 0]:
        ax.set_ylabel("α")
    fig.supxlabel("env step")
    fig.suptitle(title)
    return fig


def weight_trajectories(runs: Runs, path: Path) -> Path:
    return _save(weights_figure(runs), path)


def validation_figure(runs: Runs, metric: str = "val_divergence") -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    styles = line_styles(list(runs))
    for name, episodes in runs.items():
        _draw_band(ax, seed_band([val_series(steps, metric) for steps in episodes]), styles[name], name, steps=False)
    _integer_steps(ax)
    ax.set_xlabel("env step")
    ax.set_ylabel(metric)
    ax.set_title(f"Validation {metric} during distillation ({BAND_NOTE})")
    _legend_right(fig, [ax])
    return fig


def validation_curves(runs: Runs, path: Path, metric: str = "val_divergence") -> Path:
    return _save(validation_figure(runs, metric), path)


def learning_curve_figure(points: Sequence[tuple[int, float]], references: Mapping[str, Sequence[float]]) -> Figure:
    """Episode returns vs env steps of the agent: raw points faint, their rolling mean over ``SMOOTHING_WINDOW``
    episodes as the line; each fixed policy's returns (one per seed) as the mean with a min–max band."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, "o", markersize=3, alpha=0.3, color=cycle[0], label="agent episodes")
        ax.plot(xs, rolling_mean(ys, SMOOTHING_WINDOW), color=cycle[0],
                label=f"agent, mean of last {SMOOTHING_WINDOW} episodes")
    for i, (name, values) in enumerate(sorted(references.items())):
        if not values:
            continue
        color = cycle[(i + 1) % len(cycle)]
        spread = f"mean of {len(values)} seeds, band min–max" if len(values) > 1 else "1 seed"
        ax.axhline(sum(values) / len(values), linestyle="--", color=color, label=f"{name} (fixed; {spread})")
        ax.axhspan(min(values), max(values), color=color, alpha=BAND_ALPHA / 2, linewidth=0)
    _integer_steps(ax)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title("Agent learning curve")
    ax.legend(fontsize=7)
    return fig


def learning_curve(points: Sequence[tuple[int, float]], references: Mapping[str, Sequence[float]],
                   path: Path) -> Path:
    return _save(learning_curve_figure(points, references), path)

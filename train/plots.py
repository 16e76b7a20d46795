"""PNG plots (matplotlib, Agg backend): weight trajectories, validation curves, the agent's learning curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from arkd_env.atomic import atomic_path

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt

Trajectories = Mapping[str, Sequence[Mapping[str, Any]]]  # policy -> its episode's steps


def _save(fig: Any, path: Path) -> Path:
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


def _legend_right(fig: Any, axes: Sequence[Any]) -> None:
    """One legend for the figure, beside the panels, so that it never hides a line."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center left", handlelength=3,
                   bbox_to_anchor=(1.0, 0.5), frameon=False)


def weight_trajectories(trajectories: Trajectories, path: Path) -> Path:
    """One panel per component: the weight each policy applied at each env step."""
    components = sorted({c for steps in trajectories.values() for s in steps[1:] for c in s.get("weights", {})})
    components = components or ["fkl"]
    fig, axes = plt.subplots(len(components), 1, figsize=(7, 2.4 * len(components)), squeeze=False,
                             layout="constrained")
    styles = line_styles(list(trajectories))  # same policy, same line in every panel
    for ax, comp in zip(axes[:, 0], components, strict=True):
        for name, steps in trajectories.items():
            xs = [s["step"] for s in steps[1:] if comp in s.get("weights", {})]
            ys = [s["weights"][comp] for s in steps[1:] if comp in s.get("weights", {})]
            if xs:
                ax.step(xs, ys, where="post", marker="o", markersize=3, label=name, **styles[name])
        ax.set_ylabel(f"weight {comp}")
        ax.set_ylim(-0.05, 1.05)
    axes[-1, 0].set_xlabel("env step")
    axes[0, 0].set_title("Weights applied per env step")
    _legend_right(fig, list(axes[:, 0]))
    return _save(fig, path)


def validation_curves(trajectories: Trajectories, path: Path, metric: str = "val_divergence") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    styles = line_styles(list(trajectories))
    for name, steps in trajectories.items():
        points = [(s["step"], s["val"][metric]) for s in steps if metric in s.get("val", {})]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name, **styles[name])
    ax.set_xlabel("env step")
    ax.set_ylabel(metric)
    ax.set_title(f"Validation {metric} during distillation")
    _legend_right(fig, [ax])
    return _save(fig, path)


def learning_curve(points: Sequence[tuple[int, float]], references: Mapping[str, float], path: Path) -> Path:
    """Episode return vs env steps of the agent, fixed policies' returns as horizontal lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, label="agent episodes")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, value) in enumerate(sorted(references.items())):
        ax.axhline(value, linestyle="--", color=cycle[(i + 1) % len(cycle)], label=f"{name} (fixed)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title("Agent learning curve")
    ax.legend(fontsize=7)
    return _save(fig, path)

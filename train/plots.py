"""PNG plots (matplotlib, Agg backend): weight trajectories, validation curves, the agent's learning curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt

Trajectories = Mapping[str, Sequence[Mapping[str, Any]]]  # policy -> its episode's steps


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def weight_trajectories(trajectories: Trajectories, path: Path) -> Path:
    """One panel per component: the weight each policy applied at each env step."""
    components = sorted({c for steps in trajectories.values() for s in steps[1:] for c in s.get("weights", {})})
    components = components or ["fkl"]
    fig, axes = plt.subplots(len(components), 1, figsize=(7, 2.4 * len(components)), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[i % len(cycle)] for i, name in enumerate(trajectories)}  # same policy, same colour
    for ax, comp in zip(axes[:, 0], components, strict=True):
        for name, steps in trajectories.items():
            xs = [s["step"] for s in steps[1:] if comp in s.get("weights", {})]
            ys = [s["weights"][comp] for s in steps[1:] if comp in s.get("weights", {})]
            if xs:
                ax.step(xs, ys, where="post", marker="o", markersize=3, label=name, color=colours[name])
        ax.set_ylabel(f"weight {comp}")
        ax.set_ylim(-0.05, 1.05)
        if ax.get_lines():
            ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("env step")
    axes[0, 0].set_title("Weights applied per env step")
    return _save(fig, path)


def validation_curves(trajectories: Trajectories, path: Path, metric: str = "val_divergence") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, steps in trajectories.items():
        points = [(s["step"], s["val"][metric]) for s in steps if metric in s.get("val", {})]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
    ax.set_xlabel("env step")
    ax.set_ylabel(metric)
    ax.set_title(f"Validation {metric} during distillation")
    ax.legend(fontsize=7)
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

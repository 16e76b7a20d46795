"""train.plots: every policy gets its own line, the legend sits beside the panels, runs over seeds are drawn as
their mean with a min–max band, the weights as the FKL share α, steps on integer ticks, the learning curve
smoothed against references played on the training seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from train import plots
from train.config import load_run_config
from train.trainer import reference_seeds


def _steps(alpha: float, slope: float = 0.1) -> list[dict[str, Any]]:
    start = {"step": 0, "weights": {"fkl": 0.5, "rkl": 0.5}, "val": {"val_divergence": 3.0}}
    return [start] + [{"step": t, "weights": {"fkl": alpha, "rkl": 1 - alpha},
                       "val": {"val_divergence": 3.0 - slope * t}} for t in (1, 2, 3)]


def _data(values: Any) -> list[float]:
    return np.asarray(values, dtype=float).tolist()


def _band_limits(ax: Any) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest y of each band's polygon drawn on ``ax``."""
    (band,) = ax.collections
    ys = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
    return ys.min(), ys.max()


def test_line_styles_tell_twenty_policies_apart_and_keep_each_policys_style():
    names = [f"policy-{i}" for i in range(20)]
    styles = plots.line_styles(names)
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 20
    assert plots.line_styles(names[:3]) == {n: styles[n] for n in names[:3]}


def test_plots_put_the_legend_beside_the_panels(tmp_path: Path):
    short = {"a": [_steps(0.5)], "b": [_steps(0.25)]}
    long = {"a-policy-with-a-very-long-name-" * 3: [_steps(0.5)], "b": [_steps(0.25)]}
    for plot in (plots.weight_trajectories, plots.validation_curves):
        narrow = mpimg.imread(plot(short, tmp_path / "short.png"))
        wide = mpimg.imread(plot(long, tmp_path / "long.png"))
        # a legend inside the axes would cover lines and leave the image as wide as before
        assert wide.shape[1] > narrow.shape[1] + 200
        assert wide.shape[0] == narrow.shape[0]


def test_fkl_share_of_mixtures_head_tail_parts_and_akl():
    assert plots.fkl_share({"weights": {"fkl": 0.3, "rkl": 0.1}}) == pytest.approx(0.75)
    assert plots.fkl_share({"weights": {"fkl": 0.2, "rkl": 0.2, "ce": 0.6}}) == pytest.approx(0.5)  # ce is no KL
    parts = {"fkl_head": 0.1, "fkl_tail": 0.1, "rkl_head": 0.5, "rkl_tail": 0.3}
    assert plots.fkl_share({"weights": parts}) == pytest.approx(0.2)
    # AKL: its FKL share is its head-gap ratio, here the one the step started from ...
    assert plots.fkl_share({"weights": {"akl": 1.0}, "observed": {"akl_head_ratio": 0.7}}) == pytest.approx(0.7)
    assert plots.fkl_share({"weights": {"akl": 0.5, "rkl": 0.5}, "observed": {"akl_head_ratio": 0.6}}) \
        == pytest.approx(0.3)
    # ... and the step's own tokens win over the observation when the env reported them
    assert plots.fkl_share({"weights": {"akl": 1.0}, "observed": {"akl_head_ratio": 0.7},
                            "train": {"akl_head_ratio": 0.4}}) == pytest.approx(0.4)
    for undefined in ({"weights": {"ce": 1.0}}, {"weights": {"akl": 1.0}}, {}):
        assert math.isnan(plots.fkl_share(undefined))


def test_seed_band_means_over_the_seeds_present_at_each_step():
    band = plots.seed_band([{1: 1.0, 2: 4.0}, {1: 3.0, 2: 2.0, 3: 5.0}])
    assert band == plots.Band(xs=[1, 2, 3], mean=[2.0, 3.0, 5.0], low=[1.0, 2.0, 5.0], high=[3.0, 4.0, 5.0])


def test_weights_panel_draws_the_fkl_share_mean_over_seeds_with_its_band():
    fig = plots.weights_figure({"mix": [_steps(0.2), _steps(0.6)]})
    (ax,) = fig.axes
    (line,) = ax.lines
    # Step t's weights hold from env step t-1 to t; the reset record (step 0) applied none.
    assert _data(line.get_xdata()) == [0, 1, 2, 3] and line.get_drawstyle() == "steps-pre"
    assert np.allclose(line.get_ydata(), 0.4)
    low, high = _band_limits(ax)
    assert (low, high) == pytest.approx((0.2, 0.6))
    assert "min–max" in ax.get_title()


def test_weights_of_more_than_six_policies_are_small_multiples_sharing_the_y_axis():
    runs = {f"p{i}": [_steps(i / 10)] for i in range(7)}
    fig = plots.weights_figure(runs)
    assert len(fig.axes) == 7  # one panel per policy, no empty panel
    assert [ax.get_title() for ax in fig.axes] == list(runs)
    assert all(len(ax.lines) == 1 for ax in fig.axes)
    assert all(fig.axes[0].get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes)
    assert np.allclose(fig.axes[6].lines[0].get_ydata(), 0.6)
    assert len(plots.weights_figure({f"p{i}": [_steps(0.5)] for i in range(6)}).axes) == 1


def test_validation_curve_is_the_mean_over_seeds_with_a_min_max_band():
    fig = plots.validation_figure({"a": [_steps(0.5, slope=0.1), _steps(0.5, slope=0.3)]})
    (ax,) = fig.axes
    (line,) = ax.lines
    assert np.allclose(line.get_ydata(), [3.0, 2.8, 2.6, 2.4])
    assert _band_limits(ax) == pytest.approx((3.0 - 0.9, 3.0))
    assert "min–max" in ax.get_title()


def _tick_labels(fig: Figure) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]


def test_step_axes_have_integer_ticks():
    figures = [plots.weights_figure({"a": [_steps(0.5)]}), plots.validation_figure({"a": [_steps(0.5)]}),
               plots.learning_curve_figure([(1, 0.1), (2, 0.2), (3, 0.3)], {})]
    for fig in figures:
        ax = fig.axes[0]
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        labels = _tick_labels(fig)
        # a default locator labels 3 steps 1.00, 1.25, ...: every label here must read as a whole number
        assert labels and all(label.replace("−", "-").lstrip("-").isdigit() for label in labels), labels


def test_rolling_mean_is_trailing():
    assert plots.rolling_mean([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.0, 1.5, 2.5, 3.5, 4.5]
    assert plots.rolling_mean([4.0, 2.0], 10) == [4.0, 3.0]


def test_learning_curve_smooths_the_returns_and_bands_the_references():
    points = [(2 * i, float(i % 3)) for i in range(1, 13)]
    fig = plots.learning_curve_figure(points, {"fkl": [1.0, 2.0, 6.0]})
    ax = fig.axes[0]
    raw, smooth, reference = ax.lines
    assert _data(raw.get_ydata()) == [p[1] for p in points] and (raw.get_alpha() or 1) < 1  # raw returns, faint
    assert _data(smooth.get_ydata()) == plots.rolling_mean([p[1] for p in points], plots.SMOOTHING_WINDOW)
    assert _data(reference.get_ydata()) == [3.0, 3.0]  # the mean over the seeds
    (band,) = ax.patches
    assert isinstance(band, Rectangle)
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((1.0, 6.0))
    assert "3 seeds" in str(reference.get_label())


def test_references_are_played_on_the_first_training_seeds():
    pooled = load_run_config("nano", None, ["env.train_seeds=[7, 3, 9, 4]"])
    assert reference_seeds(pooled) == [7, 3, 9]
    assert reference_seeds(pooled, 1) == [7]
    assert reference_seeds(load_run_config("nano", None, ["engine.seed=5"])) == [5]

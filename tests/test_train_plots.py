"""train.plots: every policy gets its own line, and the legend sits beside the panels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg

from train import plots


def _steps(alpha: float) -> list[dict]:
    start = {"step": 0, "val": {"val_divergence": 3.0}}
    return [start] + [{"step": t, "weights": {"fkl": alpha, "rkl": 1 - alpha},
                       "val": {"val_divergence": 3.0 - 0.1 * t * alpha}} for t in (1, 2, 3)]


def test_line_styles_tell_twenty_policies_apart_and_keep_each_policys_style():
    names = [f"policy-{i}" for i in range(20)]
    styles = plots.line_styles(names)
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 20
    assert plots.line_styles(names[:3]) == {n: styles[n] for n in names[:3]}


def test_plots_put_the_legend_beside_the_panels(tmp_path: Path):
    short = {"a": _steps(0.5), "b": _steps(0.25)}
    long = {"a-policy-with-a-very-long-name-" * 3: _steps(0.5), "b": _steps(0.25)}
    for plot in (plots.weight_trajectories, plots.validation_curves):
        narrow = mpimg.imread(plot(short, tmp_path / "short.png"))
        wide = mpimg.imread(plot(long, tmp_path / "long.png"))
        # a legend inside the axes would cover lines and leave the image as wide as before
        assert wide.shape[1] > narrow.shape[1] + 200
        assert wide.shape[0] == narrow.shape[0]

"""train/compare.py: mean ± sample std per metric, the best per column, Markdown/CSV/JSON agree."""

from __future__ import annotations

import csv
import io
import math

import pytest

from train.compare import build_table, direction, summarize


def test_summarize_by_hand() -> None:
    cell = summarize([1.0, 2.0, 4.0])
    assert cell.mean == pytest.approx(7 / 3)
    assert cell.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    nan_cell = summarize([math.nan, 3.0])
    assert nan_cell.mean == 3.0 and nan_cell.std == 0.0 and nan_cell.n == 1
    assert summarize([math.nan]).n == 0


def test_directions() -> None:
    assert direction("episode_return") == 1 and direction("rouge_l") == 1 and direction("exact_match") == 1
    assert direction("val_fkl") == -1 and direction("open_kl") == -1
    assert direction("n_open") == 0 and direction("tail_share") == 0


def test_table_best_and_formats() -> None:
    results = {
        "fkl": [{"episode_return": 1.0, "val_fkl": 0.5, "n_open": 3.0}, {"episode_return": 3.0, "val_fkl": 0.7,
                                                                         "n_open": 3.0}],
        "rkl": [{"episode_return": 0.0, "val_fkl": 0.2, "n_open": 3.0}, {"episode_return": 1.0, "val_fkl": 0.4,
                                                                         "n_open": 3.0}],
    }
    table = build_table(results, [100, 101])
    assert table.metrics[0] == "episode_return"
    assert table.best == {"episode_return": "fkl", "val_fkl": "rkl"}  # n_open is not ranked
    assert table.cells["rkl"]["val_fkl"].mean == pytest.approx(0.3)
    md = table.markdown()
    assert "| fkl | **2 ± 1.4** | 3 ± 0 | 0.6 ± 0.14 |" in md
    rows = list(csv.DictReader(io.StringIO(table.csv())))
    assert float(rows[1]["val_fkl_mean"]) == pytest.approx(0.3) and rows[1]["best"] == "val_fkl"
    data = table.to_json()
    assert data["rows"]["fkl"]["episode_return"]["values"] == [1.0, 3.0]


def test_ties_mark_nobody() -> None:
    table = build_table({"a": [{"val_fkl": 1.0}], "b": [{"val_fkl": 1.0}]}, [0])
    assert table.best == {}

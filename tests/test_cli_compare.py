"""train/compare.py: mean ± sample std per metric, the best per column, Markdown/CSV/JSON agree, the paired
differences between policies with their bootstrap intervals, and the TensorBoard runs of the policies."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train.callbacks import UPDATE_LOG_EVERY
from train.compare import (
    build_table,
    difference_pairs,
    direction,
    merge_results,
    pool_results,
    step_scalars,
    summarize,
    write_tensorboard,
)
from train.episode import EpisodeResult
from train.runs import sanitize


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


# ----------------------------------------------------------------------------------- paired differences
SEED_EFFECT = [0.0, 5.0, -3.0, 8.0]  # what a seed does to every policy (student init and data order)


def _runs(offset: float, noise: list[float]) -> list[dict[str, float]]:
    return [{"episode_return": s + offset + n, "val_fkl": 1.0 + s - offset, "n_open": 3.0}
            for s, n in zip(SEED_EFFECT, noise, strict=True)]


def test_difference_pairs() -> None:
    policies = ["fkl", "rkl", "akl", "ppo"]
    assert difference_pairs(policies, ["fkl", "rkl"]) == [("akl", "fkl"), ("ppo", "fkl"), ("akl", "rkl"),
                                                           ("ppo", "rkl")]
    assert difference_pairs(policies, ["missing"]) == [("rkl", "fkl"), ("akl", "fkl"), ("ppo", "fkl")]
    assert difference_pairs(["fkl", "rkl", "akl"], ["fkl", "rkl", "akl"]) == [("rkl", "fkl"), ("akl", "fkl"),
                                                                              ("akl", "rkl")]
    assert difference_pairs(["only"], ["only"]) == []


def test_paired_differences_by_seed() -> None:
    noise = [0.1, -0.1, 0.2, 0.0]
    results = {"fkl": _runs(0.0, [0.0] * 4), "rkl": _runs(2.0, noise), "akl": _runs(-1.0, [0.0] * 4)}
    table = build_table(results, [100, 101, 102, 103], references=["fkl"])
    assert table.references == ["fkl"]
    found = {(d.policy, d.metric): d for d in table.differences}
    assert set(found) == {(p, m) for p in ("rkl", "akl") for m in ("episode_return", "val_fkl")}  # n_open unranked
    rkl = found[("rkl", "episode_return")]
    assert rkl.mean == pytest.approx(2.0 + sum(noise) / 4) and rkl.n == 4
    # Pairing by seed removes the seed effect (range 11): the 4-seed t interval spans only the noise around +2,
    # mean ± t(0.975, 3 df) · std(noise) / √4 with t = 3.182446.
    half = 3.182446 * float(np.std(noise, ddof=1)) / 2
    assert (rkl.low, rkl.high) == pytest.approx((rkl.mean - half, rkl.mean + half)) and rkl.method == "t"
    akl = found[("akl", "val_fkl")]
    assert (akl.mean, akl.low, akl.high) == pytest.approx((1.0, 1.0, 1.0))  # constant difference: zero width
    md = table.markdown()
    assert "| policy − reference | episode_return | val_fkl |" in md
    assert f"| akl − fkl | {found[('akl', 'episode_return')].fmt()} | +1 [1, 1] |" in md  # 4 seeds: no mark
    assert "95% Student t interval; t below 30 pairs" in md and "With 4 seeds these are descriptive" in md
    data = table.to_json()
    assert data["references"] == ["fkl"] and data["difference_settings"]["confidence"] == 0.95
    assert {"policy": "akl", "reference": "fkl", "metric": "val_fkl", "mean": 1.0, "low": 1.0, "high": 1.0,
            "n": 4, "method": "t", "improvement": 0.0} in [  # a divergence 1 higher on every seed: never better
        {k: pytest.approx(v) if isinstance(v, float) else v for k, v in d.items()} for d in data["differences"]]


def test_a_table_asked_for_bca_intervals_makes_and_names_them() -> None:
    from arkd_env.eval.stats import bca_ci, paired_differences

    noise = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2]
    seeds = [0.0, 5.0, -3.0, 8.0, 1.0, 2.0]
    results = {"fkl": [{"episode_return": s} for s in seeds],
               "rkl": [{"episode_return": s + 1.0 + n} for s, n in zip(seeds, noise, strict=True)]}
    table = build_table(results, list(range(6)), references=["fkl"], method="bca")
    (diff,) = table.differences
    # The same float differences the table takes (s + 1 + n - s is not always 1 + n exactly).
    expected = bca_ci(paired_differences([r["episode_return"] for r in results["rkl"]], seeds))
    assert diff.method == "bca" and (diff.low, diff.high) == pytest.approx((expected.low, expected.high))
    md = table.markdown()
    assert "95% BCa bootstrap interval, 10000 resamples]" in md and "t below" not in md
    assert table.to_json()["difference_settings"]["interval"] == "BCa bootstrap"


def test_differences_skip_missing_values_and_mark_only_clear_ones() -> None:
    results = {"a": [{"rouge_l": 10.0}, {"rouge_l": 20.0}, {"rouge_l": math.nan}],
               "b": [{"rouge_l": 12.0}, {"rouge_l": 17.0}, {"rouge_l": 30.0}]}
    (diff,) = build_table(results, [1, 2, 3], references=["a"]).differences
    assert (diff.policy, diff.reference, diff.n) == ("b", "a", 2) and diff.mean == pytest.approx(-0.5)
    # Two pairs (differences +2 and -3): the t interval on 1 degree of freedom, -0.5 ± 12.7062 · 3.5355 / √2.
    half = 12.706205 * float(np.std([2.0, -3.0], ddof=1)) / math.sqrt(2)
    assert (diff.low, diff.high) == pytest.approx((-0.5 - half, -0.5 + half)) and not diff.fmt().endswith("*")
    (single,) = build_table({"a": [{"rouge_l": 1.0}], "b": [{"rouge_l": 3.0}]}, [7]).differences
    assert single.mean == 2.0 and math.isnan(single.low) and single.fmt() == "+2 (one seed, no interval)"
    with pytest.raises(ValueError, match="same seeds"):
        build_table({"a": [{"rouge_l": 1.0}], "b": [{"rouge_l": 1.0}, {"rouge_l": 2.0}]}, [1, 2])


def test_paired_wins_and_interquartile_means_reach_the_table_and_its_files() -> None:
    # Lower divergence is better: b beats a on seeds 1 and 3, ties on 2, loses on 4.
    results = {"a": [{"val_divergence": v} for v in (2.0, 2.0, 2.0, 1.0)],
               "b": [{"val_divergence": v} for v in (1.0, 2.0, 1.5, 9.0)]}
    table = build_table(results, [1, 2, 3, 4], references=["a"])
    (diff,) = table.differences
    assert diff.improvement == pytest.approx((2 + 0.5) / 4)
    assert "| policy − reference | val_divergence | P(better on val_divergence) |" in table.markdown()
    assert f"| b − a | {diff.fmt()} | 0.62 |" in table.markdown()
    # The middle half of b's four values (1.5, 2.0) ignores the diverged 9.
    assert table.cells["b"]["val_divergence"].iqm == pytest.approx(1.75)
    rows = {r["policy"]: r for r in csv.DictReader(io.StringIO(table.csv()))}
    assert float(rows["b"]["val_divergence_iqm"]) == pytest.approx(1.75)
    # With the keyed score among the columns, it is the one P(better) is given for, not the first by name.
    scored = {k: [{**r, "exact_match": 0.0, "val_score": 1.0 - r["val_divergence"] / 10} for r in v]
              for k, v in results.items()}
    assert "| val_divergence | val_score | P(better on val_score) |" in build_table(scored, [1, 2, 3, 4]).markdown()


def test_difference_prints_rounding_residue_as_zero() -> None:
    from train.compare import Difference

    assert Difference("b", "a", "tail_coverage", 5.55e-18, -0.04, 0.04, 5).fmt() == "+0 [-0.04, 0.04]"
    assert Difference("b", "a", "tail_coverage", 1e-9, 1e-9, 2e-9, 10).fmt() == "+1e-09 [1e-09, 2e-09] *"
    # Two seeds: the interval excludes 0, but is too narrow to be marked.
    assert Difference("b", "a", "tail_coverage", 0.0187, 0.0124, 0.0251, 2).fmt() == "+0.0187 [0.0124, 0.0251]"


def test_tables_saved_apart_merge_into_the_table_of_one_comparison() -> None:
    seeds = [100, 101, 102, 103]
    first = {"fkl": _runs(0.0, [0.0] * 4), "rkl": _runs(2.0, [0.1, -0.1, 0.2, 0.0])}
    later = {"akl": _runs(-1.0, [0.3, 0.0, 0.0, -0.2])}
    saved = [json.loads(json.dumps(build_table(part, seeds).to_json())) for part in (first, later)]
    merged_seeds, merged = merge_results(saved)
    assert merged_seeds == seeds and merged == {**first, **later}
    together = build_table({**first, **later}, seeds, references=["fkl"])
    assert build_table(merged, merged_seeds, references=["fkl"]).markdown() == together.markdown()
    saved[1]["seeds"] = [100, 101, 102, 104]
    with pytest.raises(ValueError, match=r"table 2 ran on seeds \[100, 101, 102, 104\], table 1 on \[100, 101, "
                                         r"102, 103\]"):
        merge_results(saved)


def test_comparisons_on_disjoint_seeds_pool_into_one_over_all_seeds() -> None:
    def runs(*values: float) -> list[dict[str, float]]:
        return [{"val_fkl": v} for v in values]

    early = {"fkl": runs(2.0, 2.5), "akl": runs(1.9, 2.6), "only-early": runs(3.0, 3.0)}
    late = {"akl": runs(2.2, 2.0, 2.4), "fkl": runs(2.3, 2.2, 2.4)}
    seeds, pooled = pool_results([([100, 101], early), ([105, 106, 107], late)])
    # Seeds in order of the comparisons; a policy missing from one comparison is left out.
    assert seeds == [100, 101, 105, 106, 107]
    assert pooled == {"fkl": early["fkl"] + late["fkl"], "akl": early["akl"] + late["akl"]}
    one = build_table({p: early[p] + late[p] for p in ("fkl", "akl")}, seeds, references=["fkl"])
    assert build_table(pooled, seeds, references=["fkl"]).markdown() == one.markdown()
    with pytest.raises(ValueError, match="seed 101 is in two of the pooled comparisons"):
        pool_results([([100, 101], early), ([101, 102, 103], late)])


# ----------------------------------------------------------------------------------- TensorBoard
UPDATES_PER_STEP = 4


def _episode(policy: str, seed: int, alpha: float, divergence: list[float]) -> EpisodeResult:
    """An episode of 2 env steps of ``UPDATES_PER_STEP`` updates each; its loss at update u is seed + u."""
    steps: list[dict[str, Any]] = [{"step": 0, "weights": {"fkl": 0.5, "rkl": 0.5}, "reward": 0.0,
                                    "val": {"val_divergence": divergence[0]}}]
    for t in (1, 2):
        updates = range((t - 1) * UPDATES_PER_STEP + 1, t * UPDATES_PER_STEP + 1)
        steps.append({"step": t, "weights": {"fkl": alpha, "rkl": 1 - alpha}, "reward": 0.1 * t,
                      "val": {"val_divergence": divergence[t]},
                      "update_log": [{"update": u, "loss": seed + u, "lr": 0.01 / u} for u in updates]})
    return EpisodeResult(policy=policy, seed=seed, episode_return=0.3, steps=steps)


def test_step_scalars_of_one_episode() -> None:
    scalars = step_scalars(_episode("a", 3, 0.25, [3.0, 2.0, 1.0]).steps)
    assert scalars["val/val_divergence"] == {0: 3.0, 1: 2.0, 2: 1.0}
    assert scalars["weight/fkl"] == {1: 0.25, 2: 0.25} and scalars["fkl_share"] == {1: 0.25, 2: 0.25}
    assert scalars["reward"] == {1: 0.1, 2: 0.2}  # the reset earned nothing
    logged = [u for u in range(1, 2 * UPDATES_PER_STEP + 1) if u % UPDATE_LOG_EVERY == 0]
    assert scalars["update/loss"] == {u: 3.0 + u for u in logged}
    assert scalars["update/lr"] == pytest.approx({u: 0.01 / u for u in logged})
    assert scalars["update/weight/rkl"] == {u: 0.75 for u in logged}


def _read(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _values(acc: EventAccumulator, tag: str) -> dict[int, Any]:  # values are pytest.approx
    return {e.step: pytest.approx(e.value) for e in acc.Scalars(tag)}


def test_compare_writes_one_tensorboard_run_per_policy_with_the_mean_over_seeds(tmp_path: Path) -> None:
    runs = {"fkl": [_episode("fkl", 100, 1.0, [3.0, 2.0, 1.0]), _episode("fkl", 101, 1.0, [3.0, 1.0, 0.0])],
            "mix/2": [_episode("mix/2", 100, 0.5, [3.0, 2.5, 2.0]), _episode("mix/2", 101, 0.5, [3.0, 2.0, 1.0])]}
    table = build_table({n: [{"val_divergence": r.steps[-1]["val"]["val_divergence"]} for r in rs]
                         for n, rs in runs.items()}, [100, 101])
    write_tensorboard(table, runs, tmp_path)
    assert "comparison/table/text_summary" in _read(tmp_path).Tags()["tensors"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["fkl", sanitize("mix/2")]
    fkl, mix = _read(tmp_path / "fkl"), _read(tmp_path / sanitize("mix/2"))
    assert set(fkl.Tags()["scalars"]) == set(mix.Tags()["scalars"])  # one chart per tag overlays the policies
    assert _values(fkl, "val/val_divergence") == {0: 3.0, 1: 1.5, 2: 0.5}
    assert _values(mix, "val/val_divergence") == {0: 3.0, 1: 2.25, 2: 1.5}
    assert _values(mix, "seed_101/val/val_divergence") == {0: 3.0, 1: 2.0, 2: 1.0}  # every seed, not the first
    assert _values(mix, "weight/fkl") == {1: 0.5, 2: 0.5} and _values(fkl, "fkl_share") == {1: 1.0, 2: 1.0}
    # The loss at update u is seed + u: the mean over seeds 100 and 101 is 100.5 + u.
    assert _values(fkl, "update/loss") == {u: 100.5 + u for u in (4, 8)}
    assert _values(fkl, "seed_100/update/loss") == {u: 100.0 + u for u in (4, 8)}


def test_the_terminal_table_leads_with_the_score_and_leaves_the_rest_to_the_files() -> None:
    seeds = [1, 2]
    runs = {name: [{"episode_return": r, "val_score": s, "val_validity": v, "val_fkl": 1.0, "val_ce": 2.0}
                   for r, s, v in rows] for name, rows in
            {"fkl": [(0.1, 0.5, 0.6), (0.2, 0.6, 0.7)], "rkl": [(0.0, 0.3, 0.8), (0.1, 0.4, 0.9)]}.items()}
    table = build_table(runs, seeds, references=["fkl"])
    short = table.headline()
    assert short.splitlines()[0] == "| policy | episode_return | val_score | val_validity |"
    assert "val_ce" not in short and "val_fkl" not in short  # ... in the files only
    assert "(2 more columns in table.md, table.csv and table.json.)" in short
    assert "| policy − reference | episode_return | val_score | val_validity |" in short
    assert "val_fkl" in table.markdown()
    plain = build_table({"a": [{"zeta": 1.0}], "b": [{"zeta": 2.0}]}, [1])  # no headline column: show them all
    assert plain.headline() == plain.markdown()


def test_with_an_instance_set_every_seed_poses_a_test_instance_the_same_for_every_policy(tmp_path: Path) -> None:
    import yaml

    from train.compare import run_compare
    from train.config import load_run_config

    def instance(name: str, first_key: int) -> dict[str, Any]:
        return {"name": name, "n_keys": 2, "first_key": first_key, "deterministic_share": 0.25, "student_hidden": 16,
                "student_layers": 1, "member_blind": False, "score_beta": 1.0}

    splits = {"train": [instance("a", 0), instance("b", 2)], "test": [instance("t", 4), instance("u", 6)]}
    for split, rows in splits.items():
        (tmp_path / f"toy-{split}.yaml").write_text(yaml.safe_dump({"set": "toy", "split": split, "instances": rows}))
    cfg = load_run_config("nano", overrides=[
        "engine.data.source=keyed", "engine.data.num_examples=160", "engine.data.val_size=16",
        "engine.data.keyed={n_keys: 8, modes_per_key: 4, teacher_deterministic_share: 0.25}", "engine.rouge_size=2",
        f"env.instances={tmp_path / 'toy-train.yaml'}:{tmp_path / 'toy-test.yaml'}", "env.horizon=1",
        "env.updates_per_step=1", "run.workers=1"])
    seeds = [1, 2, 3, 4, 5]
    comparison = run_compare(cfg, ["fkl", "rkl"], seeds, tmp_path / "compare")
    posed = {name: [r.steps[0]["instance"] for r in runs] for name, runs in comparison.runs.items()}
    assert set(posed["fkl"]) <= {"t", "u"} and posed["fkl"] == posed["rkl"]
    saved = json.loads((tmp_path / "compare" / "runs" / "fkl" / "seed_1.json").read_text())
    assert saved["steps"][0]["instance"] == posed["fkl"][0]

"""benchmarks/eval_online.py: its seed lists, and the whole comparison end to end on two seeds of a tiny nano."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _benchmarks import BENCHMARKS, load_benchmark
from _cli_helpers import env


def test_seed_lists() -> None:
    bench = load_benchmark("eval_online")
    assert bench.parse_seeds("300-303") == [300, 301, 302, 303]
    assert bench.parse_seeds("7,9") == [7, 9]
    assert len(bench.parse_seeds(bench.DEFAULT_SEEDS)) >= 20  # the floor of paired seeds


def test_the_best_constant_is_chosen_by_the_score_upwards_and_by_a_divergence_downwards() -> None:
    bench = load_benchmark("eval_online")
    assert bench.primary_metric({"val_score": 0.5, "test_divergence": 1.0}) == "val_score"
    assert bench.primary_metric({"test_divergence": 1.0, "val_divergence": 2.0}) == "test_divergence"
    assert bench.primary_metric({"val_divergence": 2.0}) == "val_divergence"
    metrics = {c: [{"val_score": 0.1, "val_divergence": 3.0}] for c in bench.CONSTANTS}
    metrics["fixed:0.75"] = [{"val_score": 0.9, "val_divergence": 5.0}]
    metrics["rkl"] = [{"val_score": 0.0, "val_divergence": 1.0}]
    assert bench.best_constant(metrics, "val_score") == "fixed:0.75"
    assert bench.best_constant(metrics, "val_divergence") == "rkl"
    del metrics["fixed:0.75"]  # skipped (--skip): chosen among the constants that were played
    assert bench.best_constant(metrics, "val_score") in set(bench.CONSTANTS) - {"fixed:0.75", "rkl"}


def test_skip_names_only_policies_it_would_play_and_never_the_reference(tmp_path: Path) -> None:
    for bad, named in (("nope", "nope: not a baseline"), ("fixed:0.5", "fixed:0.5: the reference")):
        done = subprocess.run([sys.executable, str(BENCHMARKS / "eval_online.py"), "--preset", "nano", "--skip", bad,
                               "--work", str(tmp_path / "w")], capture_output=True, text=True, env=env(), timeout=120)
        assert done.returncode == 2 and f"--skip {named}" in done.stderr
    assert not (tmp_path / "w").exists()  # refused before any folder or run


def test_with_an_instance_set_every_test_instance_is_paired_with_every_seed() -> None:
    from arkd_env.instances import instance_set_from
    from train.config import load_run_config

    bench = load_benchmark("eval_online")
    cfg = load_run_config("blind", None, [])
    tests = instance_set_from("blind").names("test")
    pairs = bench.paired_runs(cfg, [7, 8])
    assert [(name, seed) for name, seed, _ in pairs] == [(n, s) for n in tests for s in (7, 8)]
    assert all(played.env.instance == name for name, _, played in pairs)
    pinned = load_run_config("blind", None, [f"env.instance={tests[1]}"])
    assert [(name, seed) for name, seed, _ in bench.paired_runs(pinned, [7])] == [(tests[1], 7)]
    assert [(name, played.env.instance) for name, _, played in bench.paired_runs(load_run_config("nano", None, []),
                                                                                 [7])] == [(None, None)]
    # the preset's references join the constants, each once
    assert bench.baselines(cfg)[-2:] == cfg.run.policies[-2:] and bench.baselines(cfg).count("fkl") == 1


def test_a_finished_run_is_read_back_instead_of_played_again(tmp_path: Path) -> None:
    from train.config import load_run_config

    bench = load_benchmark("eval_online")
    kept = tmp_path / "fkl" / "task_3.json"
    kept.parent.mkdir()
    kept.write_text(json.dumps({"policy": "fkl", "seed": 3, "episode_return": 0.25, "metrics": {"val_score": 0.5}}))
    # a preset that could not be played: reading back must not build anything
    result = bench.played_result(load_run_config("nano", None, []), "no-such-policy", 3, kept)
    assert (result.policy, result.episode_return, result.metrics) == ("fkl", 0.25, {"val_score": 0.5})


def test_a_finished_online_run_is_read_back_and_an_unfinished_or_foreign_one_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from train.config import load_run_config

    bench = load_benchmark("eval_online")
    resumed: list[bool] = []
    monkeypatch.setattr(bench, "run_online", lambda *a, resume: resumed.append(resume) or "played")
    cfg = load_run_config("nano", None, [])
    out = tmp_path / "online-bandit" / "task" / "seed_3"
    out.mkdir(parents=True)
    kept = {"policy": "online-bandit", "seed": 3, "wall_s": 9.0, "online": "bandit", "complete": True,
            "metrics": {"episode_return": 0.25, "val_score": 0.5}, "steps": [{"weights": {"fkl": 1.0}}]}
    (out / "metrics.json").write_text(json.dumps(kept))
    result = bench.online_result(cfg, "online-bandit", 3, out)
    assert (result.policy, result.episode_return, result.metrics, result.steps) == (
        "online-bandit", 0.25, {"val_score": 0.5}, [{"weights": {"fkl": 1.0}}]) and resumed == []
    (out / "metrics.json").write_text(json.dumps({**kept, "complete": False}))
    (out / "online.json").write_text("{}")
    assert bench.online_result(cfg, "online-bandit", 3, out) == "played" and resumed == [True]
    (out / "metrics.json").write_text(json.dumps(kept))
    with pytest.raises(SystemExit, match=r"metrics\.json: a run of online 'bandit' on seed 3, not of 'ppo'"):
        bench.online_result(cfg, "online-ppo", 3, out)


@pytest.mark.slow
def test_every_policy_runs_on_every_seed_and_the_report_pairs_them(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "eval_online.py"), "--preset", "nano", "--seeds", "5,6",
                           "--set", "env.updates_per_step=1", "--set", "engine.rouge_size=2",
                           "--set", "engine.eval_size=8", "--skip", "akl", "--work", str(tmp_path)],
                          capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stderr
    bench = load_benchmark("eval_online")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = [*bench.CONSTANTS, *(h for h in bench.HEURISTICS if h != "akl"), *bench.ONLINE]  # akl skipped
    assert list(metrics) == expected and all(len(runs) == 2 for runs in metrics.values())
    # the cost column: greedy's lookahead probes count, a plain run's 4 steps of 1 update do not add any
    assert [r["student_updates"] for r in metrics["fixed:0.5"]] == [4.0, 4.0]
    assert all(r["student_updates"] > 4.0 for r in metrics["greedy"])
    report = (tmp_path / "report.md").read_text()
    assert "--skip akl" in report and "| akl |" not in report
    assert "95% BCa bootstrap interval" in report  # the interval the evaluation reports unless told otherwise
    for name in expected:
        assert f"| {name} |" in report
    for name in bench.ONLINE:
        assert f"{name} − fixed:0.5" in report and (tmp_path / name / "task" / "seed_5" / "student").is_dir()
        assert f"{name} − greedy" in report

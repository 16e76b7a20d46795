"""benchmarks/headroom_keyed.py on nano-sized instances: every reference policy runs, the tuned choices follow
the tuning runs' files, the oracle is at least the best constant on test, and a rerun resumes from the files."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from _benchmarks import load_benchmark


def _bench() -> ModuleType:
    return load_benchmark("headroom_keyed")


NANO_KEYED = ["engine.data.source=keyed", "engine.data.num_examples=160", "engine.data.val_size=16",
              "engine.data.keyed={n_keys: 8, modes_per_key: 4, teacher_deterministic_share: 0.25}",
              "env.horizon=2", "env.updates_per_step=2"]


def _instance(name: str, n_keys: int, first_key: int, score_beta: float = 1.0) -> dict[str, Any]:
    return {"name": name, "n_keys": n_keys, "first_key": first_key, "deterministic_share": 0.25,
            "student_hidden": 16, "student_layers": 1, "member_blind": False, "score_beta": score_beta}


def test_the_study_runs_every_reference_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = {"train": [_instance("a", 2, 0, 0.5), _instance("b", 3, 2, 2.0)], "test": [_instance("t", 2, 6)]}
    for split, rows in splits.items():
        (tmp_path / f"toy-{split}.yaml").write_text(yaml.safe_dump({"set": "toy", "split": split, "instances": rows}))
    out = tmp_path / "study"
    # A saved policy stands in for a trained agent: a baseline saved as a file is loaded as an agent would be.
    from agents.baselines import make_baseline

    agent = str(make_baseline("fixed:0.5", None).save(tmp_path / "agent" / "policy.zip"))
    argv = ["--preset", "nano", *[a for o in NANO_KEYED for a in ("--set", o)],
            "--instances", f"{tmp_path / 'toy-train.yaml'}:{tmp_path / 'toy-test.yaml'}",
            "--alphas", "0", "1", "--schedules", "linear:1->0", "--tune-seeds", "3", "--eval-seeds", "7", "9",
            "--agents", agent, "--out", str(out)]
    bench = _bench()
    assert bench.main(argv) == 0
    result = json.loads((out / "report.json").read_text())
    tuned = result["tuned"]

    def score(stage: str, instance: str, seed: int, spec: str) -> float:
        return float(json.loads(bench.run_path(out, stage, instance, seed, spec).read_text())["val_score"])

    tune_means = {spec: (score("tune", "a", 3, spec) + score("tune", "b", 3, spec)) / 2
                  for spec in ("fixed:0", "fixed:1")}
    assert tune_means["fixed:0"] != tune_means["fixed:1"]  # a tie would make the choice below trivial
    assert tuned["constant"] == max(tune_means, key=lambda k: tune_means[k])
    assert tuned["perturbed"] == {"fixed:0": "fixed:0.02", "fixed:1": "fixed:0.98"}[tuned["constant"]]
    assert tuned["schedule"] == "linear:1->0"
    # The instance-aware constant plays each training instance's own best constant at its beta.
    own = {name: max(("fixed:0", "fixed:1"), key=lambda spec: score("tune", name, 3, spec)) for name in ("a", "b")}
    # log(beta / 0.1) / log(100): 0.349485 at beta 0.5, 0.650515 at beta 2.
    assert tuned["instance_aware"] == (f"by-feature:instance_log_score_beta:0.349485={own['a'].removeprefix('fixed:')}"
                                       f"/0.650515={own['b'].removeprefix('fixed:')}")
    # Every reference of the test stage was played on every test run, and the pair is the seed's.
    for spec in ("fkl", "rkl", tuned["constant"], tuned["perturbed"], "linear:1->0", tuned["instance_aware"],
                 "fixed:0", "fixed:1"):
        for seed in (7, 9):
            assert bench.run_path(out, "test", "t", seed, spec).is_file()
    differences = [score("test", "t", s, tuned["constant"]) - score("test", "t", s, tuned["perturbed"])
                   for s in (7, 9)]
    assert result["noise"]["mean"] == pytest.approx(sum(differences) / 2)
    # The oracle picks the best constant on the very runs it is scored on: never below the tuned constant.
    assert result["oracle"]["mean"] >= -1e-12
    assert set(result["dynamic"]) == {"schedule", "instance-aware constant"}
    text = (out / "report.md").read_text()
    assert f"{result['sigma']:.4f}" in text and "per-instance oracle (tuned on test, a ceiling" in text
    # The agent was played on every test run and is scored against the best constant, run by run.
    agent_gain = [score("test", "t", s, agent) - score("test", "t", s, tuned["constant"]) for s in (7, 9)]
    row = result["agents"][agent]
    assert row["vs best constant"]["mean"] == pytest.approx(sum(agent_gain) / 2)
    assert [set(alphas) for alphas in row["alphas"]] == [{0.5}, {0.5}]
    assert f"`{agent}` − best constant" in (out / "report.md").read_text()
    assert (out / "alphas_t.png").stat().st_size > 0
    references = json.loads((out / "references.json").read_text())
    assert references["instance-aware constant"] == tuned["instance_aware"]
    assert references["per-instance oracle (tuned on test)"] == result["oracle"]["chosen"]
    # A rerun plays nothing and writes the same report.
    capsys.readouterr()
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "tune: 0 runs to play" in printed and "test: 0 runs to play" in printed
    again = json.loads((out / "report.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_s"} == {k: v for k, v in result.items() if k != "wall_s"}


def test_tuning_and_evaluation_seeds_must_differ(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _bench().main(["--tune-seeds", "1", "--eval-seeds", "1", "--out", str(tmp_path)])


def test_the_blind_preset_ships_the_studys_references() -> None:
    from arkd_env.config import load_preset
    from train.config import load_run_config

    references = json.loads((Path(__file__).parents[1] / "docs" / "results" / "blind_design7" /
                             "references.json").read_text())
    policies = load_run_config("blind").run.policies
    for name in ("best constant", "best schedule", "instance-aware constant"):
        spec = references[name]
        assert (spec in policies) or (spec == "fixed:1" and "fkl" in policies), name
    # The instance-aware constant reads a feature the blind preset's env has.
    from agents.baselines import make_baseline
    from arkd_env.instances import FEATURE_NAMES

    feature = make_baseline(references["instance-aware constant"], None).feature  # type: ignore[attr-defined]
    assert feature.removeprefix("instance_") in FEATURE_NAMES and load_preset("blind").env.instances == "blind"


def test_instances_of_one_feature_value_share_the_mean_of_their_best_constants() -> None:
    from arkd_env.instances import Instance, InstanceSet

    bench = _bench()

    def instance(name: str, beta: float) -> Instance:
        return Instance(**{**_instance(name, 2, 0, beta), "first_key": {"a": 0, "b": 2, "c": 4}[name]})

    instances = InstanceSet(name="toy", train=(instance("a", 0.5), instance("b", 0.5), instance("c", 2.0)),
                            test=(Instance(**_instance("t", 2, 6)),))
    # Best constants by hand: a -> 0, b -> 1 (same beta: they share α 0.5), c -> 1.
    scores = {("a", "fixed:0"): 0.9, ("a", "fixed:1"): 0.1, ("b", "fixed:0"): 0.2, ("b", "fixed:1"): 0.8,
              ("c", "fixed:0"): 0.3, ("c", "fixed:1"): 0.7}
    done = {(spec, name, 0): {"val_score": value} for (name, spec), value in scores.items()}
    runs = [("a", 0), ("b", 0), ("c", 0)]
    assert bench.instance_aware(done, [0.0, 1.0], runs, instances, "log_score_beta") == \
        "by-feature:instance_log_score_beta:0.349485=0.5/0.650515=1"


def test_long_specs_that_differ_in_their_tails_get_files_of_their_own(tmp_path: Path) -> None:
    bench = _bench()
    long = "by-feature:instance_log_score_beta:" + "/".join(f"0.{i}=0.5" for i in range(1, 9))
    first, second = (bench.run_path(tmp_path, "test", "t", 1, long + tail) for tail in ("/0.95=1", "/0.95=0"))
    assert first != second and first.parent == second.parent
    assert bench.run_path(tmp_path, "test", "t", 1, "phases:0.5/1").name == "phases-0.5-1.json"


def test_a_saved_agent_is_played_with_its_own_actions_and_the_presets_reward(tmp_path: Path) -> None:
    from agents.baselines import make_baseline

    splits = {"train": [_instance("a", 2, 0)], "test": [_instance("t", 2, 6)]}
    for split, rows in splits.items():
        (tmp_path / f"toy-{split}.yaml").write_text(yaml.safe_dump({"set": "toy", "split": split, "instances": rows}))
    agent = make_baseline("fixed:0.5", None).save(tmp_path / "agent" / "policy.zip")
    (tmp_path / "agent" / "config.yaml").write_text(yaml.safe_dump(
        {"env": {"action_mode": "grid", "alpha_grid": [0.0, 1.0], "reward": "relative_score"}}))
    instances = f"{tmp_path / 'toy-train.yaml'}:{tmp_path / 'toy-test.yaml'}"
    env = _bench()._env("nano", NANO_KEYED, instances, str(agent))
    assert (env.config.action_mode, env.config.alpha_grid) == ("grid", [0.0, 1.0])
    # the training reward's probes would cost updates the budget does not give: the preset's reward stays
    assert env.config.reward == "val_divergence"
    assert _bench()._env("nano", NANO_KEYED, instances, "fkl").config.action_mode == "mix"

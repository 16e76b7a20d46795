from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from train.config import RunConfig
from train.episode import check_played, env_overrides, played_config, replaced_settings


def test_a_saved_policy_is_played_with_the_observations_it_was_trained_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.zip").write_bytes(b"")
    trained = {"horizon": 3, "features": ["progress", "probe_gap"], "probe_updates": 2, "action_mode": "grid",
               "alpha_grid": [0.0, 0.6, 1.0]}
    (run / "config.yaml").write_text(yaml.safe_dump({"env": trained}))
    # The interface travels with the policy; the run protocol (horizon) stays the comparison's.
    expected = {"features": ["progress", "probe_gap"], "probe_updates": 2, "action_mode": "grid",
                "alpha_grid": [0.0, 0.6, 1.0]}
    assert env_overrides(str(run)) == env_overrides(str(run / "policy.zip")) == expected
    alone = tmp_path / "policy.zip"
    alone.write_bytes(b"")
    assert env_overrides(str(alone)) == {}  # a bare policy file brings no settings
    assert env_overrides("akl")["action_mode"] == "simplex"


def test_the_settings_a_saved_policy_replaces_are_named_and_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.zip").write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump({"env": {"action_mode": "grid", "probe_updates": 4}}))
    cfg = RunConfig()
    assert cfg.env.action_mode == "mix" and cfg.env.probe_updates == 4
    # Only the setting that differs is named; the one the comparison already has is not.
    assert replaced_settings(cfg, str(run)) == (f"{run}: played with the env settings it was trained with: "
                                               "env.action_mode='grid' (not 'mix')")
    assert played_config(cfg, str(run)).env.action_mode == "grid"
    same = replace(cfg, env=replace(cfg.env, action_mode="grid"))
    assert replaced_settings(same, str(run)) is None
    assert replaced_settings(cfg, "akl") is None  # a baseline's own settings are part of its definition
    assert played_config(cfg, "akl").env.action_mode == "simplex"


def test_check_played_fails_on_a_bad_spec_and_names_replaced_settings_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.zip").write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump({"env": {"action_mode": "grid"}}))
    check_played(RunConfig(), str(run))
    assert capsys.readouterr().err == replaced_settings(RunConfig(), str(run)) + "\n"
    check_played(RunConfig(), "fixed:0.5")
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="fixed:2"):
        check_played(RunConfig(), "fixed:2")
    with pytest.raises(FileNotFoundError, match="missing: no such policy file"):
        check_played(RunConfig(), str(tmp_path / "missing"))


def test_each_step_records_the_observation_its_weights_were_chosen_from() -> None:
    from train.config import load_run_config
    from train.episode import play

    cfg = load_run_config("nano", overrides=["env.horizon=3", "env.updates_per_step=1", "engine.eval_size=8",
                                             "engine.rouge_size=2"])
    result, env = play(cfg, "linear:1->0", seed=5, generate=False)
    names = env.unwrapped.feature_names
    env.close()
    acting = result.steps[1:]
    assert len(acting) == 3 and "observed" not in result.steps[0]
    for k, step in enumerate(acting):
        assert list(step["observed"]) == names
        # Chosen before the step ran: progress and the last weights are those of the step before.
        assert step["observed"]["progress"] == pytest.approx(k / 3)
        assert step["observed"]["w_fkl"] == pytest.approx(result.steps[k]["weights"]["fkl"])
    assert acting[1]["observed"]["w_fkl"] != acting[2]["observed"]["w_fkl"]  # linear 1->0 moves the weight


def test_student_updates_count_every_probe_the_episode_paid_for() -> None:
    from train.config import load_run_config
    from train.episode import play

    base = ["env.horizon=3", "env.updates_per_step=2", "engine.eval_size=8", "engine.rouge_size=2"]
    plain, env = play(load_run_config("nano", overrides=base), "fkl", seed=5, generate=False)
    env.close()
    assert plain.metrics["student_updates"] == 3 * 2
    # The lookahead features cost 2 × probe_updates per observation: the one reset makes, and one per step.
    probes = [*base, "env.probe_updates=1", "env.features=[progress, probe_gap, probe_gain]"]
    probed, env = play(load_run_config("nano", overrides=probes), "fkl", seed=5, generate=False)
    env.close()
    assert probed.metrics["student_updates"] == 3 * 2 + 4 * 2 * 1
    # greedy's lookahead tries each of its α for a step's updates before every step
    greedy, env = play(load_run_config("nano", overrides=base), "greedy", seed=5, generate=False)
    env.close()
    assert greedy.metrics["student_updates"] > 3 * 2

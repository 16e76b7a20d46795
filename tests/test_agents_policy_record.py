"""policy.zip describes what it observes: the record written on save, and the one-line refusals on load."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from _nano import nano_env

from agents import load_agent, make_agent, save_agent
from agents.policy_record import META_FILE, RECORD_KEY, check_record, mismatch
from arkd_env import ARKDWarning

SAVED = {"features": ["progress", "fkl", "w_fkl"], "action_mode": "grid", "components": ["fkl", "rkl"],
         "alpha_grid": [0.0, 0.5, 1.0]}


def test_a_saved_policy_records_its_env(tmp_path: Path) -> None:
    env = nano_env("grid")
    path = save_agent(make_agent("ppo", env, {"n_steps": 2, "batch_size": 2}), tmp_path / "policy")
    with zipfile.ZipFile(path) as archive:
        record = json.loads(archive.read(META_FILE))[RECORD_KEY]
    assert record["features"] == env.unwrapped.feature_names
    assert record["action_mode"] == "grid" and record["alpha_grid"] == env.unwrapped.alpha_grid
    assert record["preset"] == "nano" and record["reward"] == env.unwrapped.reward_metric


def test_a_grid_policy_in_a_mix_env_is_one_line(tmp_path: Path) -> None:
    path = save_agent(make_agent("ppo", nano_env("grid"), {"n_steps": 2, "batch_size": 2}), tmp_path / "policy")
    with pytest.raises(ValueError, match=r"^\S+policy.zip: action_mode: the policy was trained with 'grid', "
                                         r"this one has 'mix'$"):
        load_agent(path, nano_env("mix"))


def test_an_old_policy_without_the_record_loads_with_a_warning(tmp_path: Path) -> None:
    env = nano_env("mix")
    path = save_agent(make_agent("ppo", env, {"n_steps": 2, "batch_size": 2}), tmp_path / "policy")
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for name in source.namelist():
            entry = json.loads(source.read(name)) if name == META_FILE else None
            if entry is not None:
                del entry[RECORD_KEY]
            target.writestr(name, json.dumps(entry) if entry is not None else source.read(name))
    with pytest.warns(ARKDWarning, match="old.zip: saved without a record"):
        model = load_agent(old, env)
    assert model.predict(env.reset(seed=0)[0])[0].shape == env.action_space.shape


@pytest.mark.parametrize(("current", "message"), [
    ({**SAVED, "alpha_grid": [0.0, 0.25, 1.0]}, "alpha_grid: the policy was trained with [0.0, 0.5, 1.0], this one "
                                                "has [0.0, 0.25, 1.0]"),
    ({**SAVED, "features": ["progress", "w_fkl"]}, "features: the policy observes 'fkl', which this one does not "
                                                   "provide"),
    ({**SAVED, "features": ["progress", "fkl", "w_fkl", "rkl"]}, "features: this one provides 'rkl', which the "
                                                                 "policy was not trained on"),
    ({**SAVED, "features": ["fkl", "progress", "w_fkl"]}, "features: the same names in another order (position 0: "
                                                          "the policy expects 'progress', this one has 'fkl')"),
])
def test_mismatch_names_the_first_difference(current: dict, message: str) -> None:
    assert mismatch(SAVED, current) == message


def test_origin_fields_do_not_refuse_a_policy() -> None:
    assert mismatch({**SAVED, "preset": "keyed", "reward": "score"}, {**SAVED, "preset": "nano"}) is None


def test_a_malformed_record_names_its_key() -> None:
    with pytest.raises(ValueError, match=r"p.zip: 'observes.features' must be a list of names, not 'fkl'"):
        check_record({**SAVED, "features": "fkl"}, "p.zip")

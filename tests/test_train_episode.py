from __future__ import annotations

from pathlib import Path

import yaml

from train.episode import env_overrides


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

from __future__ import annotations

import re
from types import ModuleType

import pytest
from _benchmarks import load_benchmark


def _bench() -> ModuleType:
    return load_benchmark("bench_policies")


def test_each_agent_trains_once_per_seed_its_own_seeds_winning_over_the_default() -> None:
    runs = _bench().agent_runs("ppo,ppo-grid4-relative-g0-ent@0/2, sac", "0,1")
    assert runs == [("ppo", 0), ("ppo", 1), ("ppo-grid4-relative-g0-ent", 0), ("ppo-grid4-relative-g0-ent", 2),
                    ("sac", 0), ("sac", 1)]


@pytest.mark.parametrize(("agents", "seeds", "message"), [
    ("ppo,dqn", "0", "--agents: unknown agent 'dqn'"),
    ("ppo@1/x", "0", "--agents ppo@1/x: expected whole numbers separated by '/', got '1/x'"),
    ("ppo", "0,,1", "--agent-seeds: expected whole numbers separated by ',', got '0,,1'"),
])
def test_bad_agent_lists_fail_with_one_line_naming_the_value(agents: str, seeds: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        _bench().agent_runs(agents, seeds)


@pytest.mark.parametrize("agent", list(_bench().AGENTS))
def test_every_agent_override_is_a_valid_setting_of_the_embedded_preset(agent: str) -> None:
    from train.config import load_run_config

    overrides = _bench().agent_overrides(agent, "embedded", [])
    cfg = load_run_config("embedded", overrides=overrides)  # a bad key or value raises
    assert cfg.preset == "embedded"


@pytest.mark.parametrize(("preset", "common"), [("embedded", []), ("nano", []),
                                                ("embedded", ["env.updates_per_step=5"])])
def test_the_probe_agent_foresees_exactly_the_step_its_action_runs(preset: str, common: list[str]) -> None:
    from train.config import load_run_config

    bench = _bench()
    overrides = bench.agent_overrides("ppo-grid4-probe-relative-g0-ent", preset, common)
    cfg = load_run_config(preset, overrides=[*common, *overrides])
    assert cfg.env.features is not None and {"probe_gap", "probe_gain"} <= set(cfg.env.features)
    assert cfg.env.probe_updates == cfg.env.updates_per_step
    assert bench.agent_overrides("ppo-grid4-relative-g0-ent", preset, common) == \
        bench.AGENTS["ppo-grid4-relative-g0-ent"][1]

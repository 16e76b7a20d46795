"""Weighting policies for ARKD: any Stable-Baselines3 algorithm, baselines, and a REINFORCE agent.

    from agents import make_agent, make_baseline, load_agent
    agent = make_agent("ppo", env, preset="nano")        # SB3 / sb3-contrib / "reinforce" / "pkg.mod:Class"
    agent.learn(64)
    fixed = make_baseline("linear:1->0", env)             # same predict/save/load surface
"""

from agents.baselines import (
    AKL_ENV_OVERRIDES,
    BASELINE_NAMES,
    SFT_ENV_OVERRIDES,
    BaselinePolicy,
    baseline_env_overrides,
    is_baseline_spec,
    make_baseline,
)
from agents.hparams import load_hyperparams
from agents.registry import ALGORITHMS, known_names, load_agent, make_agent, save_agent
from agents.spaces import check_spaces

__all__ = [
    "AKL_ENV_OVERRIDES",
    "ALGORITHMS",
    "BASELINE_NAMES",
    "SFT_ENV_OVERRIDES",
    "BaselinePolicy",
    "baseline_env_overrides",
    "check_spaces",
    "is_baseline_spec",
    "known_names",
    "load_agent",
    "load_hyperparams",
    "make_agent",
    "make_baseline",
    "save_agent",
]

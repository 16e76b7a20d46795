"""Shared, cached nano DistillEnvs for the agents tests (building one takes seconds).

Episodes are kept as short as the tests allow (horizon 2, one update per step): these tests
check that agents run against the real env, not what they learn.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

import arkd_env  # noqa: F401  (registers arkd_env/Distill-v0)


@functools.cache
def nano_env(action_mode: str = "mix", simplex: tuple[str, ...] | None = None) -> Any:
    extra: dict[str, Any] = {"simplex_components": list(simplex)} if simplex else {}
    return gym.make("arkd_env/Distill-v0", preset="nano", horizon=2, updates_per_step=1,
                    action_mode=action_mode, **extra)

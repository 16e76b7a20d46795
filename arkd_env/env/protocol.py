"""What a weighting policy may ask of an environment: the declared protocol between agents and env.

:class:`DistillEnv` implements both protocols; so can a user's own env, and then the baselines and ``greedy``
drive it. Agents reach the env only through these members (``agents.env_access`` finds them behind Gymnasium
wrappers and SB3 VecEnvs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym


@runtime_checkable
class WeightingEnv(Protocol):
    """An env whose actions weight named loss components. Enough for the fixed and scheduled baselines."""

    observation_space: gym.Space[Any]
    action_space: gym.Space[Any]
    feature_names: list[str]  # the observation's entries by name; schedules read "progress" (step / horizon)
    component_names: list[str]  # the components an action weights
    action_mode: str  # mix, simplex, head_tail, binary or grid (see arkd_env.env.actions)

    def action_to_weights(self, action: Any) -> dict[str, float]:
        """The component weights ``action`` applies."""
        ...

    def weights_to_action(self, weights: Mapping[str, float]) -> Any:
        """An action applying ``weights``."""
        ...


@runtime_checkable
class LookaheadEnv(WeightingEnv, Protocol):
    """A WeightingEnv that can try a weighting from its current state and undo it. Needed by ``greedy``."""

    updates_per_step: int  # student updates one env step runs
    reward_metric: str  # the validation metric the reward is built on

    def probe(self, weights: Mapping[str, float], updates: int | None = None,
              generate: bool = False) -> dict[str, float]:
        """Validation metrics after ``updates`` (default: one step's) updates with ``weights`` from the current
        state, which is then restored; ``generate`` also scores sampled generations (ROUGE-L)."""
        ...


def missing_members(env: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``env`` lacks, for an error message that says what to add."""
    names = [n for n in getattr(protocol, "__protocol_attrs__", ()) if not n.startswith("_")]
    if not names:  # Python < 3.12 keeps no attribute list: read the annotations and methods instead
        names = sorted({n for cls in protocol.__mro__ if cls is not object and cls is not Protocol
                        for n in (*getattr(cls, "__annotations__", {}), *vars(cls))
                        if not n.startswith("_")})
    return [n for n in names if not hasattr(env, n)]

"""Checks that a policy fits an env, and a JSON form of the spaces stored with saved policies."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def check_spaces(policy: Any, env: Any) -> None:
    """Raise ValueError when ``policy`` and ``env`` disagree on their observation or action space.

    Used when a policy trained on one distillation run is applied to another (a longer
    horizon, another student size): that is fine as long as both spaces are equal.
    """
    for kind in ("observation", "action"):
        attr = f"{kind}_space"
        theirs = getattr(policy, attr, None)
        ours = getattr(env, attr, None)
        if theirs is None or ours is None:
            continue  # nothing to compare against (e.g. a policy loaded without spaces)
        if theirs != ours:
            raise ValueError(f"{kind} space mismatch: the policy expects {theirs} but the env has {ours}")


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON-able description of a Box or Discrete space (infinite bounds become null)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        def bounds(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in a.reshape(-1)]

        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bounds(space.low), "high": bounds(space.high)}
    raise ValueError(f"cannot describe space {space}: only Box and Discrete are supported")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    kind = data.get("type")
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "Box":
        shape = tuple(int(s) for s in data["shape"])
        dtype = np.dtype(data["dtype"])
        # Bounds in the space's own float type, so gymnasium needs no (warned) down-cast.
        bound_type = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)
        low = np.array([-np.inf if v is None else v for v in data["low"]], dtype=bound_type).reshape(shape)
        high = np.array([np.inf if v is None else v for v in data["high"]], dtype=bound_type).reshape(shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    raise ValueError(f"unknown space description {data!r}")

"""Vectorised environments beyond one process: Stable-Baselines3 VecEnvs backed by Ray actors.

Importing this package never imports Ray (an optional extra, ``pip install "arkd[ray]"``) nor
Stable-Baselines3; the names below are loaded on first use from :mod:`arkd_env.vec.ray`.

- ``RayVecEnv(env_fns, num_cpus_per_env=1.0, num_gpus_per_env=0.0, step_timeout=None, ...)``
- ``init_ray(address=None, num_cpus=None, ...)``: local Ray, or connect to a running cluster
- ``ActorRestartWarning``: the warning issued when a sub-environment's actor is replaced
- ``ray_available()``: whether Ray can be imported (without importing it)
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only; keeps the runtime import lazy
    from arkd_env.vec.ray import ActorRestartWarning, RayVecEnv, init_ray

__all__ = ["ActorRestartWarning", "RayVecEnv", "init_ray", "ray_available"]

_LAZY_NAMES = frozenset({"ActorRestartWarning", "RayVecEnv", "init_ray"})


def ray_available() -> bool:
    """True when the ``ray`` package can be imported; Ray itself is not imported."""
    return importlib.util.find_spec("ray") is not None


def __getattr__(name: str) -> Any:
    # Lazy loading: `import arkd_env.vec` stays cheap and Ray-free until a Ray name is used.
    if name in _LAZY_NAMES:
        from arkd_env.vec import ray as ray_backend

        return getattr(ray_backend, name)
    raise AttributeError(f"module 'arkd_env.vec' has no attribute {name!r}")

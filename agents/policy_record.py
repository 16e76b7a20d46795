"""What a saved policy observes and how its actions are read: the record that makes ``policy.zip`` self-describing.

Two envs with the same observation and action *shapes* can still disagree on what the numbers mean: a ``Box`` of
14 features in another order, or a ``Discrete(5)`` over another α grid. A policy played against such an env would
run and act on the wrong inputs. :func:`agents.registry.save_agent` therefore writes, beside the agent, the
feature names, the action mode, the weighted components, the α grid (``grid`` mode), the softmax temperature
(``simplex`` mode), the reward and the preset of the env it was trained in; loading it into an env or a
training-loop callback whose record differs fails with one line naming the first difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agents.env_access import protocol_envs
from arkd_env.env.protocol import WeightingEnv

META_FILE = "arkd_agent.json"  # the JSON entry of an ARKD-saved zip: the algorithm, its spec and this record
RECORD_KEY = "observes"  # the record's key in that entry
# Keys that decide how an observation is read or an action applied, in the order a mismatch is reported.
BINDING_KEYS = ("action_mode", "components", "alpha_grid", "simplex_temperature", "features")
# Keys kept to describe the policy's origin; a different value is no reason to refuse it.
ORIGIN_KEYS = ("reward", "preset")


def describe(env: WeightingEnv) -> dict[str, Any]:
    """The record of ``env``: the protocol's members, plus the optional ones the env has (a user env may
    have neither a reward nor a preset)."""
    record: dict[str, Any] = {"features": list(env.feature_names), "action_mode": env.action_mode,
                              "components": list(env.component_names)}
    if env.action_mode == "grid":
        record["alpha_grid"] = [float(a) for a in getattr(env, "alpha_grid", [])]
    if env.action_mode == "simplex" and hasattr(env, "simplex_temperature"):
        record["simplex_temperature"] = float(env.simplex_temperature)
    for key, member in (("reward", "reward_metric"), ("preset", "preset")):
        value = getattr(env, member, None)
        if isinstance(value, str):
            record[key] = value
    return record


def observes_of(model: Any) -> dict[str, Any] | None:
    """The record of the env ``model`` is attached to, or None (no env, or one outside the weighting protocol)."""
    env = model.get_env() if callable(getattr(model, "get_env", None)) else None
    if env is None:
        return None
    try:
        target = protocol_envs(env)[0]
    except ValueError:  # a plain Gymnasium env: nothing names its features
        return None
    return describe(target)


def meta_entry(algo: str, model: Any, **fields: Any) -> str:
    """The text of :data:`META_FILE` for ``model``: its algorithm, ``fields`` and, with an env, the record."""
    entry: dict[str, Any] = {"algo": algo, **fields}
    observes = observes_of(model)
    if observes is not None:
        entry[RECORD_KEY] = observes
    return json.dumps(entry)


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` as read from a file, or one line naming what is malformed in it."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: '{RECORD_KEY}' must be a mapping of {', '.join(BINDING_KEYS)}")
    for key in ("features", "components"):
        value = record.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: '{RECORD_KEY}.{key}' must be a list of names, not {value!r}")
    if not isinstance(record.get("action_mode"), str):
        raise ValueError(f"{where}: '{RECORD_KEY}.action_mode' must be a string, not {record.get('action_mode')!r}")
    return dict(record)


def mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first way a policy with record ``saved`` would misread an env with record ``current``, or None."""
    for key in BINDING_KEYS:
        if key not in saved and key not in current:
            continue
        have, want = current.get(key), saved.get(key)
        if have == want:
            continue
        if key == "features" and isinstance(have, list) and isinstance(want, list):
            return _feature_mismatch(want, have)
        return f"{key}: the policy was trained with {want!r}, this one has {have!r}"
    return None


def _feature_mismatch(saved: list[str], current: list[str]) -> str:
    missing = [f for f in saved if f not in current]
    if missing:
        return f"features: the policy observes {missing[0]!r}, which this one does not provide"
    extra = [f for f in current if f not in saved]
    if extra:
        return f"features: this one provides {extra[0]!r}, which the policy was not trained on"
    index = next(i for i, (a, b) in enumerate(zip(saved, current, strict=True)) if a != b)
    return (f"features: the same names in another order (position {index}: the policy expects {saved[index]!r}, "
            f"this one has {current[index]!r})")

"""Loading a Stable-Baselines3 policy file without running a pickle from it.

A Stable-Baselines3 ``.zip`` keeps the policy class, the spaces, the schedules and a few other objects as
cloudpickles inside its ``data`` entry, and ``load`` would unpickle them: a crafted file runs code. Yet an
agent ARKD built knows all of them already, from three plain facts: its algorithm, its hyperparameters and
its spaces. :func:`agents.registry.save_agent` writes those facts as JSON (the *spec*), and loading rebuilds
an identical fresh agent from them and hands every pickled field to Stable-Baselines3 as a
``custom_objects`` replacement, so that no ``:serialized:`` entry of the file is ever deserialised. Weights
are tensors, which Stable-Baselines3 reads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym

from agents.hparams import ACTIVATIONS
from agents.spaces import space_from_json, space_to_json

SERIALIZED = ":serialized:"  # Stable-Baselines3's marker of a cloudpickled field in ``data``

# The spec of each agent make_agent built, kept beside the object rather than on it so that SB3's save
# does not copy it into ``data`` a second time.
_SPECS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def remember(model: Any, algo: str, hyperparams: Mapping[str, Any], env: Any) -> None:
    """Record how ``model`` was built, when every part of it is plain JSON (else it has no spec)."""
    try:
        spec = {"algo": algo, "hyperparams": json.loads(json.dumps(dict(hyperparams), allow_nan=False)),
                "observation_space": space_to_json(env.observation_space),
                "action_space": space_to_json(env.action_space)}
    except (TypeError, ValueError):  # an object given from Python, a NaN, or a space JSON cannot describe
        return
    try:
        _SPECS[model] = spec
    except TypeError:  # a class that cannot be weakly referenced simply gets no spec
        return


def spec_of(model: Any) -> dict[str, Any] | None:
    try:
        return _SPECS.get(model)
    except TypeError:
        return None


def serialized_fields(data: Mapping[str, Any]) -> list[str]:
    """The keys of a ``data`` entry that Stable-Baselines3 would unpickle."""
    return [key for key, value in data.items() if isinstance(value, Mapping) and SERIALIZED in value]


class _SpacesOnly(gym.Env):
    """Just the spaces: enough for an SB3 constructor, which never steps it."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space


def _checked(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("hyperparams"), Mapping):
        raise ValueError(f"{where}: the policy spec must be a mapping with 'algo', 'hyperparams' and both spaces")
    activation = (spec["hyperparams"].get("policy_kwargs") or {}).get("activation_fn")
    if activation is not None and activation not in ACTIVATIONS:  # a name to import would run a module's code
        raise ValueError(f"{where}: policy_kwargs.activation_fn={activation!r} is not one of "
                         f"{', '.join(ACTIVATIONS)}")
    return dict(spec)


def custom_objects(spec: Any, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A replacement for every pickled field of ``data``, taken from a fresh agent built from ``spec``."""
    from agents.registry import make_agent

    spec = _checked(spec, where)
    try:
        shell = _SpacesOnly(space_from_json(spec["observation_space"]), space_from_json(spec["action_space"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: the policy spec's spaces are not readable ({type(err).__name__}: {err})") from None
    fresh = make_agent(str(spec["algo"]), shell, hyperparams=spec["hyperparams"], device="cpu")
    objects: dict[str, Any] = {}
    for key in serialized_fields(data):
        if not hasattr(fresh, key):
            raise ValueError(f"{where}: field {key!r} of the saved data is a pickle that "
                             f"{spec['algo']} does not rebuild; refusing to unpickle it")
        objects[key] = getattr(fresh, key)
    return objects


File = TypeVar("File")  # an open binary file of any kind SB3 saves accept


def zip_target(path: str | Path | File) -> Path | File:
    """Where a policy zip is written: a path without a suffix gets ``.zip``, as SB3's own saves do, and its
    folder is made; an open file is written as it is."""
    if not isinstance(path, str | Path):
        return path
    target = Path(path)
    if target.suffix == "":
        target = target.with_suffix(".zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target

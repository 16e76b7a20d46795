"""Default hyperparameters per algorithm, read from ``agents/hyperparams/<algo>.yaml``.

Each file maps an env preset name to a mapping of constructor arguments, with a ``default``
entry every preset starts from (in the manner of RL Baselines3 Zoo). The preset's entry is
merged on top of ``default`` and caller overrides on top of that. Values are plain YAML: a
few named strings are turned into Python objects by :func:`resolve_objects` (activation
functions, action noise), never by evaluating code.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from arkd_env.config import ConfigError, apply_overrides, deep_merge, read_yaml

HYPERPARAM_DIR = Path(__file__).parent / "hyperparams"

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def hyperparam_path(algo: str) -> Path:
    return HYPERPARAM_DIR / f"{algo}.yaml"


def load_hyperparams(algo: str, preset: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters of ``algo`` for env ``preset``: default <- preset entry <- overrides.

    An algorithm without a YAML file (e.g. a user class) starts from an empty mapping.
    """
    path = hyperparam_path(algo)
    table = read_yaml(path) if path.is_file() else {}
    for key, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{path}: entry {key!r} must be a mapping of hyperparameters, "
                              f"got {type(entry).__name__}")
    values = dict(table.get("default", {}))
    if preset is not None and preset in table:
        values = deep_merge(values, table[preset])
    # Dotted keys (``policy_kwargs.net_arch``) are put in place first, then merged, so an override of one nested
    # key keeps its siblings from the file.
    return deep_merge(values, apply_overrides({}, overrides or {}))


def resolve_activation(name: str | type[nn.Module]) -> type[nn.Module]:
    """``"tanh"`` -> ``nn.Tanh``; also accepts a ``"module:Class"`` path or a class."""
    if isinstance(name, type):
        return name
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if isinstance(name, str) and ":" in name:
        module, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"activation_fn={name!r}: cannot import it ({err})") from None
        if not (isinstance(found, type) and issubclass(found, nn.Module)):
            raise ConfigError(f"activation_fn={name!r}: not a torch.nn.Module class")
        return found
    raise ConfigError(f"activation_fn={name!r}: must be one of {', '.join(ACTIVATIONS)} or 'module:Class'")


def activation_name(cls: type[nn.Module]) -> str:
    """Inverse of :func:`resolve_activation`, for saving into JSON."""
    for name, known in ACTIVATIONS.items():
        if cls is known:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def _make_action_noise(spec: Mapping[str, Any], action_dim: int) -> Any:
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    kind = spec.get("type", "normal")
    sigma = float(spec.get("sigma", 0.1)) * np.ones(action_dim)
    mean = np.zeros(action_dim)
    if kind == "normal":
        return NormalActionNoise(mean=mean, sigma=sigma)
    if kind == "ornstein_uhlenbeck":
        return OrnsteinUhlenbeckActionNoise(mean=mean, sigma=sigma, theta=float(spec.get("theta", 0.15)))
    raise ConfigError(f"action_noise.type={kind!r}: must be 'normal' or 'ornstein_uhlenbeck'")


def resolve_objects(values: Mapping[str, Any], action_dim: int | None) -> dict[str, Any]:
    """Turn the YAML-friendly forms of a few arguments into the objects SB3 expects.

    - ``policy_kwargs.activation_fn: tanh`` -> ``torch.nn.Tanh``
    - ``action_noise: {type: normal, sigma: 0.1}`` -> ``NormalActionNoise`` of the action's size
    - ``train_freq: [1, episode]`` -> ``(1, "episode")``
    """
    result = copy.deepcopy(dict(values))
    policy_kwargs = result.get("policy_kwargs")
    if isinstance(policy_kwargs, Mapping) and "activation_fn" in policy_kwargs:
        policy_kwargs = dict(policy_kwargs)
        policy_kwargs["activation_fn"] = resolve_activation(policy_kwargs["activation_fn"])
        result["policy_kwargs"] = policy_kwargs
    noise = result.get("action_noise")
    if isinstance(noise, Mapping):
        if action_dim is None:
            raise ConfigError("action_noise needs a Box action space")
        result["action_noise"] = _make_action_noise(noise, action_dim)
    if isinstance(result.get("train_freq"), list):
        result["train_freq"] = tuple(result["train_freq"])
    return result

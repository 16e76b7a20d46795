"""The action codec: action <-> component weights <-> the FKL share α, for every action mode.

The env decodes the agent's actions with it and the baselines encode their α with it, so both sides apply
one mapping (the table is in :class:`arkd_env.env.DistillEnv`'s docstring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

HEAD_TAIL = ("fkl_head", "fkl_tail", "rkl_head", "rkl_tail")


def alpha_to_weights(alpha: float, component_names: Sequence[str], action_mode: str) -> dict[str, float]:
    """The component weights meaning "α on forward KL, 1 − α on reverse KL" for an env weighting
    ``component_names`` in ``action_mode`` (binary mode rounds α to pure FKL or pure RKL)."""
    names = set(component_names)
    if action_mode == "binary":
        alpha = 1.0 if alpha >= 0.5 else 0.0
    if names == set(HEAD_TAIL):
        return {"fkl_head": alpha, "fkl_tail": alpha, "rkl_head": 1.0 - alpha, "rkl_tail": 1.0 - alpha}
    if {"fkl", "rkl"} <= names:
        weights = dict.fromkeys(component_names, 0.0)
        weights.update(fkl=alpha, rkl=1.0 - alpha)
        return weights
    raise ValueError(f"an α-weighting needs components fkl and rkl (or the head_tail four); this env "
                     f"weights {list(component_names)}")


class ActionCodec:
    """Maps actions of one action mode to component weights and back."""

    def __init__(self, action_mode: str, alpha_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                 simplex_components: Sequence[str] = ("fkl", "rkl"), simplex_temperature: float = 1.0) -> None:
        self.action_mode = action_mode
        self.alpha_grid = [float(a) for a in alpha_grid]
        self.simplex_temperature = simplex_temperature
        if action_mode == "simplex":
            self.component_names = list(simplex_components)
        elif action_mode == "head_tail":
            self.component_names = list(HEAD_TAIL)
        else:
            self.component_names = ["fkl", "rkl"]
        self.space = self._space()

    def _space(self) -> spaces.Space[Any]:
        if self.action_mode == "binary":
            return spaces.Discrete(2)
        if self.action_mode == "grid":
            return spaces.Discrete(len(self.alpha_grid))
        size = 1 if self.action_mode == "mix" else len(self.component_names)
        return spaces.Box(-1.0, 1.0, shape=(size,), dtype=np.float32)

    def to_weights(self, action: Any) -> dict[str, float]:
        """The component weights ``action`` stands for; ValueError for actions outside the space."""
        if isinstance(self.space, spaces.Discrete):
            return self._discrete_weights(action)
        assert isinstance(self.space, spaces.Box)
        a = self._box_action(action)
        if self.action_mode == "mix":
            alpha = (a[0] + 1.0) / 2.0
            return {"fkl": float(alpha), "rkl": float(1.0 - alpha)}
        if self.action_mode == "head_tail":
            return {name: float((v + 1.0) / 2.0) for name, v in zip(HEAD_TAIL, a, strict=True)}
        logits = a / self.simplex_temperature
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        return {name: float(w) for name, w in zip(self.component_names, weights, strict=True)}

    def _discrete_weights(self, action: Any) -> dict[str, float]:
        n = int(self.space.n)  # type: ignore[attr-defined]
        value = _plain_numbers(action, self.space)
        if value.size != 1 or not np.isfinite(value).all() or float(value.reshape(-1)[0]) not in range(n):
            raise ValueError(f"action {action!r} is not in the action space {self.space}")
        index = int(value.reshape(-1)[0])
        alpha = self.alpha_grid[index] if self.action_mode == "grid" else 1.0 - index
        return {"fkl": alpha, "rkl": 1.0 - alpha}

    def _box_action(self, action: Any) -> np.ndarray:
        a = _plain_numbers(action, self.space).astype(np.float64)
        shape = self.space.shape
        if a.shape != shape and a.size == shape[0]:  # type: ignore[index]
            a = a.reshape(shape)  # accept [[a]] or a 0-d scalar for 1-D spaces
        if a.shape != shape:
            raise ValueError(f"action of shape {a.shape} does not fit the action space {self.space}")
        if not np.isfinite(a).all():
            raise ValueError(f"action {a.tolist()} has NaN/inf, which the action space {self.space} cannot hold")
        return np.clip(a, -1.0, 1.0)

    def from_weights(self, weights: Mapping[str, float]) -> Any:
        """An action applying ``weights`` (``fkl``/``rkl`` expand to head and tail in ``head_tail`` mode).

        Exact for mix, binary (pure weights), grid (its α values) and head_tail; for simplex, exact while the
        weights' ratios lie within exp(2/temperature), since actions are bounded."""
        full = dict(weights)
        for part in HEAD_TAIL:
            full.setdefault(part, full.get(part[:3], 0.0))
        if self.action_mode == "binary":
            return int(full.get("rkl", 0.0) > full.get("fkl", 0.0))
        if self.action_mode in ("mix", "grid"):
            total = full.get("fkl", 0.0) + full.get("rkl", 0.0)
            alpha = full.get("fkl", 0.0) / total if total > 0 else 0.5
            if self.action_mode == "grid":  # the grid's nearest α
                return int(np.argmin([abs(a - alpha) for a in self.alpha_grid]))
            return np.array([2.0 * alpha - 1.0], dtype=np.float32)
        if self.action_mode == "head_tail":
            return np.array([2.0 * full[n] - 1.0 for n in HEAD_TAIL], dtype=np.float32).clip(-1, 1)
        logw = np.log(np.maximum([full.get(n, 0.0) for n in self.component_names], 1e-12))
        action = 1.0 + self.simplex_temperature * (logw - logw.max())
        return action.clip(-1.0, 1.0).astype(np.float32)


def _plain_numbers(action: Any, space: spaces.Space[Any]) -> np.ndarray:
    """``action`` as a real-valued array; strings, mappings, complex numbers and objects are refused, since
    numpy would otherwise turn ``"1"`` or ``1+0j`` into a number without a word."""
    if isinstance(action, str | bytes | Mapping):
        raise ValueError(f"action {action!r} is not in the action space {space}: expected numbers")
    value = np.asarray(action)
    if value.dtype.kind not in "biuf":
        raise ValueError(f"action {action!r} is not in the action space {space}: expected real numbers, "
                         f"got dtype {value.dtype}")
    return value

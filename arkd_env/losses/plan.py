"""What a mixed divergence computes and on which rows: the validated mixture and the row plan.

Every path (naive, chunked, fused-linear, top-k) resolves its arguments here, so a bad name, weight,
parameter, mask or label shape is rejected with the same message whichever path the caller chose, and
all paths average over the same rows with the same denominators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from arkd_env.losses.divergences import COMPONENTS, ComponentFn, allowed_params, builtin_impl, needs_labels
from arkd_env.losses.logprobs import IGNORE_INDEX, check_temperature, log_probs
from arkd_env.losses.pair import Pair

WeightsLike = Sequence[float] | Mapping[str, float] | Tensor
"""One weight per component (in ``components`` order), or a name -> weight mapping."""


# --------------------------------------------------------------------------------------------
# Mixture specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One resolved component: the registry entry and, for a built-in, its Pair implementation."""

    name: str
    fn: ComponentFn
    pair_impl: Callable[..., Tensor] | None
    params: dict[str, float]
    needs_labels: bool


@dataclass(frozen=True)
class Mix:
    """A validated ``sum_i w_i * D_i``, resolved once per call so the chunk loop does no checking."""

    entries: tuple[Entry, ...]
    weights: Tensor  # float32 [K]; may carry a gradient on the naive path
    temperature: float

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def needs_labels(self) -> bool:
        return any(e.needs_labels for e in self.entries)


def _resolve_names(weights: WeightsLike, components: Sequence[str] | None) -> tuple[str, ...]:
    if components is not None:
        names = (components,) if isinstance(components, str) else tuple(components)
    elif isinstance(weights, Mapping):
        names = tuple(weights)
    else:
        names = ("fkl", "rkl")
    if not names:
        raise ValueError("components: at least one component name is required")
    if len(set(names)) != len(names):
        raise ValueError(f"components={list(names)}: names must be unique")
    for name in names:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; known: {sorted(COMPONENTS)}")
    return names


def _resolve_weights(weights: WeightsLike, names: tuple[str, ...], device: torch.device) -> Tensor:
    if isinstance(weights, Tensor):
        w = weights.to(device=device, dtype=torch.float32).reshape(-1)
        if w.numel() != len(names):
            raise ValueError(f"weights has {w.numel()} entries but components={list(names)} has {len(names)}")
        return w
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ValueError(f"weights key {unknown[0]!r} is not one of components={list(names)}")
        values = [float(weights.get(n, 0.0)) for n in names]
    else:
        values = [float(v) for v in weights]
        if len(values) != len(names):
            raise ValueError(
                f"weights has {len(values)} entries but components={list(names)} has {len(names)}"
            )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"weights={values}: every weight must be finite")
    return torch.tensor(values, dtype=torch.float32, device=device)


def build_mix(
    weights: WeightsLike,
    components: Sequence[str] | None,
    component_kwargs: Mapping[str, Mapping[str, float]] | None,
    temperature: float,
    device: torch.device,
) -> Mix:
    """Validate every argument that describes the mixture before any ``[N, V]`` work starts."""
    check_temperature(temperature)
    names = _resolve_names(weights, components)
    kwargs = dict(component_kwargs or {})
    for key in kwargs:
        if key not in names:
            raise ValueError(f"component_kwargs key {key!r} is not one of components={list(names)}")
    entries = []
    for name in names:
        fn = COMPONENTS[name]
        impl = builtin_impl(fn)
        params = {k: float(v) for k, v in kwargs.get(name, {}).items()}
        if impl is not None:
            allowed = allowed_params(name)
            bad = sorted(set(params) - allowed)
            if bad:
                raise ValueError(
                    f"component_kwargs[{name!r}]: unknown parameter {bad[0]!r}; allowed: {sorted(allowed)}"
                )
        entries.append(Entry(name, fn, impl, params, needs_labels(name)))
    return Mix(tuple(entries), _resolve_weights(weights, names, device), temperature)


def evaluate(pair: Pair, mix: Mix, labels: Tensor | None, label_logp: Callable[[], Tensor]) -> Tensor:
    """Per-token values of every component of ``mix``: [n, K] float32.

    ``label_logp`` is a thunk because only label components need the T = 1 student distribution, and
    building it is a full extra pass over ``[n, V]``.
    """
    columns = []
    n = pair.ls.shape[0]
    for entry in mix.entries:
        if entry.needs_labels:
            if labels is None:
                raise ValueError(f"component {entry.name!r} needs labels; pass labels=")
            value = entry.fn(label_logp(), pair.lt, labels=labels, **entry.params)
        elif entry.pair_impl is not None:
            value = entry.pair_impl(pair, **entry.params)
        else:
            value = entry.fn(pair.ls, pair.lt, **entry.params)
        if tuple(value.shape) != (n,):
            raise ValueError(f"component {entry.name!r} returned shape {tuple(value.shape)}, expected ({n},)")
        columns.append(value.float())
    return torch.stack(columns, dim=-1)


def values_from_logits(student: Tensor, teacher: Tensor, labels: Tensor | None, mix: Mix) -> Tensor:
    """Per-token values [n, K] of full-vocabulary logits: the step the naive path takes once and the
    chunked and fused paths take per chunk, which is what makes their numbers agree."""
    temperature = mix.temperature
    ls = log_probs(student, temperature)
    with torch.no_grad():
        lt = log_probs(teacher, temperature)
    pair = Pair(ls, lt, floored=True)
    cache: list[Tensor] = []

    def label_logp() -> Tensor:
        # Cross-entropy on labels is the usual T = 1 quantity whatever the distillation temperature.
        if temperature == 1.0:
            return pair.ls
        if not cache:
            cache.append(log_probs(student, 1.0))
        return cache[0]

    return evaluate(pair, mix, labels, label_logp)


def per_component(means: Tensor, mix: Mix) -> dict[str, Tensor]:
    """The detached per-component means that every mixed function returns beside its total."""
    detached = means.detach()
    return {name: detached[k] for k, name in enumerate(mix.names)}


# --------------------------------------------------------------------------------------------
# Row bookkeeping: flatten leading dims, pick the unmasked rows, count denominators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """The unmasked rows of the flattened positions; masked rows are dropped before any arithmetic,
    so garbage there can leak into neither values nor gradients."""

    n_total: int
    index: Tensor | None  # long [n] of unmasked rows, None = all rows
    labels: Tensor | None  # long [n] labels of those rows
    denominators: Tensor  # float32 [K]

    @property
    def n(self) -> int:
        return self.n_total if self.index is None else int(self.index.numel())

    def take(self, x: Tensor, start: int, end: int) -> Tensor:
        """Rows ``start:end`` of the unmasked rows of the flattened ``x``."""
        if self.index is None:
            return x[start:end]
        return x.index_select(0, self.index[start:end])

    def select_all(self, x: Tensor) -> Tensor:
        return x if self.index is None else x.index_select(0, self.index)


def flat_mask(mask: Tensor | None, lead: torch.Size, device: torch.device) -> Tensor | None:
    """``mask`` broadcast to the positions and flattened to bool ``[N]``; 0/1 masks count like bool ones."""
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=device)
    try:
        m = torch.broadcast_to(m, lead)
    except RuntimeError as err:
        raise ValueError(
            f"mask shape {tuple(m.shape)} does not broadcast to positions {tuple(lead)}"
        ) from err
    return (m != 0).reshape(-1)


def plan_rows(lead: torch.Size, mask: Tensor | None, labels: Tensor | None, mix: Mix,
              device: torch.device) -> Rows:
    """The rows to score and each component's denominator (at least 1, so no position gives 0, not NaN)."""
    n_total = math.prod(lead)
    flat = flat_mask(mask, lead, device)
    index = None if flat is None else flat.nonzero().squeeze(-1)
    flat_labels = None
    if labels is not None:
        if tuple(labels.shape) != tuple(lead):
            raise ValueError(f"labels shape {tuple(labels.shape)} != token positions {tuple(lead)}")
        flat_labels = labels.to(device).reshape(-1).long()
        if index is not None:
            flat_labels = flat_labels.index_select(0, index)
    elif mix.needs_labels:
        missing = next(e.name for e in mix.entries if e.needs_labels)
        raise ValueError(f"component {missing!r} needs labels; pass labels=")
    n = n_total if index is None else int(index.numel())
    n_labeled = int((flat_labels != IGNORE_INDEX).sum()) if flat_labels is not None else n
    counts = [max(n_labeled if e.needs_labels else n, 1) for e in mix.entries]
    denominators = torch.tensor(counts, dtype=torch.float32, device=device)
    return Rows(n_total, index, flat_labels, denominators)


def check_pair_shapes(student: Tensor, teacher: Tensor) -> None:
    """Both logit tensors must be ``[..., V]`` of one shape; a silent broadcast would average the wrong rows."""
    if student.dim() < 1:
        raise ValueError("student_logits must have a vocabulary dimension [..., V]")
    if tuple(student.shape) != tuple(teacher.shape):
        raise ValueError(
            f"teacher_logits shape {tuple(teacher.shape)} != student_logits shape {tuple(student.shape)}"
        )

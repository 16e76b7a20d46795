"""Fixed and scheduled weighting policies with the Stable-Baselines3 ``predict``/``save``/``load``.

Every baseline decides a weighting α on the forward KL (1 - α on the reverse KL) and acts
through ``env.weights_to_action``, so it works in each action mode where that is meaningful:

- ``mix`` / ``simplex`` with fkl and rkl: ``{"fkl": α, "rkl": 1 - α}`` (other simplex components 0)
- ``head_tail``: ``fkl_head = fkl_tail = α``, ``rkl_head = rkl_tail = 1 - α``
- ``binary``: FKL when α >= 0.5, else RKL
- ``grid``: the α of ``alpha_grid`` nearest to α

Specs understood by :func:`make_baseline`:

- ``fkl`` (α = 1), ``rkl`` (α = 0), ``fixed:<α>`` with α in [0, 1]
- ``linear:<a>-><b>``: α = a + (b - a) · progress, the env's "progress" feature (step/horizon)
- ``cosine``: α = (1 + cos(π · progress)) / 2, from 1 at the start to 0 at the end
- ``phases:<a1>/<a2>/.../<an>``: the run split by progress into n equal phases, α = a_i in the i-th; with as
  many values as the env's horizon, one α per env step. ``<a>*<k>`` stands for k phases of α = a, so
  ``phases:0.25/0.75*11`` is 0.25 for the first of 12 phases and 0.75 for the other 11
- ``by-feature:<name>:<x1>=<a1>/<x2>=<a2>/...``: α read off the observation's feature ``<name>``, linearly
  between the listed points (x strictly increasing) and constant beyond the first and the last. With an
  instance feature (``instance_log_score_beta``) it is an instance-aware constant, the shape of the keyed
  benchmarks' per-instance references (benchmarks/headroom_keyed.py)
- ``akl``: weight 1 on the ``akl`` component, i.e. the AKL rule applied per token inside the
  loss; needs the env built with :data:`AKL_ENV_OVERRIDES` (see :func:`baseline_env_overrides`)
- ``sft``: weight 1 on the ``ce`` component, i.e. supervised fine-tuning on the reference responses with
  no teacher term (the SFT baseline of the MiniLLM line of work); needs :data:`SFT_ENV_OVERRIDES`
- ``greedy``: one-step lookahead over candidate α, see :class:`GreedyPolicy` and :mod:`agents.greedy`;
  ``greedy:<a>/<b>/...`` names the candidates (default 0/0.25/0.5/0.75/1)
- ``random``: a uniformly drawn action each step (seeded with the ``seed`` option)
"""

from __future__ import annotations

import itertools
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.env_access import protocol_envs, require_lookahead
from agents.greedy import DEFAULT_CANDIDATES, greedy_choice
from agents.spaces import check_spaces, space_from_json, space_to_json
from arkd_env.env.actions import alpha_to_weights
from arkd_env.env.protocol import WeightingEnv

BASELINE_NAMES = ["fkl", "rkl", "fixed:<alpha>", "linear:<a>-><b>", "cosine", "phases:<a>/<b>/...",
                  "by-feature:<name>:<x>=<a>/...", "akl", "sft", "greedy", "greedy:<a>/<b>/...", "random"]
_PLAIN = {"fkl", "rkl", "cosine", "akl", "sft", "greedy", "random"}
MAX_PHASES = 100_000  # far more phases than any run has env steps; bounds the tuple a repeat count builds
_PREFIXED = ("fixed:", "linear:", "phases:", "by-feature:", "greedy:")
AKL_ENV_OVERRIDES: dict[str, Any] = {"action_mode": "simplex", "simplex_components": ["akl"]}
SFT_ENV_OVERRIDES: dict[str, Any] = {"action_mode": "simplex", "simplex_components": ["ce"]}
SAVE_FILE = "baseline.json"


def is_baseline_spec(name: str) -> bool:
    text = str(name).strip().lower()
    return text in _PLAIN or text.startswith(_PREFIXED)


def baseline_env_overrides(spec: str) -> dict[str, Any]:
    """Env settings a baseline needs, to apply before building its env (only ``akl`` and ``sft`` need any)."""
    text = spec.strip().lower()
    if text == "akl":
        return dict(AKL_ENV_OVERRIDES)
    return dict(SFT_ENV_OVERRIDES) if text == "sft" else {}


def _parse_unit(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"baseline {spec!r}: {text!r} is not a number; α must lie in [0, 1]") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"baseline {spec!r}: α={value} must lie in [0, 1]")
    return value


class BaselinePolicy:
    """A non-learned policy with the Stable-Baselines3 model surface (predict/learn/save/load).

    Subclasses give :meth:`weights_at`, or override :meth:`_act_row` entirely.
    """

    #: env settings the harness must apply when building this policy's env
    env_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: str, env: Any = None, **options: Any) -> None:
        self.spec = spec
        self.options = dict(options)
        self.num_timesteps = 0
        self.observation_space: gym.Space | None = None
        self.action_space: gym.Space | None = None
        self._env: Any = None  # as handed in (wrapped, vectorised), for get_env
        self._envs: list[WeightingEnv] = []  # the protocol env behind each VecEnv slot
        self._progress_index: int | None = None
        self._cache: dict[tuple[tuple[str, float], ...], Any] = {}
        if env is not None:
            self.set_env(env)

    # Env handling --------------------------------------------------------------------------
    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """Attach the env whose ``weights_to_action`` maps weights to actions."""
        del force_reset  # accepted for SB3 compatibility; a baseline keeps no rollout state
        if self.observation_space is not None:
            check_spaces(self, env)
        self._envs = protocol_envs(env)
        self._env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self._cache.clear()
        names = self.target.feature_names
        self._progress_index = names.index("progress") if "progress" in names else None
        self._check_env(self.target)

    def _check_env(self, target: WeightingEnv) -> None:
        """Fail at construction, not at the first step, when the env cannot host this policy."""
        self.weights_at(0.0)

    def get_env(self) -> Any:
        return self._env

    @property
    def target(self) -> WeightingEnv:
        """The env this policy acts in (the first VecEnv slot: all slots share one configuration)."""
        if not self._envs:
            raise ValueError(f"baseline {self.spec!r} has no env: load it with "
                             "BaselinePolicy.load(path, env=env) or call set_env(env)")
        return self._envs[0]

    def progress(self, row: np.ndarray) -> float:
        if self._progress_index is None:
            raise ValueError(f"baseline {self.spec!r} needs the 'progress' feature, absent from the env's "
                             f"features {self.target.feature_names}")
        return float(row[self._progress_index])

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed the policy's own randomness, as SB3's ``set_random_seed``; only ``random`` has any."""
        del seed

    # Acting -------------------------------------------------------------------------------
    def weights_at(self, progress: float) -> dict[str, float]:
        raise NotImplementedError

    def _action_for(self, weights: Mapping[str, float]) -> Any:
        key = tuple(sorted((k, float(v)) for k, v in weights.items()))
        if key not in self._cache:
            self._cache[key] = self.target.weights_to_action(weights)
        return self._cache[key]

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        del index  # which VecEnv slot the row came from; only the greedy policy needs it
        return self._action_for(self.weights_at(self.progress(row)))

    def predict(self, observation: Any, state: tuple[np.ndarray, ...] | None = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for one observation (shape of the observation space) or a VecEnv batch."""
        del episode_start, deterministic  # baselines are memoryless; `random` is random either way
        target = self.target
        obs = np.asarray(observation)
        shape = target.observation_space.shape or ()
        if obs.shape == tuple(shape):
            return self._stack([self._act_row(obs, 0)])[0], state
        if obs.shape[1:] == tuple(shape):
            return self._stack([self._act_row(row, i) for i, row in enumerate(obs)]), state
        raise ValueError(f"observation of shape {obs.shape} fits neither the observation space "
                         f"{target.observation_space} nor a batch of it")

    def _stack(self, actions: list[Any]) -> np.ndarray:
        space = self.target.action_space
        if isinstance(space, spaces.Discrete):
            return np.asarray([int(a) for a in actions], dtype=np.int64)
        return np.stack([np.asarray(a, dtype=space.dtype).reshape(space.shape) for a in actions])

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 1, tb_log_name: str = "",
              reset_num_timesteps: bool = True, progress_bar: bool = False) -> BaselinePolicy:
        """Nothing to learn; present so a harness can call ``learn`` on any policy."""
        del total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        return self

    # Persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a small zip holding ``baseline.json`` (``.zip`` is appended to a bare name, as in SB3)."""
        path = Path(path)
        if path.suffix == "":
            path = path.with_suffix(".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"spec": self.spec, "options": self.options,
                  "observation_space": None if self.observation_space is None
                  else space_to_json(self.observation_space),
                  "action_space": None if self.action_space is None else space_to_json(self.action_space)}
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(SAVE_FILE, json.dumps(record, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> BaselinePolicy:
        """Rebuild a saved baseline; with ``env`` its spaces must match those it was saved with."""
        del kwargs  # device= etc. from SB3-style callers
        path = Path(path)
        if not path.is_file() and Path(f"{path}.zip").is_file():
            path = Path(f"{path}.zip")
        try:
            with zipfile.ZipFile(path) as archive:
                record = json.loads(archive.read(SAVE_FILE))
        except (FileNotFoundError, KeyError, zipfile.BadZipFile):
            raise ValueError(f"{path}: not a saved baseline policy (no {SAVE_FILE} inside)") from None
        policy = make_baseline(record["spec"], None, **record.get("options", {}))
        for attr in ("observation_space", "action_space"):
            if record.get(attr) is not None:
                setattr(policy, attr, space_from_json(record[attr]))
        if env is not None:
            policy.set_env(env)
        return policy


class AlphaPolicy(BaselinePolicy):
    """α as a function of training progress: constant, linear, cosine or in phases."""

    def __init__(self, spec: str, env: Any = None, *, start: float, end: float, shape: str = "constant",
                 phases: tuple[float, ...] = (), **options: Any) -> None:
        self.start, self.end, self.shape, self.phases = start, end, shape, phases
        super().__init__(spec, env, **options)

    def _check_env(self, target: WeightingEnv) -> None:
        if self.shape != "constant" and self._progress_index is None:
            raise ValueError(f"baseline {self.spec!r} needs the 'progress' feature, absent from the env's "
                             f"features {target.feature_names}")
        super()._check_env(target)

    def alpha(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.shape == "linear":
            return self.start + (self.end - self.start) * p
        if self.shape == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))
        if self.shape == "phases":
            # progress is step/horizon, so step t of a horizon-n run sits exactly on phase t's start; the
            # observation's float32 can fall just short of it (5/12 · 12 = 4.9999998), hence the tolerance.
            return self.phases[min(int(p * len(self.phases) + 1e-6), len(self.phases) - 1)]
        return self.start

    def weights_at(self, progress: float) -> dict[str, float]:
        return alpha_to_weights(self.alpha(progress), self.target.component_names, self.target.action_mode)

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        progress = 0.0 if self.shape == "constant" else self.progress(row)
        return self._action_for(self.weights_at(progress))


class FeaturePolicy(BaselinePolicy):
    """α as a piecewise-linear function of one observation feature, constant beyond the listed points."""

    def __init__(self, spec: str, env: Any = None, *, feature: str, points: Sequence[tuple[float, float]],
                 **options: Any) -> None:
        self.feature = feature
        self.xs = np.asarray([x for x, _ in points], dtype=np.float64)
        self.alphas = np.asarray([a for _, a in points], dtype=np.float64)
        self._feature_index: int | None = None
        super().__init__(spec, env, **options)

    def _check_env(self, target: WeightingEnv) -> None:
        if self.feature not in target.feature_names:
            raise ValueError(f"baseline {self.spec!r} reads the feature {self.feature!r}, absent from the env's "
                             f"features {target.feature_names}")
        self._feature_index = target.feature_names.index(self.feature)

    def alpha(self, value: float) -> float:
        return float(np.interp(value, self.xs, self.alphas))

    def weights_at(self, progress: float) -> dict[str, float]:
        raise ValueError(f"baseline {self.spec!r} chooses its weights from the feature {self.feature!r}, not "
                         f"from progress")

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        assert self._feature_index is not None  # set_env ran _check_env
        value = self.alpha(float(row[self._feature_index]))
        # Not through the action cache: a continuous feature would give it a new α at every step.
        return self.target.weights_to_action(alpha_to_weights(value, self.target.component_names,
                                                              self.target.action_mode))


def _parse_feature_points(spec: str, text: str) -> tuple[str, list[tuple[float, float]]]:
    """``<name>:<x1>=<a1>/...`` of a by-feature spec: the feature and its (x, α) points, x increasing."""
    name, colon, listed = text.partition(":")
    if not colon or not name.strip() or not listed.strip():
        raise ValueError(f"baseline {spec!r}: expected by-feature:<name>:<x1>=<a1>/<x2>=<a2>/..., e.g. "
                         f"by-feature:instance_log_score_beta:0.3=0.4/0.5=1")
    points = []
    for part in listed.split("/"):
        x, equals, a = part.partition("=")
        try:
            value = float(x)
        except ValueError:
            value = math.nan
        if not equals or not math.isfinite(value):
            raise ValueError(f"baseline {spec!r}: point {part!r} must be <x>=<α> with a finite number x")
        points.append((value, _parse_unit(spec, a)))
    if any(b[0] <= a[0] for a, b in itertools.pairwise(points)):
        raise ValueError(f"baseline {spec!r}: the points' x must increase strictly, got "
                         f"{[x for x, _ in points]}")
    return name.strip(), points


class SingleComponentPolicy(BaselinePolicy):
    """Weight 1 on one loss component, in an env built to weight that component alone."""

    component: ClassVar[str] = ""

    def _check_env(self, target: WeightingEnv) -> None:
        if target.component_names != [self.component]:
            raise ValueError(f"baseline {self.spec!r} needs the env built with {self.env_overrides} (see agents."
                             f"baselines.baseline_env_overrides); this env weights {target.component_names}")

    def weights_at(self, progress: float) -> dict[str, float]:
        return {self.component: 1.0}

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        return self._action_for({self.component: 1.0})


class AKLPolicy(SingleComponentPolicy):
    """Weight 1 on the ``akl`` component: the loss applies the AKL rule per token."""

    env_overrides = AKL_ENV_OVERRIDES
    component = "akl"


class SFTPolicy(SingleComponentPolicy):
    """Weight 1 on the ``ce`` component: cross-entropy on the reference responses, the teacher unused."""

    env_overrides = SFT_ENV_OVERRIDES
    component = "ce"


class RandomPolicy(BaselinePolicy):
    """A uniformly drawn action each step, from its own generator seeded by the ``seed`` option."""

    def __init__(self, spec: str, env: Any = None, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        super().__init__(spec, env, seed=seed)

    def _check_env(self, target: WeightingEnv) -> None:
        space = target.action_space
        if isinstance(space, spaces.Box) and not np.all(np.isfinite([space.low, space.high])):
            raise ValueError(f"baseline 'random' needs a bounded action space, got {space}")
        if not isinstance(space, spaces.Box | spaces.Discrete):
            raise ValueError(f"baseline 'random' supports Box and Discrete actions, got {space}")

    def set_random_seed(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        space = self.target.action_space
        if isinstance(space, spaces.Discrete):
            return int(space.start) + int(self.rng.integers(int(space.n)))
        assert isinstance(space, spaces.Box)
        return self.rng.uniform(space.low, space.high).astype(space.dtype)


class GreedyPolicy(BaselinePolicy):
    """Picks, at each step, the candidate α with the best validation metric after a probe (agents.greedy).

    Options: ``candidates`` (α values in [0, 1]), ``probe_steps`` (updates per probe; default the env's
    ``updates_per_step``), ``metric`` (default the env's ``reward_metric``) and ``maximize`` (default: the
    metric's own direction, see arkd_env.eval.direction).
    """

    def __init__(self, spec: str, env: Any = None, candidates: Sequence[float] = DEFAULT_CANDIDATES,
                 probe_steps: int | None = None, metric: str | None = None,
                 maximize: bool | None = None) -> None:
        values = [float(c) for c in candidates]
        if not values or any(not 0.0 <= c <= 1.0 for c in values):
            raise ValueError(f"baseline 'greedy': candidates {list(candidates)} must be α values in [0, 1]")
        if probe_steps is not None and probe_steps < 1:
            raise ValueError(f"baseline 'greedy': probe_steps={probe_steps} must be >= 1")
        self.candidates = values
        self.probe_steps = probe_steps
        self.metric = metric
        self.maximize = maximize
        self.last_scores: dict[float, float] = {}  # candidate α -> score of the last probe, for logging
        super().__init__(spec, env, candidates=values, probe_steps=probe_steps, metric=metric,
                         maximize=maximize)

    def _check_env(self, target: WeightingEnv) -> None:
        for env in self._envs:
            require_lookahead(env, "baseline 'greedy'")

    def _act_row(self, row: np.ndarray, index: int) -> Any:
        env = require_lookahead(self._envs[index], "baseline 'greedy'")
        best, self.last_scores = greedy_choice(env, self.candidates, self.probe_steps, self.metric, self.maximize)
        return self._action_for(alpha_to_weights(best, env.component_names, env.action_mode))

    def weights_at(self, progress: float) -> dict[str, float]:
        raise ValueError("the greedy baseline chooses its weights by probing the env, not by progress")


def _no_options(spec: str, options: Mapping[str, Any]) -> None:
    if options:
        raise ValueError(f"baseline {spec!r} takes no options, got {', '.join(sorted(options))}")


def _parse_phases(spec: str, part: str) -> tuple[float, ...]:
    """One ``<a>`` or ``<a>*<k>`` of a phases spec: α, k times."""
    value, star, count = part.partition("*")
    if not star:
        return (_parse_unit(spec, value),)
    if not count.strip().isdigit() or not 1 <= int(count) <= MAX_PHASES:
        raise ValueError(f"baseline {spec!r}: repeat count {count!r} in {part!r} must be a whole number from 1 "
                         f"to {MAX_PHASES}")
    return (_parse_unit(spec, value),) * int(count)


def make_baseline(spec: str, env: Any, **options: Any) -> BaselinePolicy:
    """The baseline policy named by ``spec`` (see the module doc) acting on ``env``.

    ``env`` may be None to build a detached policy (e.g. to read its ``env_overrides``);
    it must then be attached with ``set_env`` before ``predict``.
    """
    text = str(spec).strip().lower()
    if text in ("fkl", "rkl"):
        _no_options(spec, options)
        value = 1.0 if text == "fkl" else 0.0
        return AlphaPolicy(text, env, start=value, end=value)
    if text.startswith("fixed:"):
        _no_options(spec, options)
        value = _parse_unit(spec, text.removeprefix("fixed:"))
        return AlphaPolicy(text, env, start=value, end=value)
    if text.startswith("linear:"):
        _no_options(spec, options)
        a, arrow, b = text.removeprefix("linear:").partition("->")
        if not arrow:
            raise ValueError(f"baseline {spec!r}: expected linear:<a>-><b>, e.g. linear:1->0")
        return AlphaPolicy(text, env, start=_parse_unit(spec, a), end=_parse_unit(spec, b), shape="linear")
    if text == "cosine":
        _no_options(spec, options)
        return AlphaPolicy(text, env, start=1.0, end=0.0, shape="cosine")
    if text.startswith("phases:"):
        _no_options(spec, options)
        values = tuple(v for part in text.removeprefix("phases:").split("/") for v in _parse_phases(spec, part))
        if len(values) > MAX_PHASES:
            raise ValueError(f"baseline {spec!r}: {len(values)} phases, more than {MAX_PHASES}")
        return AlphaPolicy(text, env, start=values[0], end=values[-1], shape="phases", phases=values)
    if text.startswith("by-feature:"):
        _no_options(spec, options)
        feature, points = _parse_feature_points(spec, text.removeprefix("by-feature:"))
        return FeaturePolicy(text, env, feature=feature, points=points)
    if text == "akl":
        _no_options(spec, options)
        return AKLPolicy(text, env)
    if text == "sft":
        _no_options(spec, options)
        return SFTPolicy(text, env)
    if text == "random":
        unknown = sorted(set(options) - {"seed"})
        if unknown:
            raise ValueError(f"baseline 'random' takes only the option seed, got {', '.join(unknown)}")
        return RandomPolicy(text, env, **options)
    if text == "greedy" or text.startswith("greedy:"):
        if text.startswith("greedy:"):
            listed = [_parse_unit(spec, part) for part in text.removeprefix("greedy:").split("/")]
            options = {**options, "candidates": listed}
        return GreedyPolicy(text, env, **options)
    raise ValueError(f"unknown baseline {spec!r}; known: {', '.join(BASELINE_NAMES)}")

"""Distillation posed as a Gymnasium environment: an action weights the divergences, a step trains the student."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from arkd_env.config import (
    DEFAULT_PRESET,
    SEED_LIMIT,
    EngineConfig,
    EnvConfig,
    check_reward_fits_data,
    load_preset,
)
from arkd_env.engine import Distiller
from arkd_env.env.actions import ActionCodec
from arkd_env.eval.direction import as_loss
from arkd_env.instances import FEATURE_NAMES as INSTANCE_FEATURES
from arkd_env.instances import Instance, InstanceSet, instance_set_from
from arkd_env.observation import DEFAULT_FEATURES, PROBE_FEATURES, build_observation, check_features, observation_space

REWARD_METRICS = {"val_divergence": "val_divergence", "val_ce": "val_ce", "rouge": "rouge_l", "score": "val_score",
                  "sparse": "val_divergence", "relative": "val_divergence", "relative_score": "val_score"}
RELATIVE_REWARDS = ("relative", "relative_score")  # measured against a reference probe from the same state


class DistillEnv(gym.Env[np.ndarray, Any]):
    r"""
    ## Description
    One episode is one distillation run of a student towards a frozen teacher, always from the same initial
    student (the engine's state is restored at `reset`). At every step the agent chooses how to weight the
    divergence components (forward KL, reverse KL, ...); the student then runs `updates_per_step` AdamW
    updates of Σ wᵢ·Dᵢ and is validated. The agent is rewarded for the validation improvement it caused,
    so it learns *when* mean-seeking (FKL) or mode-seeking (RKL) distillation helps the student most.

    ## Action Space
    Chosen by `action_mode`; continuous modes are `Box(-1, 1, (k,), float32)` as Stable-Baselines3 expects.

    | action_mode | space | weights applied |
    |-------------|-------|-----------------|
    | `mix` (default) | `Box(-1, 1, (1,))` | α = (a+1)/2: `fkl` = α, `rkl` = 1−α |
    | `simplex` | `Box(-1, 1, (k,))` | softmax(a / `simplex_temperature`) over `simplex_components` |
    | `head_tail` | `Box(-1, 1, (4,))` | (aᵢ+1)/2 on each of `fkl_head`, `fkl_tail`, `rkl_head`, `rkl_tail` |
    | `binary` | `Discrete(2)` | 0: `fkl` = 1; 1: `rkl` = 1 (the authors' prototype) |
    | `grid` | `Discrete(n)` | α = `alpha_grid`[i] of n values: `fkl` = α, `rkl` = 1−α (default: greedy's five) |

    The weights actually applied are `info["weights"]`. Actions with NaN/inf or of the wrong shape raise
    `ValueError`; finite actions outside [-1, 1] are clipped.

    ## Observation Space
    `Box(float32)` of the features named in `features` (all but the `probe_*` ones by default), in this order,
    built by `arkd_env.observation.build_observation` (which a training loop outside the env can call too):

    | name | meaning | scaling | range |
    |------|---------|---------|-------|
    | progress | env step / horizon | none | [0, 1] |
    | fkl | KL(p‖q) on the last training batch | log(1+x) | [0, 10] |
    | rkl | KL(q‖p) on the last training batch | log(1+x) | [0, 10] |
    | akl_head_ratio | AKL head gap share g_head/(g_head+g_tail) | none | [0, 1] |
    | akl_tail_ratio | AKL tail gap share | none | [0, 1] |
    | teacher_entropy | teacher entropy | / log V | [0, 1] |
    | student_entropy | student entropy | / log V | [0, 1] |
    | top1_agreement | share of positions where both argmaxes agree | none | [0, 1] |
    | student_ce | student cross-entropy on the references | log(1+x) | [0, 10] |
    | grad_norm | mean pre-clipping gradient norm of the step | log(1+x) | [0, 10] |
    | val_metric | current value of the reward's validation metric | log(1+x) | [0, 10] |
    | val_delta | relative improvement of that metric in the last step | clipped | [-1, 1] |
    | probe_gap | (gain_FKL − gain_RKL) / (abs(gain_FKL) + abs(gain_RKL)), see below | none | [-1, 1] |
    | probe_gain | max(gain_FKL, gain_RKL) / M | clipped | [-1, 1] |
    | w_<component> | weight applied in the last step, per controlled component | none | [0, 1] |
    | instance_<feature> | with `instances`: the instance (arkd_env/instances.py, FEATURE_NAMES) | see below | [0, 1] |

    gain_FKL is the drop of the reward's metric M after `probe_updates` updates of pure FKL from the current
    state on the coming batches, gain_RKL the same for pure RKL; both probes are undone. These lookahead
    features cost 2 × `probe_updates` updates and two validations per step, so they are only computed when
    `features` names them.

    ## Rewards
    With `reward="val_divergence"` (`EnvConfig`'s default) the metric is M = ½(FKL + RKL) of the student to
    the teacher on the validation set (symmetric, so it favours neither objective); `"val_ce"` uses the
    student's validation cross-entropy on the references; `"rouge"` uses −ROUGE-L of `rouge_size` sampled
    validation responses; `"score"` (the `blind` preset's) uses M = −`val_score`, the keyed data's exact
    F-beta of validity against recall (arkd_env/eval/exact.py), and needs `engine.data.source: keyed`.
    The reward of step t is r_t = `reward_scale` · (M_{t−1} − M_t), so the undiscounted return telescopes to
    the total improvement M_0 − M_H. With `"sparse"` every reward is 0 except the last, which is the total
    improvement of the validation divergence. With `"relative"` the step's updates are first run with the
    reference weighting α·FKL + (1−α)·RKL (α = `reference_alpha`) from the same state on the same batches and
    undone, and r_t = `reward_scale` · (M_t^ref − M_t): how much better the chosen weighting did than the
    reference, free of how much any weighting would have gained at that point of the run (large early, tiny
    late) and of the seed; it costs `updates_per_step` more updates and one more validation per step, and the
    return is the sum of those per-step advantages; `"relative_score"` does the same with the keyed score's
    M = −`val_score`. A step whose update went NaN/inf additionally loses
    `nan_penalty`. With `normalize_reward` rewards are divided by the running standard deviation of the
    discounted return (γ = 0.99) by a wrapper, not by this class: `gymnasium.make` adds Gymnasium's
    `NormalizeReward`, `arkd train` SB3's `VecNormalize` (see `arkd_env.env.wrappers`).

    ## Starting State
    The initial state (student weights, optimizer, schedule, RNGs, data position) of a run on one engine seed:
    `engine.seed` by default, so every episode starts from the same student and a fixed action sequence gives
    identical rewards on CPU. With `train_seeds` each reset draws the engine seed from that pool with
    `np_random` (the seed passed to `reset` seeds it), so the agent sees many students and data orders;
    `reset(options={"engine_seed": s})` picks one. The seed used is `env.engine_seed` and `info["engine_seed"]`.

    With `instances` (an instance set, arkd_env/instances.py) every episode also poses one instance: which keys
    of the keyed layout the student learns, its share of list tasks and its size. `reset` draws it from the
    `instance_split` split with `np_random` (before the engine seed), `instance` pins one, or
    `options={"instance": name}` picks any instance of the set; the observation ends with its features, and
    `info["instance"]` names it. Each instance has its own engine (student and data), all sharing one teacher.

    ## Episode End
    Truncation: after `horizon` steps. Termination: after `max_consecutive_failures` steps in a row whose
    updates produced a non-finite loss or gradient (such updates are skipped) or left non-finite weights
    (the step is then undone: the engine returns to its state before the step and `info["restored"]` is True).

    ## Arguments
    `gymnasium.make("arkd_env/Distill-v1", preset="nano", horizon=8, engine_overrides={"lr": 1e-3})`:
    `preset` names a file in `arkd_env/configs/`; every `EnvConfig` field can be passed by name; engine
    fields through `engine_overrides` (dotted keys allowed). `engine=`/`env_config=` take built configs.
    `render_mode="ansi"` returns a one-screen text summary of the last step.

    ## Version History
    * v0: initial version. Reward normalisation moved from the env into wrappers (same id: the rewards a
      `gymnasium.make` env returns are unchanged in kind); the engine no longer touches the global torch RNG.
      Instance sets (`instances`, `instance_split`, `reset(options={"instance": ...})`): without them nothing
      changes; with them the observation ends with the instance's features. `episode_state`/`resume_episode`
      continue an episode in another process (online runs), and `last_reward` reads the env's own reward.
      Instances gained `member_blind` and `score_beta`, so the observation's instance features grew from 4 to
      6 (`instance_member_blind`, `instance_log_score_beta`); the `blind` preset's instance set varies them.
      `instance` pins every episode to one instance of the set. The reward `relative_score` was added (the
      keyed score gained over the reference weighting's probe).
    * v1: the default preset became `blind` (the blind keyed benchmark, whose instances differ in the F-beta
      they are scored by), so the default observation carries the instance features and the default reward
      is the score's. `arkd_env/Distill-v0` stays registered with `preset="embedded"`, the synthetic suite
      that was its default.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (Gymnasium's own convention)

    def __init__(self, preset: str = DEFAULT_PRESET, render_mode: str | None = None,
                 engine_overrides: Mapping[str, Any] | None = None, engine: EngineConfig | None = None,
                 env_config: EnvConfig | None = None, **env_fields: Any) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r}: DistillEnv supports only 'ansi' or None")
        overrides = {f"engine.{k}": v for k, v in (engine_overrides or {}).items()}
        overrides.update({f"env.{k}": v for k, v in env_fields.items()})
        loaded = load_preset(preset, overrides)
        self.preset = preset
        self.engine_config = engine or loaded.engine
        self.config = env_config or loaded.env
        self.render_mode = render_mode
        check_reward_fits_data(self.config.reward, self.engine_config.data.source)
        self.instance_set: InstanceSet | None = (instance_set_from(self.config.instances)
                                                  if self.config.instances else None)
        self._distillers: dict[str | None, Distiller] = {}
        self.instance: Instance | None = None
        if self.instance_set is not None:
            # Unknown names fail here, at construction, with the set's instances listed.
            pinned = self.config.instance
            self.instance = self.instance_set.get(pinned if pinned is not None else
                                                  self.instance_set.names(self.config.instance_split)[0])
        self.distiller = self._distiller_for(self.instance)
        self.action_mode = self.config.action_mode
        self.codec = ActionCodec(self.action_mode, self.config.alpha_grid, self.config.simplex_components,
                                 self.config.simplex_temperature)
        self.component_names = self.codec.component_names
        self.feature_names = list(self.config.features or DEFAULT_FEATURES) + [f"w_{c}" for c in self.component_names]
        check_features(self.feature_names)
        if self.instance_set is not None:  # after the check: these names are the instance's, not options
            self.feature_names += [f"instance_{name}" for name in INSTANCE_FEATURES]
        self.reward_metric = REWARD_METRICS[self.config.reward]
        self.action_space = self.codec.space
        self.observation_space: spaces.Box = observation_space(self.feature_names)
        # (instance, engine seed) -> (state, features, validation metrics) an episode there starts from
        self._starts: dict[tuple[str | None, int], tuple[dict[str, Any], dict[str, float], dict[str, float]]] = {}
        self._start(self.engine_config.seed, self.distiller.snapshot())
        self.engine_seed = self.engine_config.seed
        self._step = 0
        self._done = True
        self._spent_at_start = 0
        self._last: dict[str, Any] = {}

    def _distiller_for(self, instance: Instance | None) -> Distiller:
        """The engine of ``instance`` (the preset's own task for None), built on first use and kept: instances
        differ in their student and data, and share the teacher (arkd_env/instances.py)."""
        name = None if instance is None else instance.name
        if name not in self._distillers:
            cfg = self.engine_config if instance is None else instance.apply(self.engine_config)
            self._distillers[name] = Distiller.from_config(cfg)
        return self._distillers[name]

    # ------------------------------------------------------------------ actions
    def action_to_weights(self, action: Any) -> dict[str, float]:
        """The component weights an action stands for (see the class docstring's table)."""
        return self.codec.to_weights(action)

    def weights_to_action(self, weights: Mapping[str, float]) -> Any:
        """An action applying ``weights`` (see :meth:`arkd_env.env.actions.ActionCodec.from_weights`)."""
        return self.codec.from_weights(weights)

    @property
    def instance_name(self) -> str | None:
        """The current episode's instance (None without an instance set)."""
        return None if self.instance is None else self.instance.name

    @property
    def alpha_grid(self) -> list[float]:
        """The FKL weights α that the ``grid`` action mode's actions index."""
        return list(self.codec.alpha_grid)

    @property
    def simplex_temperature(self) -> float:
        return self.codec.simplex_temperature

    @property
    def updates_per_step(self) -> int:
        return self.config.updates_per_step

    # ------------------------------------------------------------------ observations and rewards
    def _evaluate(self) -> dict[str, float]:
        return self.distiller.evaluate(generate=self.config.reward == "rouge")

    def _metric(self, metrics: Mapping[str, float]) -> float:
        """The reward's metric, turned so that lower is better."""
        return as_loss(self.reward_metric, metrics[self.reward_metric])

    def probe(self, weights: Mapping[str, float], updates: int | None = None, generate: bool = False,
              state: dict[str, Any] | None = None) -> dict[str, float]:
        """Validation metrics after ``updates`` (default: one step's) updates with ``weights`` from the current
        state, which is then restored (pass its ``distiller.snapshot()`` as ``state`` to save taking one). The
        episode is not advanced. This is the one lookahead: the probe features, the relative reward and the
        greedy heuristic all run it."""
        state = state if state is not None else self.distiller.snapshot()
        updates = updates if updates is not None else self.config.updates_per_step
        try:
            self.distiller.train_steps(weights, updates)
            return self.distiller.evaluate(generate=generate or self.config.reward == "rouge")
        finally:
            self.distiller.restore(state)

    def lookahead(self, weights: Mapping[str, float], updates: int | None = None,
                  state: dict[str, Any] | None = None) -> float:
        """The reward's metric (lower is better) after a :meth:`probe`."""
        return self._metric(self.probe(weights, updates, state=state))

    def _reference_metric(self, state: dict[str, Any]) -> float:
        alpha = self.config.reference_alpha
        return self.lookahead({"fkl": alpha, "rkl": 1.0 - alpha}, state=state)

    def _probes(self, current: float) -> dict[str, float]:
        """The lookahead features: pure FKL and pure RKL for probe_updates updates each, both undone."""
        if not any(f in PROBE_FEATURES for f in self.feature_names):
            return {}
        state = self.distiller.snapshot()
        after = {name: self.lookahead({name: 1.0}, self.config.probe_updates, state) for name in ("fkl", "rkl")}
        gains = {name: current - value for name, value in after.items()}
        spread = abs(gains["fkl"]) + abs(gains["rkl"])
        return {"probe_gap": (gains["fkl"] - gains["rkl"]) / spread if spread > 0 else 0.0,
                "probe_gain": max(gains.values()) / max(abs(current), 1e-8)}

    def _observation(self, features: Mapping[str, float], metrics: Mapping[str, float], previous: float,
                     weights: Mapping[str, float]) -> np.ndarray:
        current = self._metric(metrics)
        instance = ({} if self.instance is None else
                    {f"instance_{n}": v for n, v in zip(INSTANCE_FEATURES, self.instance.features(), strict=True)})
        return build_observation(self.feature_names, features, val_metric=current, previous_val_metric=previous,
                                 progress=self._step / self.config.horizon, weights=weights,
                                 vocab_size=self.distiller.vocab_size, extra={**self._probes(current), **instance})

    def _start(self, seed: int, state: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, float],
                                                                            dict[str, float]]:
        """The starting point of an episode on engine seed ``seed``, built on first use and kept."""
        key = (None if self.instance is None else self.instance.name, seed)
        if key not in self._starts:
            state = state if state is not None else self.distiller.initial_state(seed)
            self.distiller.restore(state)
            self._starts[key] = (state, self.distiller.features(), self._evaluate())
        return self._starts[key]

    def _check_options(self, options: dict[str, Any] | None) -> None:
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"reset(options={options!r}): options must be a mapping such as {{'engine_seed': 3}}")
        unknown = sorted(set(options or {}) - {"engine_seed", "instance"})
        if unknown:
            raise ValueError(f"reset(options=...): unknown option {unknown[0]!r} (known: engine_seed, instance)")

    def _pick_instance(self, options: dict[str, Any] | None) -> Instance | None:
        """The instance named in ``options``, else ``env.instance``, else one drawn from ``instance_split`` with
        ``np_random``."""
        chosen = (options or {}).get("instance")
        if self.instance_set is None:
            if chosen is not None:
                raise ValueError(f"reset(options={{'instance': {chosen!r}}}): this env has no instance set "
                                 f"(env.instances is null)")
            return None
        if chosen is not None:
            if not isinstance(chosen, str):
                raise ValueError(f"reset(options={{'instance': {chosen!r}}}): must be an instance name")
            return self.instance_set.get(chosen)
        if self.config.instance is not None:
            return self.instance_set.get(self.config.instance)
        names = self.instance_set.names(self.config.instance_split)
        return self.instance_set.get(names[int(self.np_random.integers(len(names)))])

    def _pick_seed(self, options: dict[str, Any] | None) -> int:
        chosen = (options or {}).get("engine_seed")
        if chosen is not None:
            if isinstance(chosen, bool) or not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < SEED_LIMIT:
                raise ValueError(f"reset(options={{'engine_seed': {chosen!r}}}): the engine seed must be an int in "
                                 f"[0, {SEED_LIMIT})")
            return int(chosen)
        pool = self.config.train_seeds
        return int(pool[self.np_random.integers(len(pool))]) if pool else self.engine_config.seed

    def _uniform_weights(self) -> dict[str, float]:
        return {c: 1.0 / len(self.component_names) for c in self.component_names}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._check_options(options)
        self.instance = self._pick_instance(options)
        self.distiller = self._distiller_for(self.instance)
        self.engine_seed = self._pick_seed(options)
        state, features, metrics = self._start(self.engine_seed)
        self.distiller.restore(state)
        self._spent_at_start = self.distiller.spent_updates  # before the first observation's probes
        self._step = 0
        self._done = False
        self._failures = 0
        self._metric_now = self._metric(metrics)
        self._start_metric = self._metric_now
        weights = self._uniform_weights()
        obs = self._observation(features, metrics, self._metric_now, weights)
        self._last = {"weights": weights, "val": dict(metrics), "reward": 0.0}
        return obs, {"weights": weights, "val": dict(metrics), "engine_seed": self.engine_seed,
                     "instance": self.instance_name}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise gym.error.ResetNeeded("Cannot call DistillEnv.step() before reset() or after the episode ended")
        weights = self.action_to_weights(action)
        last_good = self.distiller.snapshot()  # finite: every step ends with finite weights (below)
        reference = self._reference_metric(last_good) if self.config.reward in RELATIVE_REWARDS else None
        report = self.distiller.train_steps(weights, self.config.updates_per_step)
        # An update's loss and gradient are checked before it is applied; weights can still go non-finite after
        # a check passed (e.g. an optimizer overflow in the step's last update), so they are checked too.
        restored = not self.distiller.parameters_finite()
        if restored:
            self.distiller.restore(last_good)
        failed = report.n_failed > 0 or restored
        self._failures = self._failures + 1 if failed else 0
        self._step += 1
        metrics = self._evaluate()
        previous, self._metric_now = self._metric_now, self._metric(metrics)
        truncated = self._step >= self.config.horizon
        terminated = self._failures >= self.config.max_consecutive_failures
        if self.config.reward == "sparse":
            raw = self._start_metric - self._metric_now if (truncated or terminated) else 0.0
        elif reference is not None and math.isfinite(reference):
            raw = reference - self._metric_now
        else:
            raw = previous - self._metric_now
        reward = self.config.reward_scale * raw - (self.config.nan_penalty if failed else 0.0)
        self._done = truncated or terminated
        obs = self._observation(report.features, metrics, previous, weights)
        info = {"weights": weights, "val": metrics, "train": report.features, "components": report.components,
                "loss": report.loss, "update_log": [dataclasses.asdict(r) for r in report.update_log],
                "n_failed": report.n_failed, "restored": restored,
                "consecutive_failures": self._failures,
                "updates": self.distiller.updates, "step": self._step, "engine_seed": self.engine_seed,
                "instance": self.instance_name}
        self._last = {**info, "reward": float(reward)}
        return obs, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        last = self._last
        weights = "  ".join(f"{k}={v:.3f}" for k, v in last.get("weights", {}).items())
        val = "  ".join(f"{k}={v:.4g}" for k, v in sorted(last.get("val", {}).items()))
        return (f"ARKD {self.preset} step {self._step}/{self.config.horizon}  updates {self.distiller.updates}\n"
                f"  weights: {weights}\n  reward:  {last.get('reward', 0.0):+.5f}  failed updates: "
                f"{last.get('n_failed', 0)}\n  val:     {val}\n")

    def snapshot(self) -> dict[str, Any]:
        """The engine state, for restarting a lost worker from its last good state (see arkd_env.vec)."""
        return self.distiller.snapshot()

    def restore(self, state: Mapping[str, Any]) -> None:
        self.distiller.restore(state)

    @property
    def episode_updates(self) -> int:
        """Student updates the episode has cost so far: every one since its ``reset``, probes and lookaheads (and
        the first observation's probes) included."""
        return self.distiller.spent_updates - self._spent_at_start

    @property
    def last_reward(self) -> float:
        """The reward of the last step (0 before any), as the env computed it, whatever wrappers made of it."""
        return float(self._last.get("reward", 0.0))

    def episode_state(self) -> dict[str, Any]:
        """Where the episode stands besides the engine (JSON data): with :meth:`snapshot`, what continuing this
        episode in a new process needs (an online run resumed after a kill). The cost counter
        ``spent_updates`` travels with it, since restoring an engine state leaves that counter alone."""
        return {"instance": self.instance_name, "engine_seed": self.engine_seed, "step": self._step,
                "done": self._done, "failures": self._failures, "metric_now": self._metric_now,
                "start_metric": self._start_metric, "last": self._last,
                "np_random": self.np_random.bit_generator.state, "spent_updates": self.distiller.spent_updates,
                "spent_at_start": self._spent_at_start}

    def resume_episode(self, episode: Mapping[str, Any], engine: Mapping[str, Any]) -> None:
        """Continue the episode of :meth:`episode_state` ``episode`` from the engine state ``engine``, as if
        it had never stopped; no ``reset`` is needed before the next ``step``."""
        name = episode["instance"]
        if name is not None and self.instance_set is None:
            raise ValueError(f"the saved episode poses instance {name!r} but this env has no instance set")
        self.instance = None if name is None else self.instance_set.get(name)  # type: ignore[union-attr]
        self.distiller = self._distiller_for(self.instance)
        self.distiller.restore(engine)
        self.distiller.spent_updates = int(episode["spent_updates"])
        self._spent_at_start = int(episode["spent_at_start"])
        self.engine_seed = int(episode["engine_seed"])
        self._step, self._done = int(episode["step"]), bool(episode["done"])
        self._failures = int(episode["failures"])
        self._metric_now, self._start_metric = float(episode["metric_now"]), float(episode["start_metric"])
        self._last = dict(episode["last"])
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = dict(episode["np_random"])
        self.np_random = generator

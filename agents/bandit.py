"""Discounted Thompson sampling over the arms of a Discrete action space: an agent for ARKD's online mode.

Why a bandit: in online mode there is a single distillation run, and the agent has to pick a weighting at every
env step and do better *within that run* from each step's reward. A policy-gradient agent needs many episodes
before its updates mean anything; a bandit improves after every reward. It therefore ignores the observation
and treats each α of the ``grid`` action mode (each index of ``Discrete(n)``) as an arm, keeping a belief about
the reward that arm gives *now*.

Why discounted: which α helps most changes while the student trains, so the arms' rewards are not stationary.
Following Raj & Kalyani (2017, "Taming non-stationary bandits: a Bayesian approach"), the sufficient statistics
of *every* arm are multiplied by a discount γ at every step before the new reward is added. A reward seen k steps
ago then weighs γ^k (an effective memory of about 1 / (1 - γ) steps), and an arm left alone drifts back to its
prior, whose spread makes it worth trying again: that is how the bandit notices a best arm that has changed.
γ = 1 is ordinary (stationary) Thompson sampling.

Model: the reward of arm k is Gaussian with unknown mean and known standard deviation σ (``reward_std``), with a
normal prior N(μ₀, σ₀²) (``prior_mean``, ``prior_std``) on each mean. With the discounted count and sum

    N_k ← γ·N_k + [k = a_t]        S_k ← γ·S_k + [k = a_t]·r_t        (all arms, every step)

the posterior of arm k's mean is the conjugate normal one in which N_k plays the part of the number of rewards:

    precision_k = 1/σ₀² + N_k/σ²    mean_k = (μ₀/σ₀² + S_k/σ²) / precision_k    std_k = precision_k^(-1/2)

Each step draws θ_k ~ N(mean_k, std_k²) for every arm and plays argmax_k θ_k.

``reward_std`` is a fixed hyperparameter, not estimated: with γ < 1 each arm has only about 1 / (1 - γ) effective
rewards, so an estimate of σ would itself be noisy, and one that comes out too small early stops the exploration
the bandit depends on to follow a change; a known σ also keeps the posterior the closed form above, checkable by
hand. Give it in the units of the env's reward (the noise of one step's validation improvement, times
``reward_scale``), and ``prior_std`` about the spread of rewards between arms: it bounds how far a forgotten arm's
draws reach, i.e. how eagerly the bandit re-explores.

With a VecEnv of several slots the discount is applied once per ``env.step`` (it measures time) and the rewards of
all slots are added as simultaneous observations of one shared posterior. The class follows the
Stable-Baselines3 model interface (learn, predict, save/load, callbacks, SB3 logger) without subclassing
``BaseAlgorithm``, which is built around a torch policy this agent does not have; its save file is JSON only.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar, cast

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, ProgressBarCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.utils import configure_logger, is_vectorized_observation
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from agents.policy_record import META_FILE, meta_entry
from agents.policy_spec import zip_target
from agents.spaces import check_spaces, space_from_json, space_to_json

SelfDiscountedThompson = TypeVar("SelfDiscountedThompson", bound="DiscountedThompson")

ALGO = "agents.bandit:DiscountedThompson"  # how agents.registry.load_agent finds this class in a saved file
SAVE_FILE = "bandit.json"
FORMAT_VERSION = 1
HYPERPARAMS = ("gamma", "prior_mean", "prior_std", "reward_std", "seed", "verbose", "tensorboard_log")
_SB3_LOAD_ARGS = ("device", "custom_objects", "print_system_info")  # accepted by load, meaningless here


# Numeric core ---------------------------------------------------------------------------------------------------

class ArmStats(NamedTuple):
    """Discounted sufficient statistics per arm: what the posterior is computed from, and all that is saved."""

    counts: np.ndarray  # N_k, the discounted number of rewards seen from arm k
    sums: np.ndarray  # S_k, the discounted sum of those rewards


class Prior(NamedTuple):
    mean: float
    std: float


def empty_stats(n_arms: int) -> ArmStats:
    if n_arms < 1:
        raise ValueError(f"n_arms={n_arms}: a bandit needs at least one arm")
    return ArmStats(np.zeros(n_arms, dtype=np.float64), np.zeros(n_arms, dtype=np.float64))


def discount_update(stats: ArmStats, arm: int | Sequence[int] | np.ndarray,
                    reward: float | Sequence[float] | np.ndarray, gamma: float) -> ArmStats:
    """New statistics after one step: every arm discounted by ``gamma``, then each (arm, reward) pair added.

    ``arm`` and ``reward`` may be one value each or equal-length sequences (the VecEnv slots of one step). The
    input is left untouched, so callers can compare before and after.
    """
    arms = np.atleast_1d(np.asarray(arm))
    rewards = np.atleast_1d(np.asarray(reward, dtype=np.float64))
    n_arms = len(stats.counts)
    if arms.ndim != 1 or arms.shape != rewards.shape:
        raise ValueError(f"discount_update: {arms.size} arm(s) for {rewards.size} reward(s); give one arm per reward")
    if arms.size and not np.issubdtype(arms.dtype, np.integer):
        raise ValueError(f"discount_update: arms {arms.tolist()} must be integers")
    if arms.size and (arms.min() < 0 or arms.max() >= n_arms):
        raise ValueError(f"discount_update: arm {arms.tolist()} outside 0..{n_arms - 1}")
    if not np.all(np.isfinite(rewards)):
        raise ValueError(f"discount_update: reward {rewards.tolist()} is not finite; it would poison the posterior")
    counts = gamma * stats.counts + np.bincount(arms, minlength=n_arms)
    sums = gamma * stats.sums + np.bincount(arms, weights=rewards, minlength=n_arms)
    return ArmStats(counts, sums)


def posterior(stats: ArmStats, prior: Prior, reward_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each arm's posterior (normal prior, Gaussian rewards of std ``reward_std``)."""
    prior_precision = 1.0 / prior.std**2
    noise_precision = 1.0 / reward_std**2
    precision = prior_precision + stats.counts * noise_precision
    mean = (prior.mean * prior_precision + stats.sums * noise_precision) / precision
    return mean, 1.0 / np.sqrt(precision)


def thompson_arms(means: np.ndarray, stds: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """One Thompson draw per arm for each of ``n`` decisions; the arm of the largest draw of each."""
    draws = rng.normal(means, stds, size=(n, len(means)))
    return np.argmax(draws, axis=1)


# Validation -------------------------------------------------------------------------------------------------------

def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"DiscountedThompson: {name}={value!r} must be a number")
    if not math.isfinite(float(value)):
        raise ValueError(f"DiscountedThompson: {name}={value} must be finite")
    return float(value)


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0.0:
        raise ValueError(f"DiscountedThompson: {name}={value} must be > 0")
    return number


def _discrete_space(space: Any) -> spaces.Discrete:
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"DiscountedThompson needs a Discrete action space (action_mode='grid'), got {space}")
    return space


# The agent ----------------------------------------------------------------------------------------------------

class DiscountedThompson:
    """Discounted Gaussian Thompson sampling with the Stable-Baselines3 model surface.

    :param policy: ignored (the bandit has no network); accepted so SB3-style callers and make_agent can pass it
    :param gamma: discount of every arm's statistics per step, in (0, 1]; 1 means no forgetting
    :param prior_mean: prior mean of every arm's reward
    :param prior_std: prior standard deviation of every arm's mean reward (> 0)
    :param reward_std: known standard deviation of one reward around its arm's mean (> 0), see the module notes
    :param seed: seed of the agent's own generator (and, as SB3 does, of the env and its action space)
    """

    def __init__(self, policy: str | type | None = "MlpPolicy", env: GymEnv | None = None, gamma: float = 0.95,
                 prior_mean: float = 0.0, prior_std: float = 1.0, reward_std: float = 1.0,
                 seed: int | None = None, verbose: int = 0, tensorboard_log: str | None = None) -> None:
        del policy
        self.gamma = _number("gamma", gamma)
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"DiscountedThompson: gamma={gamma} must lie in (0, 1]")
        self.prior_mean = _number("prior_mean", prior_mean)
        self.prior_std = _positive("prior_std", prior_std)
        self.reward_std = _positive("reward_std", reward_std)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
            raise ValueError(f"DiscountedThompson: seed={seed!r} must be a non-negative integer or None")
        if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
            raise ValueError(f"DiscountedThompson: verbose={verbose!r} must be a non-negative integer")
        self.seed = None if seed is None else int(seed)
        self.verbose = verbose
        self.tensorboard_log = tensorboard_log
        self.num_timesteps = 0
        self._n_updates = 0  # env.step calls whose rewards went into the posterior, over all learn calls
        self._episode_num = 0
        self._num_timesteps_at_start = 0
        self.start_time = time.time_ns()
        self.env: VecEnv | None = None
        self.n_envs = 1
        self.observation_space: spaces.Space | None = None
        self.action_space: spaces.Discrete | None = None
        self.stats: ArmStats | None = None
        self.rng = np.random.default_rng(self.seed)
        self._logger: Logger | None = None
        self._custom_logger = False
        self._env_ready = False  # False until the env is reset (or was handed over mid-episode on purpose)
        if env is not None:
            self.set_env(env)
            if self.seed is not None:
                self.set_random_seed(self.seed)

    # Env handling -------------------------------------------------------------------------------------------
    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Attach ``env`` (a plain env is wrapped in Monitor and DummyVecEnv, as SB3 does).

        ``force_reset=False`` takes the env as it is, mid-episode, so that a run whose agent was saved and
        loaded goes on stepping the same episode; otherwise the next ``learn`` resets it.
        """
        _discrete_space(env.action_space)
        if self.action_space is not None:
            check_spaces(self, env)
        venv = env if isinstance(env, VecEnv) else BaseAlgorithm._wrap_env(env, self.verbose, monitor_wrapper=True)
        self.env = venv
        self.n_envs = venv.num_envs
        self.observation_space = venv.observation_space
        self.action_space = _discrete_space(venv.action_space)
        if self.stats is None:
            self.stats = empty_stats(int(self.action_space.n))
        self._env_ready = not force_reset

    def get_env(self) -> VecEnv | None:
        return self.env

    def get_vec_normalize_env(self) -> VecNormalize | None:
        """The VecNormalize in the env's wrappers, if any (checkpointing saves its statistics)."""
        return None if self.env is None else unwrap_vec_normalize(self.env)

    def _require_env(self) -> VecEnv:
        if self.env is None:
            raise ValueError("DiscountedThompson has no env: pass env= or call set_env(env) before learn")
        return self.env

    def set_random_seed(self, seed: int | None = None) -> None:
        """Reseed the agent's generator (None: fresh entropy), plus the action space and the env, as SB3 does.

        Global numpy/torch seeds are left alone: every draw of the agent comes from its own generator, and
        reseeding the global ones would disturb the student's training.
        """
        self.rng = np.random.default_rng(seed)
        if seed is None:
            return
        if self.action_space is not None:
            self.action_space.seed(seed)
        if self.env is not None:
            self.env.seed(seed)

    # Logging -------------------------------------------------------------------------------------------------
    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, "DiscountedThompson")
        return self._logger

    def set_logger(self, logger: Logger) -> None:
        """Use ``logger`` from now on, instead of the one each ``learn`` would configure."""
        self._logger = logger
        self._custom_logger = True

    # Beliefs and acting --------------------------------------------------------------------------------------
    @property
    def prior(self) -> Prior:
        return Prior(self.prior_mean, self.prior_std)

    def _require_stats(self) -> ArmStats:
        if self.stats is None:
            raise ValueError("DiscountedThompson has no arms yet: attach an env with a Discrete action space")
        return self.stats

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Current posterior mean and standard deviation of each arm's reward."""
        return posterior(self._require_stats(), self.prior, self.reward_std)

    def _choose(self, n: int, deterministic: bool) -> np.ndarray:
        """Arm indices (0-based) for ``n`` decisions."""
        means, stds = self.posterior()
        if deterministic:
            # Ties (all arms at the prior) go to the lowest index, so the choice is repeatable.
            return np.full(n, int(np.argmax(means)), dtype=np.int64)
        return thompson_arms(means, stds, self.rng, n).astype(np.int64)

    def _to_actions(self, arms: np.ndarray) -> np.ndarray:
        assert self.action_space is not None
        return arms + int(self.action_space.start)

    def predict(self, observation: Any, state: tuple[np.ndarray, ...] | None = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Action for one observation, or one per row of a VecEnv batch; the observation's content is unused.

        deterministic: the arm with the highest posterior mean; otherwise a Thompson draw, taken from the agent's
        generator (so predicting between two learn calls changes the draws that follow).
        """
        del episode_start
        batch = self._batch_size(observation)
        arms = self._choose(1 if batch is None else batch, deterministic)
        actions = self._to_actions(arms)
        return (np.asarray(actions[0]) if batch is None else actions), state

    def observe(self, action: Any, reward: Any) -> None:
        """Learn from the reward(s) of the action(s) taken at one step, outside ``learn``: the online mode of a
        training loop that steps itself (``train.hf.WeightingCallback``)."""
        assert self.action_space is not None
        arms = np.asarray(action, dtype=np.int64).reshape(-1) - int(self.action_space.start)
        self.stats = discount_update(self._require_stats(), arms, np.asarray(reward, dtype=np.float64).reshape(-1),
                                     self.gamma)
        self._n_updates += 1

    def _batch_size(self, observation: Any) -> int | None:
        """Rows of a batched observation, or None for a single one."""
        if self.observation_space is None:
            return None
        if not is_vectorized_observation(observation, self.observation_space):
            return None
        first = next(iter(observation.values())) if isinstance(observation, dict) else observation
        return int(np.asarray(first).shape[0])

    # Training ----------------------------------------------------------------------------------------------
    def learn(self: SelfDiscountedThompson, total_timesteps: int, callback: MaybeCallback = None,
              log_interval: int = 1, tb_log_name: str = "DiscountedThompson", reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> SelfDiscountedThompson:
        """Step the env ``total_timesteps`` times (over all slots), updating the posterior after every step.

        The posterior is kept across calls and episodes (``reset_num_timesteps`` resets only the step counter
        and the env, as in SB3). A "rollout" for callbacks is an episode: the bandit has no batches.
        ``log_interval``: dump the logger every that many env steps (0: never).
        """
        env = self._require_env()
        self.start_time = time.time_ns()
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._episode_num = 0
        else:
            total_timesteps += self.num_timesteps  # SB3: learn(n) trains n more steps
        self._num_timesteps_at_start = self.num_timesteps
        if reset_num_timesteps or not self._env_ready:
            env.reset()
            self._env_ready = True
        if not self._custom_logger:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        cb = self._init_callback(callback, progress_bar)
        cb.on_training_start(locals(), globals())
        cb.on_rollout_start()
        while self.num_timesteps < total_timesteps:
            if not self._step(env, cb):
                break
            if log_interval and self._n_updates % log_interval == 0:
                self._dump_logs()
        cb.on_rollout_end()
        cb.on_training_end()
        return self

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool) -> BaseCallback:
        """SB3's conversion: a list becomes a CallbackList, a function a ConvertCallback, plus the progress bar."""
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            callback = CallbackList([callback, ProgressBarCallback()])
        callback.init_callback(self)  # type: ignore[arg-type]  # the SB3 model surface, not a BaseAlgorithm
        return callback

    def _step(self, env: VecEnv, callback: BaseCallback) -> bool:
        """One env step in every slot and the posterior update from its rewards; False when a callback stops."""
        arms = self._choose(env.num_envs, deterministic=False)
        actions = self._to_actions(arms)
        new_obs, rewards, dones, infos = env.step(actions)
        self.num_timesteps += env.num_envs
        # Update before the callback, so a checkpoint taken at step N holds step N's reward (and resumes from it).
        self.observe(actions, rewards)
        means, _ = self.posterior()
        for arm, reward in zip(arms, np.asarray(rewards).reshape(-1), strict=True):
            self.logger.record_mean("bandit/chosen_arm", int(arm))
            self.logger.record_mean("bandit/reward", float(reward))
        for i, mean in enumerate(means):
            self.logger.record(f"bandit/posterior_mean_{i}", float(mean))
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        finished = int(np.sum(dones))
        if finished:
            self._episode_num += finished
            callback.on_rollout_end()
            callback.on_rollout_start()
        return True

    def _dump_logs(self) -> None:
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / elapsed))
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    # Persistence --------------------------------------------------------------------------------------------
    def _hyperparams(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HYPERPARAMS}

    def save(self, path: str | Path | IO[bytes]) -> None:
        """A zip holding ``bandit.json``: hyperparameters, spaces, posterior statistics, counters and the exact
        generator state, all JSON (floats written as their shortest exact repr, so a load restores them bit
        for bit). ``.zip`` is appended to a path without suffix, as SB3 does."""
        stats = self._require_stats()
        try:
            observation_space = None if self.observation_space is None else space_to_json(self.observation_space)
        except ValueError:  # a space JSON cannot describe: predict then treats every observation as single
            observation_space = None
        record = {"format": FORMAT_VERSION, "algo": ALGO, "hyperparams": self._hyperparams(),
                  "num_timesteps": self.num_timesteps, "n_updates": self._n_updates,
                  "episode_num": self._episode_num, "n_envs": self.n_envs,
                  "observation_space": observation_space,
                  "action_space": space_to_json(_discrete_space(self.action_space)),
                  "counts": [float(v) for v in stats.counts], "sums": [float(v) for v in stats.sums],
                  "rng_state": self.rng.bit_generator.state}
        with zipfile.ZipFile(zip_target(path), "w") as archive:
            archive.writestr(META_FILE, meta_entry(ALGO, self))
            archive.writestr(SAVE_FILE, json.dumps(record, indent=2, allow_nan=False))

    @classmethod
    def load(cls: type[SelfDiscountedThompson], path: str | Path | IO[bytes], env: GymEnv | None = None,
             force_reset: bool = True, **kwargs: Any) -> SelfDiscountedThompson:
        """Rebuild a saved bandit exactly (posterior, counters, generator state); ``env`` must fit its spaces.

        ``force_reset=False`` continues ``env`` where it is, for a run resumed in the same process. Keyword
        arguments override hyperparameters; SB3's ``device``, ``custom_objects`` and ``print_system_info``
        are accepted and ignored.
        """
        for name in _SB3_LOAD_ARGS:
            kwargs.pop(name, None)
        unknown = sorted(set(kwargs) - set(HYPERPARAMS))
        if unknown:
            raise ValueError(f"DiscountedThompson.load: unknown argument {unknown[0]!r} "
                             f"(hyperparameters: {', '.join(HYPERPARAMS)})")
        if isinstance(path, str | Path) and not Path(path).is_file() and Path(f"{path}.zip").is_file():
            path = Path(f"{path}.zip")
        try:
            with zipfile.ZipFile(path) as archive:
                record = json.loads(archive.read(SAVE_FILE))
        except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a saved DiscountedThompson ({type(err).__name__}: {err})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: {SAVE_FILE} is not a DiscountedThompson save of format {FORMAT_VERSION}")
        model = cls(env=None, **{**record["hyperparams"], **kwargs})
        action_space = _discrete_space(space_from_json(record["action_space"]))
        counts = np.asarray(record["counts"], dtype=np.float64)
        sums = np.asarray(record["sums"], dtype=np.float64)
        n_arms = int(action_space.n)
        if counts.shape != (n_arms,) or sums.shape != (n_arms,) or np.any(counts < 0):
            raise ValueError(f"{path}: the saved statistics do not fit {n_arms} arms with non-negative counts")
        model.action_space = action_space
        obs_json = record.get("observation_space")
        model.observation_space = None if obs_json is None else space_from_json(obs_json)
        model.n_envs = int(record.get("n_envs", 1))
        model.stats = ArmStats(counts, sums)
        model.num_timesteps = int(record["num_timesteps"])
        model._n_updates = int(record["n_updates"])
        model._episode_num = int(record["episode_num"])
        model._restore_rng(record["rng_state"], path)
        if env is not None:
            try:
                model.set_env(env, force_reset=force_reset)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        return model

    def _restore_rng(self, state: Any, path: str | Path | IO[bytes]) -> None:
        generator = np.random.PCG64()
        if not isinstance(state, dict) or state.get("bit_generator") != type(generator).__name__:
            raise ValueError(f"{path}: the saved generator state is not a PCG64 state")
        generator.state = cast(Any, state)  # checked above: the dict PCG64 itself wrote
        self.rng = np.random.Generator(generator)


__all__ = ["ArmStats", "DiscountedThompson", "Prior", "discount_update", "empty_stats", "posterior",
           "thompson_arms"]

"""REINFORCE: the reference agent, of the design of the ARKD authors' public prototype.

A small MLP maps the observation to a distribution over actions: a Bernoulli for the
``binary`` action mode (Discrete(2)), a Categorical for other Discrete spaces, and for Box
actions an independent Beta per dimension rescaled to the box (so samples never leave the
bounds and need no clipping). It is trained by REINFORCE with discounted returns normalised
over each batch of episodes and an entropy bonus.

Credit assignment: every log-probability log π(a_t | s_t) is multiplied by the return G_t of
*its own* step t (the rewards from t on). The public prototype pairs them wrongly and thereby
trains mostly on its first few actions; tests/test_agents_reinforce.py checks the pairing on a
bandit whose optimal action differs per step.

The class follows the Stable-Baselines3 ``BaseAlgorithm`` interface (learn, predict, save,
load, callbacks, SB3 logger/TensorBoard) and is the example of a non-SB3 agent in the registry.
"""

from __future__ import annotations

import importlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from torch import nn
from torch.distributions import Bernoulli, Beta, Categorical, Distribution, Independent

from agents.hparams import resolve_activation
from agents.policy_record import META_FILE, meta_entry
from agents.policy_spec import zip_target
from agents.spaces import check_spaces, space_from_json, space_to_json

SelfReinforce = TypeVar("SelfReinforce", bound="Reinforce")
_EPS = 1e-6  # keeps Beta samples strictly inside (0, 1) for finite log-probabilities


class ReinforcePolicy(BasePolicy):
    """MLP over the (flattened) observation with a Bernoulli, Categorical or Beta head."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule,
                 net_arch: list[int] | None = None, activation_fn: str | type[nn.Module] = nn.Tanh,
                 optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
                 optimizer_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs)
        self.net_arch = list(net_arch) if net_arch is not None else [32, 32]
        self.activation_fn = resolve_activation(activation_fn)
        self.features_extractor = self.make_features_extractor()
        layers: list[nn.Module] = []
        width = self.features_extractor.features_dim
        for size in self.net_arch:
            layers += [nn.Linear(width, size), self.activation_fn()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self._head_size())
        # A small last layer starts every head close to uniform (Beta(≈1.7, ≈1.7), p ≈ 0.5).
        nn.init.orthogonal_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),  # type: ignore[call-arg]
                                              **self.optimizer_kwargs)

    def _head_size(self) -> int:
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return 1 if int(space.n) == 2 else int(space.n)
        if isinstance(space, spaces.Box):
            if not np.all(np.isfinite([space.low, space.high])):
                raise ValueError(f"REINFORCE needs a bounded Box action space, got {space}")
            return 2 * int(np.prod(space.shape))
        raise ValueError(f"REINFORCE supports Box and Discrete action spaces, got {space}")

    def distribution(self, obs: th.Tensor) -> Distribution:
        out = self.head(self.body(self.extract_features(obs, self.features_extractor)))
        if isinstance(self.action_space, spaces.Discrete):
            if int(self.action_space.n) == 2:
                return Bernoulli(logits=out.squeeze(-1))
            return Categorical(logits=out)
        # Concentrations > 1 keep the Beta unimodal, so its mean is a sensible deterministic action.
        conc = 1.0 + nn.functional.softplus(out) + _EPS
        alpha, beta = conc.chunk(2, dim=-1)
        return Independent(Beta(alpha, beta), 1)

    def _box_bounds(self) -> tuple[th.Tensor, th.Tensor]:
        assert isinstance(self.action_space, spaces.Box)
        low = th.as_tensor(self.action_space.low.reshape(-1), dtype=th.float32, device=self.device)
        high = th.as_tensor(self.action_space.high.reshape(-1), dtype=th.float32, device=self.device)
        return low, high

    def to_env_action(self, sample: th.Tensor) -> th.Tensor:
        """A distribution sample as an env action (Box: rescaled from (0, 1); Discrete: integer)."""
        if isinstance(self.action_space, spaces.Discrete):
            return sample.long() + int(self.action_space.start)
        low, high = self._box_bounds()
        return low + sample * (high - low)

    def to_sample(self, action: th.Tensor) -> th.Tensor:
        """Inverse of :meth:`to_env_action`, for re-scoring stored actions."""
        if isinstance(self.action_space, spaces.Discrete):
            value = action.reshape(-1).long() - int(self.action_space.start)
            return value.float() if int(self.action_space.n) == 2 else value
        low, high = self._box_bounds()
        unit = (action.reshape(action.shape[0], -1).float() - low) / (high - low)
        return unit.clamp(_EPS, 1.0 - _EPS)

    def _predict(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        dist = self.distribution(observation)
        if not deterministic:
            return self.to_env_action(dist.sample())
        if isinstance(dist, Bernoulli):
            return self.to_env_action((dist.logits > 0).float())
        if isinstance(dist, Categorical):
            return self.to_env_action(dist.probs.argmax(dim=-1))
        return self.to_env_action(dist.mean)

    def sample(self, obs: th.Tensor) -> th.Tensor:
        dist = self.distribution(obs)
        value = dist.sample()
        if isinstance(dist, Independent):
            value = value.clamp(_EPS, 1.0 - _EPS)
        return self.to_env_action(value)

    def evaluate_actions(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Log-probability and entropy of each (observation, env action) pair, both shape [N]."""
        dist = self.distribution(obs)
        return dist.log_prob(self.to_sample(actions)), dist.entropy()

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic)


@dataclass
class _Episode:
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def discounted_returns(rewards: list[float], gamma: float, block: int = 1) -> list[float]:
    """The return credited to each step, aligned index by index with ``rewards``.

    ``block`` 1: G_t = r_t + γ G_{t+1}. ``block`` k > 1 is for a reward that arrives once per k steps (the
    prototype's ROUGE every k steps): the steps are cut into blocks of k from the first, each block's rewards
    are summed into one reward R_j, the blocks get the returns G_j = R_j + γ G_{j+1}, and every step of block
    j is credited with G_j: the reward at the end of a block credits the k actions that led to it.
    """
    if block < 1:
        raise ValueError(f"block={block}: must be >= 1")
    sums = [float(sum(rewards[i:i + block])) for i in range(0, len(rewards), block)]
    running = 0.0
    per_block = [0.0] * len(sums)
    for j in reversed(range(len(sums))):
        running = sums[j] + gamma * running
        per_block[j] = running
    return [per_block[t // block] for t in range(len(rewards))]


def _encode(value: Any) -> Any:
    """JSON form of policy_kwargs: classes become {"__class__": "module:Qualname"}."""
    if isinstance(value, type):
        return {"__class__": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            module, _, name = value["__class__"].partition(":")
            obj: Any = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class Reinforce(BaseAlgorithm):
    """Monte-Carlo policy gradient with normalised discounted returns and an entropy bonus.

    :param n_episodes_per_update: whole episodes (or segments, below) collected over all VecEnv slots per update
    :param n_steps_per_update: 0 learns from whole episodes; n > 0 cuts each episode into segments of n steps
        and learns from each as soon as it is complete, inside the episode (an online run, where the one
        episode is the whole distillation). Returns then stop at a segment's end: the rewards after it are
        not credited to its actions.
    :param reward_every: steps per reward block (see :func:`discounted_returns`); 1 credits each step's own reward
    :param normalize_returns: standardise the returns of each update batch (a simple baseline)
    :param max_grad_norm: gradient clipping; None to disable
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": ReinforcePolicy}
    policy: ReinforcePolicy

    def __init__(self, policy: str | type[ReinforcePolicy] = "MlpPolicy", env: GymEnv | None = None,
                 learning_rate: float | Schedule = 1e-3, gamma: float = 0.95, ent_coef: float = 0.01,
                 n_episodes_per_update: int = 2, n_steps_per_update: int = 0, reward_every: int = 1,
                 normalize_returns: bool = True,
                 max_grad_norm: float | None = 0.5, policy_kwargs: dict[str, Any] | None = None,
                 stats_window_size: int = 100, tensorboard_log: str | None = None, verbose: int = 0,
                 seed: int | None = None, device: th.device | str = "auto",
                 _init_setup_model: bool = True) -> None:
        super().__init__(policy, env, learning_rate, policy_kwargs=policy_kwargs,
                         stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
                         verbose=verbose, device=device, support_multi_env=True, seed=seed,
                         supported_action_spaces=(spaces.Box, spaces.Discrete))
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"REINFORCE: gamma={gamma} must lie in [0, 1]")
        if n_episodes_per_update < 1:
            raise ValueError(f"REINFORCE: n_episodes_per_update={n_episodes_per_update} must be >= 1")
        if n_steps_per_update < 0:
            raise ValueError(f"REINFORCE: n_steps_per_update={n_steps_per_update} must be >= 0")
        if reward_every < 1:
            raise ValueError(f"REINFORCE: reward_every={reward_every} must be >= 1")
        if n_steps_per_update % reward_every:
            raise ValueError(f"REINFORCE: n_steps_per_update={n_steps_per_update} must be a multiple of "
                             f"reward_every={reward_every}, so that no reward block is cut in two")
        self.gamma = gamma
        self.n_steps_per_update = n_steps_per_update
        self.reward_every = reward_every
        self.ent_coef = ent_coef
        self.n_episodes_per_update = n_episodes_per_update
        self.normalize_returns = normalize_returns
        self.max_grad_norm = max_grad_norm
        self._open: list[_Episode] = []  # the episode in progress in each VecEnv slot
        self._finished: list[_Episode] = []  # complete episodes awaiting the next update
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule,
                                   **self.policy_kwargs)
        assert isinstance(policy, ReinforcePolicy), "REINFORCE needs a ReinforcePolicy (subclass)"
        self.policy = policy.to(self.device)

    # Training -------------------------------------------------------------------------------
    def learn(self: SelfReinforce, total_timesteps: int, callback: MaybeCallback = None,
              log_interval: int = 1, tb_log_name: str = "Reinforce", reset_num_timesteps: bool = True,
              progress_bar: bool = False) -> SelfReinforce:
        total_timesteps, cb = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                progress_bar)
        assert self.env is not None
        if reset_num_timesteps or len(self._open) != self.env.num_envs:
            self._open = [_Episode() for _ in range(self.env.num_envs)]
            self._finished = []
        cb.on_training_start(locals(), globals())
        cb.on_rollout_start()
        while self.num_timesteps < total_timesteps:
            if not self._collect_step(cb):
                break
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if len(self._finished) >= self.n_episodes_per_update:
                cb.on_rollout_end()
                self.train()
                if log_interval and self._n_updates % log_interval == 0:
                    self.dump_logs()
                cb.on_rollout_start()
        cb.on_training_end()
        return self

    def _collect_step(self, callback: BaseCallback) -> bool:
        """One step in every VecEnv slot; False when a callback asks to stop."""
        assert self.env is not None and self._last_obs is not None
        obs = np.asarray(self._last_obs)
        self.policy.set_training_mode(False)
        with th.no_grad():
            actions = self.policy.sample(obs_as_tensor(obs, self.device)).cpu().numpy()  # type: ignore[arg-type]
        if isinstance(self.action_space, spaces.Box):
            actions = actions.reshape((-1, *self.action_space.shape))
        new_obs, rewards, dones, infos = self.env.step(actions)
        self.num_timesteps += self.env.num_envs
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        self._update_info_buffer(infos, dones)
        for i, episode in enumerate(self._open):
            # The reward returned by this step belongs to the action taken in this step.
            episode.observations.append(obs[i].copy())
            episode.actions.append(np.asarray(actions[i]).copy())
            episode.rewards.append(float(rewards[i]))
            if dones[i] or len(episode.rewards) == self.n_steps_per_update:
                self._finished.append(episode)
                self._open[i] = _Episode()
                self._episode_num += int(dones[i])
        self._last_obs = new_obs  # type: ignore[assignment]
        self._last_episode_starts = dones
        return True

    def train(self) -> None:
        """One gradient step on the finished episodes, then forget them."""
        episodes, self._finished = self._finished, []
        per_episode = [discounted_returns(e.rewards, self.gamma, self.reward_every) for e in episodes]
        returns = np.concatenate(per_episode).astype(np.float32)
        obs = np.stack([o for e in episodes for o in e.observations])
        actions = np.stack([a for e in episodes for a in e.actions])
        raw_mean = float(returns.mean())
        if self.normalize_returns and len(returns) > 1:
            returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        log_prob, entropy = self.policy.evaluate_actions(obs_as_tensor(obs, self.device),  # type: ignore[arg-type]
                                                         th.as_tensor(actions, device=self.device))
        weights = th.as_tensor(returns, device=self.device)
        policy_loss = -(log_prob * weights).mean()
        entropy_loss = -entropy.mean()
        loss = policy_loss + self.ent_coef * entropy_loss
        self.policy.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/entropy", -entropy_loss.item())
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/return_mean", raw_mean)
        self.logger.record("train/n_episodes", len(episodes))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def pending_steps(self) -> dict[str, Any]:
        """The steps collected since the last update (JSON data): the segment in progress in each VecEnv slot and
        those awaiting the update. A checkpoint inside a segment saves them, so a resumed run updates on the
        same steps as one never stopped (:meth:`save` keeps only what the updates have learned)."""
        def plain(episode: _Episode) -> dict[str, Any]:
            return {"observations": [np.asarray(o).tolist() for o in episode.observations],
                    "actions": [np.asarray(a).tolist() for a in episode.actions], "rewards": list(episode.rewards)}

        return {"open": [plain(e) for e in self._open], "finished": [plain(e) for e in self._finished]}

    def load_pending_steps(self, state: dict[str, Any]) -> None:
        """Put back the steps of :meth:`pending_steps`; the next ``learn(..., reset_num_timesteps=False)`` goes on
        with them."""
        def episode(data: dict[str, Any]) -> _Episode:
            return _Episode([np.asarray(o, dtype=np.float32) for o in data["observations"]],
                            [np.asarray(a) for a in data["actions"]], [float(r) for r in data["rewards"]])

        self._open = [episode(e) for e in state["open"]]
        self._finished = [episode(e) for e in state["finished"]]

    def dump_logs(self) -> None:
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    # Persistence ----------------------------------------------------------------------------
    def _hyperparams(self) -> dict[str, Any]:
        lr = self.learning_rate if isinstance(self.learning_rate, int | float) else self.lr_schedule(
            self._current_progress_remaining)  # a schedule is saved as its current value
        return {"learning_rate": float(lr), "gamma": self.gamma, "ent_coef": self.ent_coef,
                "n_episodes_per_update": self.n_episodes_per_update,
                "n_steps_per_update": self.n_steps_per_update, "reward_every": self.reward_every,
                "normalize_returns": self.normalize_returns,
                "max_grad_norm": self.max_grad_norm, "policy_kwargs": _encode(self.policy_kwargs),
                "seed": self.seed, "verbose": self.verbose, "stats_window_size": self._stats_window_size}

    def save(self, path: str | Path | io.BufferedIOBase, exclude: Any = None, include: Any = None) -> None:
        """A zip with hyperparams.json (incl. both spaces), policy.pth and optimizer.pth.

        ``.zip`` is appended to a path without suffix, as Stable-Baselines3 does.
        """
        del exclude, include  # SB3 signature; everything needed is always saved
        record = {"algo": "reinforce", "num_timesteps": self.num_timesteps, "n_updates": self._n_updates,
                  "n_envs": self.n_envs,
                  "hyperparams": self._hyperparams(),
                  "observation_space": space_to_json(self.observation_space),
                  "action_space": space_to_json(self.action_space)}
        with zipfile.ZipFile(zip_target(path), "w") as archive:
            archive.writestr(META_FILE, meta_entry("reinforce", self))
            archive.writestr("hyperparams.json", json.dumps(record, indent=2))
            for name, state in (("policy.pth", self.policy.state_dict()),
                                ("optimizer.pth", self.policy.optimizer.state_dict())):
                buffer = io.BytesIO()
                th.save(state, buffer)
                archive.writestr(name, buffer.getvalue())

    @classmethod
    def load(cls: type[SelfReinforce], path: str | Path | io.BufferedIOBase, env: GymEnv | None = None,
             device: th.device | str = "auto", custom_objects: dict[str, Any] | None = None,
             print_system_info: bool = False, force_reset: bool = True, **kwargs: Any) -> SelfReinforce:
        """Rebuild a saved agent (tensors loaded with ``weights_only=True``); ``env`` must fit its spaces."""
        del custom_objects, print_system_info, force_reset
        if isinstance(path, str | Path) and not Path(path).is_file() and Path(f"{path}.zip").is_file():
            path = Path(f"{path}.zip")
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read("hyperparams.json"))
            blobs = {name: archive.read(name) for name in ("policy.pth", "optimizer.pth")}
        obs_space = space_from_json(record["observation_space"])
        act_space = space_from_json(record["action_space"])
        if env is not None:
            check_spaces(SimpleNamespace(observation_space=obs_space, action_space=act_space), env)
        hyperparams = {**record["hyperparams"], **kwargs}
        hyperparams["policy_kwargs"] = _decode(hyperparams.get("policy_kwargs") or {})
        model = cls(env=env, device=device, _init_setup_model=False, **hyperparams)
        if env is None:
            model.observation_space, model.action_space = obs_space, act_space
            model.n_envs = int(record.get("n_envs", 1))
        model._setup_model()
        def tensors(name: str) -> Any:
            return th.load(io.BytesIO(blobs[name]), map_location=model.device, weights_only=True)

        model.policy.load_state_dict(tensors("policy.pth"))
        model.policy.optimizer.load_state_dict(tensors("optimizer.pth"))
        model.num_timesteps = int(record.get("num_timesteps", 0))
        model._n_updates = int(record.get("n_updates", 0))
        return model

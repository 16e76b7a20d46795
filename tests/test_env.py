from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import arkd_env  # noqa: F401  (registers the env)
from arkd_env import losses
from arkd_env.env import DistillEnv


def make(**kwargs: object) -> DistillEnv:
    return DistillEnv(preset="nano", **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def env() -> DistillEnv:
    return make()


def test_registered_env_passes_gymnasium_and_sb3_checkers() -> None:
    env = gym.make("arkd_env/Distill-v1", preset="nano", horizon=2, engine_overrides={"lr": 1e-3})
    assert env.unwrapped.config.horizon == 2 and env.unwrapped.engine_config.lr == pytest.approx(1e-3)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)


def test_v1_defaults_to_the_blind_benchmark_and_v0_keeps_the_embedded_suite() -> None:
    import inspect

    from arkd_env.config import DEFAULT_PRESET
    from train.config import load_run_config

    # Building the blind env would train its teacher (minutes); the defaults each id resolves to are enough.
    default = inspect.signature(DistillEnv).parameters["preset"].default
    assert default == DEFAULT_PRESET == "blind" and load_run_config(None, None, []).preset == "blind"
    assert "preset" not in gym.spec("arkd_env/Distill-v1").kwargs
    assert gym.spec("arkd_env/Distill-v0").kwargs == {"preset": "embedded"}
    # an explicit preset still wins over v0's default
    assert gym.make("arkd_env/Distill-v0", preset="nano", horizon=2).unwrapped.preset == "nano"


@pytest.mark.parametrize(("action", "expected"), [(1.0, 1.0), (-1.0, 0.0), (0.0, 0.5), (0.5, 0.75)])
def test_mix_action_applies_documented_weights(env: DistillEnv, action: float, expected: float) -> None:
    env.reset()
    _, _, _, _, info = env.step(np.array([action], dtype=np.float32))
    assert info["weights"] == pytest.approx({"fkl": expected, "rkl": 1.0 - expected})


def test_simplex_head_tail_and_binary_weights() -> None:
    simplex = make(action_mode="simplex", simplex_components=["fkl", "rkl", "jsd"], simplex_temperature=0.5)
    assert simplex.action_space.shape == (3,)
    simplex.reset()
    a = np.array([0.2, -0.4, 0.6], dtype=np.float32)
    _, _, _, _, info = simplex.step(a)
    exp = np.exp(a.astype(np.float64) / 0.5)
    assert list(info["weights"].values()) == pytest.approx(list(exp / exp.sum()))
    assert set(info["components"]) == {"fkl", "rkl", "jsd"}

    head_tail = make(action_mode="head_tail")
    head_tail.reset()
    _, _, _, _, info = head_tail.step(np.array([1.0, 0.0, -1.0, -0.5], dtype=np.float32))
    assert info["weights"] == pytest.approx({"fkl_head": 1.0, "fkl_tail": 0.5, "rkl_head": 0.0, "rkl_tail": 0.25})

    binary = make(action_mode="binary")
    assert binary.action_space == gym.spaces.Discrete(2)
    binary.reset()
    assert binary.step(1)[4]["weights"] == {"fkl": 0.0, "rkl": 1.0}
    assert binary.step(np.int64(0))[4]["weights"] == {"fkl": 1.0, "rkl": 0.0}


def test_grid_action_applies_its_alpha_and_maps_weights_to_the_nearest() -> None:
    grid = make(action_mode="grid", alpha_grid=[0.0, 0.3, 1.0])
    assert grid.action_space == gym.spaces.Discrete(3)
    grid.reset()
    assert grid.step(1)[4]["weights"] == pytest.approx({"fkl": 0.3, "rkl": 0.7})
    assert grid.step(np.int64(2))[4]["weights"] == {"fkl": 1.0, "rkl": 0.0}
    assert grid.weights_to_action({"fkl": 0.6, "rkl": 0.4}) == 1  # 0.3 is nearer than 1.0
    assert grid.weights_to_action({"fkl": 0.7, "rkl": 0.3}) == 2
    with pytest.raises(ValueError, match=r"action 3 is not in the action space Discrete\(3\)"):
        grid.step(3)
    sb3_check_env(make(action_mode="grid", horizon=2))


def test_weights_to_action_inverts_action_to_weights(env: DistillEnv) -> None:
    for alpha in (0.0, 0.3, 1.0):
        weights = {"fkl": alpha, "rkl": 1 - alpha}
        assert env.action_to_weights(env.weights_to_action(weights)) == pytest.approx(weights)
    head_tail = make(action_mode="head_tail")
    assert head_tail.action_to_weights(head_tail.weights_to_action({"fkl": 0.3, "rkl": 0.7})) == pytest.approx(
        {"fkl_head": 0.3, "fkl_tail": 0.3, "rkl_head": 0.7, "rkl_tail": 0.7})
    akl = make(action_mode="simplex", simplex_components=["akl"])
    assert akl.action_to_weights(akl.weights_to_action({"akl": 1.0})) == {"akl": 1.0}


@pytest.mark.parametrize("bad", [np.array([np.nan], dtype=np.float32), np.array([np.inf], dtype=np.float32),
                                 np.array([0.1, 0.2], dtype=np.float32)])
def test_bad_actions_raise_naming_the_space(env: DistillEnv, bad: np.ndarray) -> None:
    env.reset()
    with pytest.raises(ValueError, match=r"action space Box\(-1\.0, 1\.0, \(1,\)"):
        env.step(bad)


def test_step_before_reset_and_after_the_end() -> None:
    env = make(horizon=1)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(1, dtype=np.float32))
    env.reset()
    assert env.step(np.zeros(1, dtype=np.float32))[3] is True
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(1, dtype=np.float32))


def test_reset_restores_the_initial_student_and_rewards_are_reproducible(env: DistillEnv) -> None:
    actions = [np.array([a], dtype=np.float32) for a in (1.0, -0.5, 0.2, 0.0)]

    def episode() -> tuple[list[float], dict[str, torch.Tensor], float]:
        env.reset(seed=3)
        initial = {k: v.clone() for k, v in env.distiller.student.state_dict().items()}
        rewards = [env.step(a)[1] for a in actions]
        return rewards, initial, env.distiller.evaluate()["val_divergence"]

    rewards_a, initial_a, final_a = episode()
    rewards_b, initial_b, _ = episode()
    assert rewards_a == rewards_b
    for key, value in initial_a.items():
        assert torch.equal(value, initial_b[key])
    # Dense rewards telescope to the total improvement of the validation divergence.
    start = env.reset(seed=3)[1]["val"]["val_divergence"]
    assert sum(rewards_a) == pytest.approx(start - final_a, rel=1e-5, abs=1e-7)


def test_train_seeds_draw_each_episodes_student_and_data_order() -> None:
    pool = make(train_seeds=[5, 6])
    drawn = {pool.reset(seed=s)[1]["engine_seed"] for s in range(8)}
    assert drawn == {5, 6}
    action = np.array([0.2], dtype=np.float32)
    for seed in (5, 6):
        _, info = pool.reset(options={"engine_seed": seed})
        fixed = make(engine_overrides={"seed": seed})
        _, fixed_info = fixed.reset()
        assert info["val"] == fixed_info["val"]
        assert pool.step(action)[1] == fixed.step(action)[1]  # same student, same batches: same reward
        for key, value in fixed.distiller.student.state_dict().items():
            assert torch.equal(value, pool.distiller.student.state_dict()[key]), key
    assert pool.reset(seed=0)[1]["engine_seed"] == pool.reset(seed=0)[1]["engine_seed"]
    with pytest.raises(ValueError, match="engine_seed"):
        pool.reset(options={"engine_seed": -1})


def test_sparse_reward_pays_total_improvement_at_the_end() -> None:
    env = make(reward="sparse", horizon=2)
    start = env.reset()[1]["val"]["val_divergence"]
    first = env.step(np.zeros(1, dtype=np.float32))
    last = env.step(np.zeros(1, dtype=np.float32))
    assert first[1] == 0.0
    assert last[1] == pytest.approx(start - last[4]["val"]["val_divergence"])


def test_relative_reward_is_the_gain_over_the_reference_weighting_from_the_same_state() -> None:
    relative = make(reward="relative", reference_alpha=0.25)
    plain = make()
    relative.reset()
    # Taking the reference's own weighting replays its updates exactly: no advantage, either way.
    assert relative.step(np.array([-0.5], dtype=np.float32))[1] == 0.0
    plain.reset()
    plain.step(np.array([-0.5], dtype=np.float32))
    state = plain.distiller.snapshot()
    plain.step(np.array([-0.5], dtype=np.float32))
    reference = plain.distiller.evaluate()["val_divergence"]
    plain.distiller.restore(state)
    _, reward, _, _, info = relative.step(np.array([1.0], dtype=np.float32))
    assert info["val"]["val_divergence"] == plain.step(np.array([1.0], dtype=np.float32))[4]["val"]["val_divergence"]
    assert reward == pytest.approx(reference - info["val"]["val_divergence"], abs=1e-7) and reward != 0.0


def test_lookahead_scores_one_step_and_leaves_the_episode_where_it_was() -> None:
    looking, plain = make(), make()
    looking.reset()
    plain.reset()
    ahead = looking.lookahead({"fkl": 0.25, "rkl": 0.75})
    # The same step, taken for real, ends at the metric the lookahead reported ...
    taken = plain.step(plain.weights_to_action({"fkl": 0.25, "rkl": 0.75}))[4]["val"]["val_divergence"]
    assert ahead == taken
    # ... and the lookahead was undone: the looking env's next step equals the plain env's first one.
    assert looking.step(np.array([-0.5], dtype=np.float32))[4]["val"]["val_divergence"] == taken
    assert looking.lookahead({"fkl": 1.0}, updates=1) != looking.lookahead({"rkl": 1.0}, updates=1)


def test_observation_lists_features_and_last_weights(env: DistillEnv) -> None:
    obs, _ = env.reset()
    assert obs.shape == (len(env.feature_names),) and env.feature_names[-2:] == ["w_fkl", "w_rkl"]
    obs, _, _, _, _ = env.step(np.array([0.5], dtype=np.float32))
    names = env.feature_names
    assert obs[names.index("progress")] == pytest.approx(1 / env.config.horizon)
    assert obs[names.index("w_fkl")] == pytest.approx(0.75)
    assert env.observation_space.contains(obs)
    subset = make(features=["progress", "fkl"])
    assert subset.feature_names == ["progress", "fkl", "w_fkl", "w_rkl"]
    with pytest.raises(ValueError, match="unknown feature 'speed'"):
        make(features=["speed"])


def test_probe_features_look_ahead_and_undo_the_probes() -> None:
    probing = make(features=["progress", "probe_gap", "probe_gain"], probe_updates=2)
    plain = make(features=["progress"])
    assert "probe_gap" not in make().feature_names  # costly, so never by default
    action = np.array([0.4], dtype=np.float32)
    _, start = plain.reset()
    obs, _ = probing.reset()
    distiller, state = plain.distiller, plain.distiller.snapshot()
    before = start["val"]["val_divergence"]
    gains = {}
    for name in ("fkl", "rkl"):
        distiller.restore(state)
        distiller.train_steps({name: 1.0}, 2)
        gains[name] = before - distiller.evaluate()["val_divergence"]
    distiller.restore(state)
    gap = (gains["fkl"] - gains["rkl"]) / (abs(gains["fkl"]) + abs(gains["rkl"]))
    assert obs[1] == pytest.approx(gap, abs=1e-5)
    assert obs[2] == pytest.approx(max(gains.values()) / before, abs=1e-5)
    # The probes are undone: the step that follows trains the same student on the same batches.
    assert probing.step(action)[1] == plain.step(action)[1]


def test_non_finite_updates_are_penalised_recovered_and_terminate(monkeypatch: pytest.MonkeyPatch) -> None:
    env = make(horizon=10, max_consecutive_failures=2, nan_penalty=5.0, engine_overrides={"loss_path": "chunked"})
    env.reset()
    healthy = env.step(np.zeros(1, dtype=np.float32))
    state = {k: v.clone() for k, v in env.distiller.student.state_dict().items()}
    original = losses.mixed_divergence

    def poisoned(*args: object, **kwargs: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = original(*args, **kwargs)  # type: ignore[arg-type]
        return loss + float("inf"), parts

    monkeypatch.setattr(losses, "mixed_divergence", poisoned)
    _, reward, terminated, _, info = env.step(np.zeros(1, dtype=np.float32))
    assert info["n_failed"] == env.config.updates_per_step and not terminated
    assert reward == pytest.approx(-5.0)  # nothing changed, so only the penalty
    for key, value in state.items():
        assert torch.equal(value, env.distiller.student.state_dict()[key])
    assert env.step(np.zeros(1, dtype=np.float32))[2] is True  # second failure in a row terminates
    monkeypatch.setattr(losses, "mixed_divergence", original)
    env.reset()
    assert math.isfinite(env.step(np.zeros(1, dtype=np.float32))[1]) and healthy[4]["n_failed"] == 0


def test_render_ansi_summarises_the_step() -> None:
    env = make(render_mode="ansi")
    env.reset()
    env.step(np.array([1.0], dtype=np.float32))
    text = env.render()
    assert text is not None and "fkl=1.000" in text and "step 1/4" in text and "val_divergence" in text


def _nano_env() -> DistillEnv:
    return make(horizon=2)


def test_subproc_vec_env_with_four_envs() -> None:
    vec = SubprocVecEnv([_nano_env] * 4)
    try:
        obs = vec.reset()
        assert obs.shape == (4, len(vec.get_attr("feature_names")[0]))
        actions = np.array([[1.0], [-1.0], [0.0], [0.5]], dtype=np.float32)
        _, rewards, dones, infos = vec.step(actions)
        assert [i["weights"]["fkl"] for i in infos] == pytest.approx([1.0, 0.0, 0.5, 0.75])
        assert np.isfinite(rewards).all() and not dones.any()
        _, _, dones, infos = vec.step(actions)
        assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
        assert all("terminal_observation" in i for i in infos)
    finally:
        vec.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_gymnasium_vector_envs(asynchronous: bool) -> None:
    # Forking a process whose torch thread pools are running can deadlock it, so the asynchronous
    # vector env starts its workers with forkserver, as Stable-Baselines3's SubprocVecEnv does.
    vec = (gym.vector.AsyncVectorEnv([_nano_env, _nano_env], context="forkserver") if asynchronous
           else gym.vector.SyncVectorEnv([_nano_env, _nano_env]))
    try:
        obs, _ = vec.reset(seed=0)
        assert obs.shape[0] == 2
        _, rewards, terminated, truncated, infos = vec.step(np.array([[1.0], [-1.0]], dtype=np.float32))
        assert infos["weights"]["fkl"].tolist() == pytest.approx([1.0, 0.0])
        assert np.isfinite(rewards).all() and not terminated.any() and not truncated.any()
        _, _, _, truncated, _ = vec.step(np.zeros((2, 1), dtype=np.float32))
        assert truncated.all()
    finally:
        vec.close()


def test_reward_normalisation_is_a_wrapper_added_by_make() -> None:
    from gymnasium.wrappers import NormalizeReward

    def rewards(env: Any) -> list[float]:
        env.reset(seed=0)
        action = env.unwrapped.weights_to_action({"fkl": 0.5, "rkl": 0.5})
        return [float(env.step(action)[1]) for _ in range(2)]

    plain = gym.make("arkd_env/Distill-v0", preset="nano", horizon=2, updates_per_step=1)
    scaled = gym.make("arkd_env/Distill-v0", preset="nano", horizon=2, updates_per_step=1, normalize_reward=True)
    assert not any(isinstance(w, NormalizeReward) for w in _wrappers(plain))
    assert any(isinstance(w, NormalizeReward) for w in _wrappers(scaled))
    raw, normalised = rewards(plain), rewards(scaled)
    assert raw != pytest.approx(normalised)
    assert rewards(scaled.unwrapped) == pytest.approx(raw)  # the env itself never rescales


def _wrappers(env: Any) -> list[Any]:
    found = []
    while hasattr(env, "env"):
        found.append(env)
        env = env.env
    return found


# ------------------------------------------------------------------ instance sets
KEYED_NANO = {"data.source": "keyed", "data.num_examples": 160, "data.val_size": 16,
              "data.keyed": {"n_keys": 8, "modes_per_key": 4, "deterministic_share": 0.25,
                             "teacher_deterministic_share": 0.25}}


def _instance(name: str, n_keys: int, first_key: int, hidden: int = 16, score_beta: float = 1.0) -> dict[str, Any]:
    return {"name": name, "n_keys": n_keys, "first_key": first_key, "deterministic_share": 0.25,
            "student_hidden": hidden, "student_layers": 1, "member_blind": False, "score_beta": score_beta}


@pytest.fixture(scope="module")
def instance_files(tmp_path_factory: pytest.TempPathFactory) -> str:
    import yaml

    folder = tmp_path_factory.mktemp("instances")
    splits = {"train": [_instance("a", 2, 0), _instance("b", 4, 2, hidden=24, score_beta=0.5)],
              "test": [_instance("t", 2, 6)]}
    for split, instances in splits.items():
        (folder / f"toy-{split}.yaml").write_text(yaml.safe_dump({"set": "toy", "split": split,
                                                                   "instances": instances}))
    return f"{folder / 'toy-train.yaml'}:{folder / 'toy-test.yaml'}"


def _keyed_env(instance_files: str) -> DistillEnv:
    return DistillEnv(preset="nano", engine_overrides=KEYED_NANO, instances=instance_files, horizon=2,
                      updates_per_step=1)


def test_an_instance_set_poses_each_instance_with_its_own_student_and_keys(instance_files: str) -> None:
    from arkd_env.instances import FEATURE_NAMES, instance_set_from

    env = _keyed_env(instance_files)
    sb3_check_env(env)
    instances = instance_set_from(instance_files)
    for name in ("b", "t", "a"):
        obs, info = env.reset(options={"instance": name})
        assert info["instance"] == name and env.instance_name == name
        features = obs[-len(FEATURE_NAMES):]
        np.testing.assert_allclose(features, instances.get(name).features(), rtol=1e-6)
        assert env.distiller.student.config.hidden_size == instances.get(name).student_hidden
        assert env.distiller.cfg.data.keyed.score_beta == instances.get(name).score_beta
        assert env.distiller._answers is not None
        prompts = env.distiller._answers.prompts
        first = instances.get(name).first_key
        assert [p.key for p in prompts] == list(range(first, first + instances.get(name).n_keys))
        _, _, _, _, step_info = env.step(np.zeros(1, dtype=np.float32))
        assert step_info["instance"] == name
    # One teacher for the whole set: instances differ in what the student sees.
    assert env._distillers["a"].teacher is env._distillers["b"].teacher is env._distillers["t"].teacher
    # Without options, reset draws from the training split only.
    drawn = {env.reset(seed=s)[1]["instance"] for s in range(12)}
    assert drawn == {"a", "b"}


def test_the_same_instance_and_seed_reproduce_bit_exactly(instance_files: str) -> None:
    runs = []
    for _ in range(2):
        env = _keyed_env(instance_files)
        obs, _ = env.reset(options={"instance": "b", "engine_seed": 5})
        trace = [obs]
        for action in (0.6, -0.4):
            obs, reward, *_ = env.step(np.array([action], dtype=np.float32))
            trace += [obs, np.array([reward])]
        runs.append(np.concatenate(trace))
    assert np.array_equal(runs[0], runs[1])


def test_instance_options_are_checked(instance_files: str) -> None:
    from arkd_env.config import ConfigError

    env = _keyed_env(instance_files)
    with pytest.raises(ConfigError, match=r"unknown instance 'z' in set 'toy' \(train: a, b; test: t\)"):
        env.reset(options={"instance": "z"})
    with pytest.raises(ValueError, match="has no instance set"):
        DistillEnv(preset="nano", horizon=2).reset(options={"instance": "a"})
    with pytest.raises(ValueError, match=r"unknown option 'instanse' \(known: engine_seed, instance\)"):
        env.reset(options={"instanse": "a"})


def test_env_instance_pins_every_episode_to_one_instance(instance_files: str) -> None:
    from arkd_env.config import ConfigError

    pinned = DistillEnv(preset="nano", engine_overrides=KEYED_NANO, instances=instance_files, instance="t",
                        horizon=2, updates_per_step=1)
    assert {pinned.reset(seed=s)[1]["instance"] for s in range(6)} == {"t"}  # a test instance, not a draw
    assert pinned.reset(options={"instance": "a"})[1]["instance"] == "a"  # options still win
    with pytest.raises(ConfigError, match=r"unknown instance 'q' in set 'toy'"):
        DistillEnv(preset="nano", engine_overrides=KEYED_NANO, instances=instance_files, instance="q")
    with pytest.raises(ConfigError, match=r"env\.instance.*needs an instance set"):
        DistillEnv(preset="nano", instance="t")
    with pytest.raises(ConfigError, match=r"instance='': must name an instance of env\.instances"):
        DistillEnv(preset="nano", engine_overrides=KEYED_NANO, instances=instance_files, instance="")


def test_a_score_reward_on_data_without_the_keyed_score_fails_at_construction_naming_both_keys() -> None:
    from arkd_env.config import ConfigError

    for reward in ("score", "relative_score"):
        with pytest.raises(ConfigError, match=rf"env\.reward='{reward}'.*engine\.data\.source='synthetic'"):
            DistillEnv(preset="nano", reward=reward)


def test_relative_score_reward_is_the_score_gained_over_the_reference_from_the_same_state() -> None:
    def keyed(**kwargs: object) -> DistillEnv:
        return make(engine_overrides=KEYED_NANO, horizon=2, updates_per_step=2, **kwargs)

    relative, plain = keyed(reward="relative_score", reference_alpha=1.0), keyed(reward="score")
    relative.reset()
    plain.reset()
    state = plain.distiller.snapshot()
    reference = plain.step(plain.weights_to_action({"fkl": 1.0, "rkl": 0.0}))[4]["val"]["val_score"]
    plain.distiller.restore(state)
    chosen = plain.step(plain.weights_to_action({"fkl": 0.0, "rkl": 1.0}))[4]["val"]["val_score"]
    _, reward, _, _, info = relative.step(relative.weights_to_action({"fkl": 0.0, "rkl": 1.0}))
    assert info["val"]["val_score"] == chosen
    # higher is better for the score, so the reward is chosen − reference (not the divergence's reference − chosen)
    assert reward == pytest.approx(chosen - reference, abs=1e-7) and reward != 0.0
    assert relative.step(relative.weights_to_action({"fkl": 1.0, "rkl": 0.0}))[1] == 0.0

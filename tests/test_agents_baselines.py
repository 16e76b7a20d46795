from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from _toy_env import ToyDistillEnv
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.baselines import AKL_ENV_OVERRIDES, BaselinePolicy, baseline_env_overrides, make_baseline


def obs_at(progress: float) -> np.ndarray:
    return np.array([progress, 1.0, 1.0], dtype=np.float32)


def weights_of(env: ToyDistillEnv, spec: str, progress: float = 0.0) -> dict[str, float]:
    action, state = make_baseline(spec, env).predict(obs_at(progress))
    assert state is None
    return env.action_to_weights(action)


def approx(weights: dict[str, float]) -> dict[str, object]:
    return {k: pytest.approx(v, abs=1e-6) for k, v in weights.items()}


@pytest.mark.parametrize(("spec", "alpha"),
                         [("fkl", 1.0), ("rkl", 0.0), ("fixed:0.3", 0.3), ("FIXED:1", 1.0)])
def test_constant_alpha_in_mix_mode(spec: str, alpha: float) -> None:
    env = ToyDistillEnv("mix")
    for progress in (0.0, 0.5, 0.75):
        assert weights_of(env, spec, progress) == approx({"fkl": alpha, "rkl": 1 - alpha})


def test_fixed_alpha_in_head_tail_and_binary_modes() -> None:
    head_tail = ToyDistillEnv("head_tail")
    assert weights_of(head_tail, "fixed:0.25") == approx(
        {"fkl_head": 0.25, "fkl_tail": 0.25, "rkl_head": 0.75, "rkl_tail": 0.75})
    binary = ToyDistillEnv("binary")
    assert weights_of(binary, "fixed:0.5") == {"fkl": 1.0, "rkl": 0.0}  # α >= 0.5 picks FKL
    assert weights_of(binary, "fixed:0.49") == {"fkl": 0.0, "rkl": 1.0}
    assert weights_of(binary, "fkl") == {"fkl": 1.0, "rkl": 0.0}
    assert weights_of(binary, "rkl") == {"fkl": 0.0, "rkl": 1.0}


def test_fixed_alpha_in_simplex_mode_zeroes_other_components() -> None:
    env = ToyDistillEnv("simplex", simplex_components=["fkl", "rkl", "jsd"])
    assert weights_of(env, "fixed:0.6") == approx({"fkl": 0.6, "rkl": 0.4, "jsd": 0.0})
    no_kl = ToyDistillEnv("simplex", simplex_components=["jsd", "tvd"])
    with pytest.raises(ValueError, match=r"needs components fkl and rkl.*\['jsd', 'tvd'\]"):
        make_baseline("fixed:0.5", no_kl)


def test_linear_schedule_follows_progress() -> None:
    env = ToyDistillEnv("mix")
    # α = a + (b - a) * progress with a = 0.8, b = 0.2
    for progress, alpha in ((0.0, 0.8), (0.25, 0.65), (0.5, 0.5), (1.0, 0.2)):
        assert weights_of(env, "linear:0.8->0.2", progress) == approx({"fkl": alpha, "rkl": 1 - alpha})
    assert weights_of(env, "linear:0->1", 0.75) == approx({"fkl": 0.75, "rkl": 0.25})


def test_cosine_schedule_values_by_hand() -> None:
    env = ToyDistillEnv("mix")
    # α = (1 + cos(π p)) / 2: 1 at p=0, (1 + √2/2)/2 at p=1/4, 1/2 at p=1/2, 0 at p=1
    expected = {0.0: 1.0, 0.25: (1 + math.sqrt(2) / 2) / 2, 0.5: 0.5, 1.0: 0.0}
    for progress, alpha in expected.items():
        assert weights_of(env, "cosine", progress) == approx({"fkl": alpha, "rkl": 1 - alpha})


def test_phases_split_the_run_into_equal_parts() -> None:
    env = ToyDistillEnv("mix", horizon=4)
    # Two phases over a horizon of 4: steps 1-2 (progress 0, 1/4) take the first α, steps 3-4 the second.
    for progress, alpha in ((0.0, 0.25), (0.25, 0.25), (0.5, 0.75), (0.75, 0.75), (1.0, 0.75)):
        assert weights_of(env, "phases:0.25/0.75", progress) == approx({"fkl": alpha, "rkl": 1 - alpha})
    # One α per step of a horizon-12 run, at the env's float32 progress t/12: for t = 5, 7 and 10 that falls
    # just short of t/12, and must still land in phase t.
    alphas = [round(0.05 + 0.075 * t, 3) for t in range(12)]
    spec = "phases:" + "/".join(map(str, alphas))
    for step, alpha in enumerate(alphas):
        assert weights_of(env, spec, step / 12) == approx({"fkl": alpha, "rkl": 1 - alpha})


def test_phases_repeat_shorthand_spells_out_the_same_schedule() -> None:
    env = ToyDistillEnv("mix", horizon=12)
    # 0.25 for the first twelfth, 0.75 for the next ten, 1 for the last.
    expected = [0.25] + [0.75] * 10 + [1.0]
    for spec in ("phases:0.25/0.75*10/1", "phases:0.25*1/0.75*10/1"):
        assert make_baseline(spec, env).phases == tuple(expected)
        for step, alpha in enumerate(expected):
            assert weights_of(env, spec, step / 12) == approx({"fkl": alpha, "rkl": 1 - alpha})


def test_by_feature_interpolates_the_observed_feature_and_holds_beyond_the_ends() -> None:
    env = ToyDistillEnv("mix")
    # Toy observations are [progress, val_fkl, bias]: read α off val_fkl.
    policy = make_baseline("by-feature:val_fkl:0.5=0.2/1.5=1", env)
    for value, alpha in ((0.0, 0.2), (0.5, 0.2), (1.0, 0.6), (1.25, 0.8), (1.5, 1.0), (3.0, 1.0)):
        action, _ = policy.predict(np.array([0.9, value, 1.0], dtype=np.float32))
        assert env.action_to_weights(action) == approx({"fkl": alpha, "rkl": 1 - alpha}), value
    # One point: a constant; the progress feature plays no part.
    single = make_baseline("by-feature:val_fkl:0.7=0.4", env)
    for progress in (0.0, 0.8):
        action, _ = single.predict(np.array([progress, 2.0, 1.0], dtype=np.float32))
        assert env.action_to_weights(action) == approx({"fkl": 0.4, "rkl": 0.6})
    with pytest.raises(ValueError, match=r"reads the feature 'instance_log_score_beta', absent from the env's "
                                         r"features \['progress', 'val_fkl', 'bias'\]"):
        make_baseline("by-feature:instance_log_score_beta:0.5=1", env)


def test_akl_needs_its_env_and_weights_akl_only() -> None:
    assert baseline_env_overrides("akl") == AKL_ENV_OVERRIDES == {"action_mode": "simplex",
                                                                   "simplex_components": ["akl"]}
    assert baseline_env_overrides("fkl") == {}
    assert make_baseline("akl", None).env_overrides == AKL_ENV_OVERRIDES
    with pytest.raises(ValueError, match="baseline 'akl' needs the env built with"):
        make_baseline("akl", ToyDistillEnv("mix"))
    env = ToyDistillEnv("simplex", simplex_components=["akl"])
    assert weights_of(env, "akl", 0.5) == approx({"akl": 1.0})


def test_random_is_uniform_in_bounds_and_seeded() -> None:
    env = ToyDistillEnv("head_tail")
    policy = make_baseline("random", env, seed=3)
    actions = np.stack([policy.predict(obs_at(0.0))[0] for _ in range(200)])
    assert actions.shape == (200, 4) and actions.dtype == np.float32
    assert actions.min() >= -1 and actions.max() <= 1
    assert abs(actions.mean()) < 0.1 and actions.std() > 0.5  # uniform on [-1, 1]: std 0.577
    again = make_baseline("random", env, seed=3)
    assert np.array_equal(again.predict(obs_at(0.0))[0], actions[0])
    binary = make_baseline("random", ToyDistillEnv("binary"), seed=0)
    picks = {int(binary.predict(obs_at(0.0))[0]) for _ in range(50)}
    assert picks == {0, 1}


def test_batch_observations_like_a_vec_env() -> None:
    env = ToyDistillEnv("mix")
    vec = DummyVecEnv([lambda: ToyDistillEnv("mix"), lambda: ToyDistillEnv("mix")])
    policy = make_baseline("linear:1->0", vec)
    batch = np.stack([obs_at(0.0), obs_at(0.5)])
    actions, _ = policy.predict(batch)
    assert actions.shape == (2, 1)
    assert [env.action_to_weights(a)["fkl"] for a in actions] == pytest.approx([1.0, 0.5])
    single, _ = policy.predict(obs_at(0.5))
    assert single.shape == (1,)
    binary_actions, _ = make_baseline("rkl", ToyDistillEnv("binary")).predict(np.stack([obs_at(0.0)] * 3))
    assert binary_actions.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"observation of shape \(2,\) fits neither"):
        policy.predict(np.zeros(2, dtype=np.float32))


@pytest.mark.parametrize("spec", ["fixed:0.3", "linear:0.9->0.1", "cosine", "phases:0.2/0.9", "random",
                                  "by-feature:val_fkl:0.5=0.2/1.5=1"])
def test_save_load_round_trip(tmp_path: Path, spec: str) -> None:
    env = ToyDistillEnv("mix")
    policy = make_baseline(spec, env, **({"seed": 5} if spec == "random" else {}))
    saved = policy.save(tmp_path / "policy")
    assert saved == tmp_path / "policy.zip"
    loaded = BaselinePolicy.load(tmp_path / "policy", env=env)
    assert loaded.spec == spec
    for progress in (0.0, 0.4):
        if spec != "random":
            assert np.allclose(loaded.predict(obs_at(progress))[0], policy.predict(obs_at(progress))[0])
    if spec == "random":  # the seed is saved: a reloaded random policy replays the same draws
        assert np.array_equal(loaded.predict(obs_at(0.0))[0], make_baseline(spec, env, seed=5).predict(
            obs_at(0.0))[0])
    detached = BaselinePolicy.load(saved)
    with pytest.raises(ValueError, match="has no env"):
        detached.predict(obs_at(0.0))
    with pytest.raises(ValueError, match="action space mismatch"):
        BaselinePolicy.load(saved, env=ToyDistillEnv("head_tail"))


def test_learn_is_a_no_op_returning_the_policy() -> None:
    policy = make_baseline("fkl", ToyDistillEnv("mix"))
    assert policy.learn(100) is policy and policy.num_timesteps == 0


@pytest.mark.parametrize(("spec", "message"), [
    ("fixed:1.5", r"α=1.5 must lie in \[0, 1\]"),
    ("fixed:abc", "'abc' is not a number"),
    ("linear:1-0", "expected linear:<a>-><b>"),
    ("linear:0->2", r"α=2.0 must lie in \[0, 1\]"),
    ("phases:0.2/1.2", r"α=1.2 must lie in \[0, 1\]"),
    ("phases:", "'' is not a number"),
    ("phases:0.2/0.7*0", r"repeat count '0' in '0.7\*0' must be a whole number from 1 to 100000"),
    ("phases:0.5*99999999999999999999", r"repeat count '99999999999999999999' .* from 1 to 100000"),
    ("phases:0.2/0.7*x", r"repeat count 'x' in '0.7\*x'"),
    ("phases:0.2/*3", "'' is not a number"),
    ("by-feature:val_fkl", "expected by-feature:<name>:<x1>=<a1>/<x2>=<a2>/..."),
    ("by-feature::0.5=1", "expected by-feature:<name>:"),
    ("by-feature:val_fkl:0.5", r"point '0.5' must be <x>=<α>"),
    ("by-feature:val_fkl:inf=1", r"point 'inf=1' must be <x>=<α> with a finite number x"),
    ("by-feature:val_fkl:0.5=1.2", r"α=1.2 must lie in \[0, 1\]"),
    ("by-feature:val_fkl:0.5=1/0.5=0", r"the points' x must increase strictly, got \[0.5, 0.5\]"),
    ("sometimes", "unknown baseline 'sometimes'; known: fkl, rkl"),
])
def test_bad_specs_fail_clearly(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_baseline(spec, ToyDistillEnv("mix"))


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="takes no options, got seed"):
        make_baseline("fkl", ToyDistillEnv("mix"), seed=1)


def test_baselines_on_the_nano_env() -> None:
    from _nano import nano_env

    env = nano_env("mix")
    obs, _ = env.reset()
    assert env.unwrapped.feature_names[0] == "progress" and obs[0] == 0.0
    later = obs.copy()
    later[0] = 0.5
    expected = {"fkl": (1.0, 1.0), "rkl": (0.0, 0.0), "fixed:0.3": (0.3, 0.3), "linear:1->0": (1.0, 0.5),
                "cosine": (1.0, 0.5)}
    for spec, (at_start, at_half) in expected.items():
        policy = make_baseline(spec, env)
        for o, alpha in ((obs, at_start), (later, at_half)):
            weights = env.unwrapped.action_to_weights(policy.predict(o)[0])
            assert weights == approx({"fkl": alpha, "rkl": 1 - alpha}), spec
    # In the grid mode (α in 0, 0.25, ..., 1) a baseline applies the grid's nearest α.
    grid = nano_env("grid")
    for spec, alpha in (("fixed:0.6", 0.5), ("fixed:0.7", 0.75), ("rkl", 0.0)):
        weights = grid.unwrapped.action_to_weights(make_baseline(spec, grid).predict(grid.reset()[0])[0])
        assert weights == approx({"fkl": alpha, "rkl": 1 - alpha}), spec
    # the env a harness builds for `akl` by applying the policy's env_overrides
    akl_env = nano_env(AKL_ENV_OVERRIDES["action_mode"], tuple(AKL_ENV_OVERRIDES["simplex_components"]))
    assert akl_env.unwrapped.component_names == ["akl"]
    action, _ = make_baseline("akl", akl_env).predict(akl_env.reset()[0])
    assert akl_env.unwrapped.action_to_weights(action) == approx({"akl": 1.0})


def test_sft_weights_cross_entropy_only_in_its_own_env() -> None:
    from agents.baselines import SFT_ENV_OVERRIDES

    assert baseline_env_overrides("SFT") == SFT_ENV_OVERRIDES == {"action_mode": "simplex",
                                                                   "simplex_components": ["ce"]}
    with pytest.raises(ValueError, match="baseline 'sft' needs the env built with"):
        make_baseline("sft", ToyDistillEnv("simplex", simplex_components=["akl"]))
    with pytest.raises(ValueError, match="takes no options"):
        make_baseline("sft", None, seed=1)
    env = ToyDistillEnv("simplex", simplex_components=["ce"])
    assert weights_of(env, "sft", 0.9) == approx({"ce": 1.0})

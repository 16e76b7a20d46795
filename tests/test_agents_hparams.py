from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from agents import hparams
from agents.registry import ALGORITHMS
from arkd_env.config import ConfigError


def test_every_registered_algorithm_has_a_default_entry() -> None:
    for name in ALGORITHMS:
        table = yaml.safe_load(hparams.hyperparam_path(name).read_text())
        assert "default" in table, name
        assert table["default"]["policy"] in ("MlpPolicy", "MlpLstmPolicy")


def test_preset_entry_merges_over_default_and_overrides_over_both() -> None:
    default = hparams.load_hyperparams("ppo")
    assert default["n_steps"] == 16
    assert default["policy_kwargs"] == {"net_arch": [32, 32], "activation_fn": "tanh", "log_std_init": -1.0}
    nano = hparams.load_hyperparams("ppo", "nano")
    assert nano["n_steps"] == 4 and nano["learning_rate"] == default["learning_rate"]
    unknown_preset = hparams.load_hyperparams("ppo", "no-such-preset")
    assert unknown_preset == default
    over = hparams.load_hyperparams("ppo", "nano", {"n_steps": 6, "policy_kwargs.net_arch": [8]})
    assert over["n_steps"] == 6
    assert over["policy_kwargs"] == {"net_arch": [8], "activation_fn": "tanh", "log_std_init": -1.0}


def test_nested_override_merges_with_the_file() -> None:
    over = hparams.load_hyperparams("ppo", "nano", {"policy_kwargs": {"net_arch": [8]}, "learning_rate": "1e-3"})
    assert over["policy_kwargs"] == {"net_arch": [8], "activation_fn": "tanh", "log_std_init": -1.0}


def test_resolve_objects_builds_activation_noise_and_train_freq() -> None:
    out = hparams.resolve_objects({"policy_kwargs": {"activation_fn": "relu"},
                                   "action_noise": {"type": "normal", "sigma": 0.3},
                                   "train_freq": [1, "episode"]}, action_dim=2)
    assert out["policy_kwargs"]["activation_fn"] is nn.ReLU
    assert isinstance(out["action_noise"], NormalActionNoise)
    assert out["action_noise"]._sigma.tolist() == [0.3, 0.3]
    assert out["train_freq"] == (1, "episode")
    with pytest.raises(ConfigError, match="activation_fn='swish'"):
        hparams.resolve_objects({"policy_kwargs": {"activation_fn": "swish"}}, None)
    assert hparams.activation_name(hparams.resolve_activation("torch.nn:Tanh")) == "tanh"


def test_malformed_entry_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ppo.yaml").write_text("default:\n  n_steps: 4\nnano: 3\n")
    monkeypatch.setattr(hparams, "HYPERPARAM_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"ppo.yaml: entry 'nano' must be a mapping"):
        hparams.load_hyperparams("ppo", "nano")
    (tmp_path / "ppo.yaml").write_text("default: [\n")
    with pytest.raises(ConfigError, match=r"ppo\.yaml"):
        hparams.load_hyperparams("ppo")

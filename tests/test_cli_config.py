"""train/config.py: layered configs, errors naming the layer and key, the resolved config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkd_env.config import ConfigError, DataConfig, ModelConfig, read_yaml
from train.config import (
    AgentConfig,
    RunConfig,
    RunOptions,
    build,
    load_run_config,
    own_sources,
    parse_overrides,
    replace,
)


def test_preset_sections_are_read() -> None:
    cfg = load_run_config("nano")
    assert cfg.preset == "nano" and cfg.engine.student.arch is not None
    assert cfg.env.horizon == 4 and cfg.agent.algo == "ppo" and cfg.run.timesteps == 8
    assert "greedy" in cfg.run.policies


def test_layers_merge_in_order(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("env: {horizon: 6}\nagent: {hparams: {learning_rate: 0.01}}\nrun: {seed: 4}\n")
    cfg = load_run_config("nano", extra, ["env.horizon=3", "engine.lr=1e-3", "agent.hparams.gamma=0.9"])
    assert cfg.env.horizon == 3  # --set beats the file
    assert cfg.run.seed == 4 and cfg.engine.lr == pytest.approx(1e-3)  # '1e-3' read as a number
    assert cfg.agent.hparams == {"learning_rate": 0.01, "gamma": 0.9}
    assert cfg.engine.batch_size == 8  # untouched preset value


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_run_config("nano", None, ["run.eval_seeds=[7, 8]", "agent.n_envs=2"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = build(read_yaml(path), str(path))
    assert again == cfg
    # The resolved file alone reproduces the run, preset name included.
    assert load_run_config(None, path) == cfg


@pytest.mark.parametrize(("override", "fragment"), [
    (["engine.bogus=1"], "--set: unknown key 'engine.bogus'"),
    (["engine.lr=abc"], "--set: engine.lr: expected a number"),
    (["agent.n_envs=0"], "agent.n_envs=0: must be >= 1"),
    (["run.eval_seeds=[1, 1]"], "must not repeat"),
    (["nosection.x=1"], "unknown section 'nosection'"),
    (["agent.vec_env=cluster"], "agent.vec_env='cluster'"),
    (["env.train_seeds=[1, 1]"], "train_seeds=[1, 1]: must not repeat"),
    (["env.train_seeds=[0, 101]", "run.eval_seeds=[100, 101]"], "seed 101 is also in run.eval_seeds"),
])
def test_bad_overrides_name_the_key(override: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_run_config("nano", None, override)
    assert fragment in str(err.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {timesteps: many}\n")
    with pytest.raises(ConfigError) as err:
        load_run_config("nano", bad)
    assert str(bad) in str(err.value) and "run.timesteps" in str(err.value)
    bad.write_text("agent: {algo: ppo, colour: blue}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'agent\.colour'"):
        load_run_config("nano", bad)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_run_config("nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config("nano", tmp_path / "missing.yaml")


def test_dataclass_validation_and_replace() -> None:
    with pytest.raises(ConfigError, match=r"agent\.gpus_per_env"):
        AgentConfig(gpus_per_env=-1)
    with pytest.raises(ConfigError, match=r"run\.timesteps"):
        RunOptions(timesteps=0)
    cfg = replace(RunConfig(), run={"seed": 9})
    assert cfg.run.seed == 9 and RunConfig().run.seed == 0
    assert parse_overrides(["run.seed=3", "engine.lr=.5"]) == {"run.seed": 3, "engine.lr": 0.5}


def test_config_list_prints_every_key_with_its_value_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from train.cli import main
    from train.config import described_fields

    assert main(["config", "--list", "--preset", "nano", "--set", "engine.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "engine.lr = 0.001\n    Peak AdamW learning rate of the student." in out
    rows = described_fields(load_run_config("nano"))
    keys = [line.split(" = ")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert keys == [key for key, _, _ in rows] and len(keys) > 80
    assert all(text.strip() for _, _, text in rows), [key for key, _, text in rows if not text.strip()]


@pytest.mark.parametrize("preset", ["nano", "embedded", "keyed", "gpt2-dolly"])
def test_own_sources_replace_whole_sections_from_any_preset(preset: str) -> None:
    sources = own_sources("my/teacher", "my/student", "chats.jsonl")
    cfg = load_run_config(preset, None, ["engine.data.val_size=8", "engine.student.dtype=bfloat16"], sources)
    assert cfg.engine.teacher == ModelConfig(name_or_path="my/teacher")
    assert cfg.engine.student == ModelConfig(name_or_path="my/student", dtype="bfloat16")  # --set refines it
    assert cfg.engine.tokenizer is None  # the teacher's own
    assert cfg.engine.data == DataConfig(source="chats.jsonl", format="auto", val_size=8)
    assert cfg.engine.test_size == 0  # the preset's test split was sized for its own data
    # Without the shortcuts the same keys set through --set clash with a preset's random architecture.
    if preset in ("nano", "embedded", "keyed"):
        with pytest.raises(ConfigError, match="give only one of"):
            load_run_config(preset, None, ["engine.teacher.name_or_path=my/teacher"])


def test_own_sources_leave_what_was_not_given() -> None:
    cfg = load_run_config("nano", None, None, own_sources(student="my/student"))
    preset = load_run_config("nano")
    assert cfg.engine.teacher == preset.engine.teacher and cfg.engine.data == preset.engine.data
    assert cfg.engine.tokenizer == preset.engine.tokenizer == "synthetic"

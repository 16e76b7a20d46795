from __future__ import annotations

from pathlib import Path

import pytest

from arkd_env.config import (
    ConfigError,
    EngineConfig,
    EnvConfig,
    apply_overrides,
    as_number,
    deep_merge,
    from_dict,
    load_preset,
    preset_names,
    read_yaml,
)


def test_presets_load_and_validate() -> None:
    assert {"nano", "embedded"} <= set(preset_names())
    preset = load_preset("nano")
    assert preset.engine.tokenizer == "synthetic"
    assert preset.engine.student.arch is not None and preset.env.horizon == 4


def test_overrides_reach_nested_fields_with_yaml_types() -> None:
    preset = load_preset("nano", ["engine.lr=1e-4", "env.horizon=7", "engine.data.val_size=8",
                                  "engine.components=[fkl, jsd]"])
    assert preset.engine.lr == pytest.approx(1e-4)
    assert preset.env.horizon == 7
    assert preset.engine.data.val_size == 8
    assert preset.engine.components == ["fkl", "jsd"]


def test_unknown_key_is_named_with_its_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.yaml: unknown key 'engine\.learning_rate'"):
        from_dict(EngineConfig, {"learning_rate": 1.0}, str(tmp_path / "cfg.yaml"), "engine")


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": "fast"}, "lr: expected a number"),
    ({"batch_size": 2.5}, "batch_size: expected an integer"),
    ({"teacher_cache": "yes"}, "teacher_cache: expected true or false"),
    ({"lr": -1.0}, r"lr=-1\.0: must be > 0"),
    ({"temperature": 0}, r"temperature=0\.0: must be > 0"),
    ({"akl_mu": 1.0}, "akl_mu=1.0: must lie in"),
    ({"data": {"val_size": 0}}, "data.val_size=0"),
])
def test_bad_engine_values_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(EngineConfig, values, "f.yaml")


def test_env_config_rejects_bad_mode_and_horizon() -> None:
    with pytest.raises(ConfigError, match="action_mode='both'"):
        EnvConfig(action_mode="both")
    with pytest.raises(ConfigError, match="horizon=0"):
        from_dict(EnvConfig, {"horizon": 0})
    for grid in ([0.5], [0.2, 0.2], [0.0, 1.5], [True, 0.5]):
        with pytest.raises(ConfigError, match=r"alpha_grid=.*at least two distinct numbers in \[0, 1\]"):
            EnvConfig(action_mode="grid", alpha_grid=grid)


def test_model_config_allows_one_source() -> None:
    with pytest.raises(ConfigError, match="only one of"):
        from_dict(EngineConfig, {"teacher": {"name_or_path": "gpt2", "arch": {"model_type": "gpt2"}}})


def test_read_yaml_reports_line_of_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("engine:\n  lr: [1, 2\n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ malformed YAML"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml(tmp_path / "latin.yaml")


def test_apply_overrides_does_not_mutate_and_rejects_bad_syntax() -> None:
    base = {"engine": {"lr": 1.0}}
    result = apply_overrides(base, ["engine.seed=3"])
    assert base == {"engine": {"lr": 1.0}} and result["engine"] == {"lr": 1.0, "seed": 3}
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(base, ["engine.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides(base, ["engine.lr.x=1"])


def test_unknown_preset_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*nano"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("../nano")


def test_one_number_rule_for_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "lr.yaml"
    path.write_text("lr: 1e-3\nseed: 3\n")  # YAML 1.1 reads 1e-3 as a string
    from_file = from_dict(EngineConfig, read_yaml(path))
    from_set = from_dict(EngineConfig, apply_overrides({}, ["lr=1e-3", "seed=3"]))
    assert from_file.lr == from_set.lr == 0.001 and isinstance(from_set.seed, int)
    assert as_number("2e3") == 2000.0 and as_number("7") == 7 and as_number("1e-3x") == "1e-3x"


def test_deep_merge_layers_nested_keys_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [2]}, "d": {"e": 2}})
    assert merged == {"a": {"b": 1, "c": [2]}, "d": {"e": 2}} and base["a"] == {"b": 1, "c": [1]}


def test_yaml_merge_keys_load_and_unhashable_keys_are_one_line(tmp_path: Path) -> None:
    merged = tmp_path / "merge.yaml"
    merged.write_text("base: &b {lr: 0.1}\nengine:\n  <<: *b\n  seed: 2\n")
    assert read_yaml(merged)["engine"] == {"lr": 0.1, "seed": 2}
    odd = tmp_path / "odd.yaml"
    odd.write_text("? [1, 2]\n: x\n")
    with pytest.raises(ConfigError, match=r"odd\.yaml: line 1 malformed YAML \(unhashable key"):
        read_yaml(odd)

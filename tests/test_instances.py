from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from arkd_env.assets.data import student_keys, teacher_view
from arkd_env.config import ConfigError, load_preset
from arkd_env.instances import (
    FEATURE_NAMES,
    HIDDEN_RANGE,
    LAYERS_RANGE,
    N_KEYS_RANGE,
    SCORE_BETA_RANGE,
    Instance,
    InstanceSet,
    instance_set_from,
    load_instance_set,
    shipped_instance_set,
    shipped_set_names,
)

DELETE = object()  # marks a key the bad-input case removes instead of setting


def _instance(name: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": name, "n_keys": 4, "first_key": 0, "deterministic_share": 0.25,
                              "student_hidden": 16, "student_layers": 1, "member_blind": False, "score_beta": 1.0}
    return {**values, **changes}


TRAIN_DOC: dict[str, Any] = {"set": "toy", "split": "train", "instances": [
    _instance("a"), _instance("b", n_keys=8), _instance("c", n_keys=16, deterministic_share=0.0),
]}
TEST_DOC: dict[str, Any] = {"set": "toy", "split": "test", "instances": [
    _instance("x", n_keys=12), _instance("y", first_key=40),
]}


def _write(tmp_path: Path, train: Any, test: Any) -> tuple[Path, Path]:
    paths = (tmp_path / "toy-train.yaml", tmp_path / "toy-test.yaml")
    for path, doc in zip(paths, (train, test), strict=True):
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return paths


def _edit(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def test_the_shipped_set_parses_with_disjoint_splits() -> None:
    assert "keyed" in shipped_set_names()
    instances = shipped_instance_set("keyed")
    assert instances.name == "keyed"
    assert len(instances.train) == 8 and len(instances.test) == 4
    assert not set(instances.names("train")) & set(instances.names("test"))
    train_contents = {instance.content() for instance in instances.train}
    assert not any(instance.content() in train_contents for instance in instances.test)
    assert instances.get("test-k6-w24") is instances.test[0]
    # Test instances use keys no training instance does, so a test score is on unseen keys.
    train_keys = {k for i in instances.train for k in range(i.first_key, i.first_key + i.n_keys)}
    test_keys = {k for i in instances.test for k in range(i.first_key, i.first_key + i.n_keys)}
    assert not train_keys & test_keys
    # Every instance fits the keyed preset's layout.
    cfg = load_preset("keyed").engine
    for instance in (*instances.train, *instances.test):
        assert instance.apply(cfg).data.keyed.student_keys == [instance.first_key, instance.n_keys]


def test_the_blind_set_fits_the_blind_preset_on_whole_families_and_spans_the_score() -> None:
    instances = shipped_instance_set("blind")
    cfg = load_preset("blind").engine
    family = cfg.data.keyed.family_size
    for instance in (*instances.train, *instances.test):
        posed = instance.apply(cfg).data.keyed
        assert posed.member_blind and posed.score_beta == instance.score_beta
        assert instance.first_key % family == 0 and instance.n_keys % family == 0
    train_keys = {k for i in instances.train for k in range(i.first_key, i.first_key + i.n_keys)}
    test_keys = {k for i in instances.test for k in range(i.first_key, i.first_key + i.n_keys)}
    assert not train_keys & test_keys
    # Betas on both sides of 1, where the exact limits put the best weighting at FKL (>= 1) and inside (< 1).
    for split in (instances.train, instances.test):
        betas = [i.score_beta for i in split]
        assert min(betas) < 0.5 and max(betas) > 1


@pytest.mark.parametrize("name", ["keyed", "blind"])
def test_shipped_features_are_bounded_and_tell_every_two_instances_apart(name: str) -> None:
    instances = shipped_instance_set(name)
    features = [instance.features() for instance in (*instances.train, *instances.test)]
    for vector in features:
        assert len(vector) == len(FEATURE_NAMES)
        assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in vector)
    for first, second in itertools.combinations(features, 2):
        assert first != second


def test_features_span_zero_to_one_over_the_bounds() -> None:
    low = Instance(name="low", n_keys=N_KEYS_RANGE[0], first_key=0, deterministic_share=0.0,
                   student_hidden=HIDDEN_RANGE[0], student_layers=LAYERS_RANGE[0], member_blind=False,
                   score_beta=SCORE_BETA_RANGE[0])
    high = Instance(name="high", n_keys=N_KEYS_RANGE[1], first_key=0, deterministic_share=0.5,
                    student_hidden=HIDDEN_RANGE[1], student_layers=LAYERS_RANGE[1], member_blind=True,
                    score_beta=SCORE_BETA_RANGE[1])
    assert low.features() == (0.0,) * len(FEATURE_NAMES)
    assert high.features() == pytest.approx((1.0, 1.0, 1.0, 0.5, 1.0, 1.0))
    named = dict(zip(FEATURE_NAMES, high.features(), strict=True))
    assert named["deterministic_share"] == 0.5 and named["member_blind"] == 1.0
    # The F1 sits in the middle of the log-scaled beta range.
    assert dataclasses.replace(low, score_beta=1.0).features()[FEATURE_NAMES.index("log_score_beta")] == \
        pytest.approx(0.5)


def test_an_instance_changes_only_what_the_student_sees() -> None:
    cfg = load_preset("keyed").engine
    instance = Instance(**_instance("i", n_keys=8, first_key=20, deterministic_share=0.5, student_hidden=24,
                                    student_layers=2))
    posed = instance.apply(cfg)
    assert list(student_keys(posed.data)) == list(range(20, 28))
    assert posed.data.keyed.deterministic_share == 0.5
    assert posed.student.arch is not None and cfg.student.arch is not None
    assert (posed.student.arch["hidden_size"], posed.student.arch["intermediate_size"],
            posed.student.arch["num_hidden_layers"]) == (24, 48, 2)
    assert posed.student.arch["model_type"] == cfg.student.arch["model_type"]
    # The teacher (and the tokenizer) see the preset's data whatever the instance: one teacher for the set.
    assert teacher_view(posed.data) == teacher_view(cfg.data)
    assert posed.teacher == cfg.teacher
    with pytest.raises(ConfigError, match=r"instance 'far': keys 60\.\.67 lie outside .*n_keys=64"):
        Instance(**_instance("far", n_keys=8, first_key=60)).apply(cfg)
    with pytest.raises(ConfigError, match=r"instance 'i': instances pose keyed tasks, but data.source='synthetic'"):
        instance.apply(load_preset("nano").engine)


def test_an_instance_sets_the_students_blindness_and_its_score() -> None:
    blind = Instance(**_instance("blind", n_keys=8, member_blind=True, score_beta=0.5))
    posed = blind.apply(load_preset("blind").engine)
    assert posed.data.keyed.member_blind and posed.data.keyed.score_beta == 0.5
    sighted = dataclasses.replace(blind, name="sighted", member_blind=False, score_beta=2)
    posed = sighted.apply(load_preset("blind").engine)
    assert not posed.data.keyed.member_blind and posed.data.keyed.score_beta == 2.0
    # Neither changes the teacher: the same one serves blind and sighted students, whatever their score.
    assert teacher_view(posed.data) == teacher_view(load_preset("blind").engine.data)
    with pytest.raises(ConfigError, match=r"instance 'blind': member_blind=true needs a layout of families, but "
                                          r"the preset's data.keyed.family_size=1"):
        blind.apply(load_preset("keyed").engine)


def test_a_valid_pair_of_files_loads(tmp_path: Path) -> None:
    paths = _write(tmp_path, TRAIN_DOC, TEST_DOC)
    instances = load_instance_set(*paths)
    assert instances.names("train") == ("a", "b", "c") and instances.names("test") == ("x", "y")
    assert instances.get("y").first_key == 40 and instances.get("c").deterministic_share == 0.0
    assert instance_set_from(f"{paths[0]}:{paths[1]}") == instances
    assert instance_set_from("keyed") == shipped_instance_set("keyed")


def _bad(case: str, edited: str, path: tuple[str | int, ...], value: Any, message: str) -> Any:
    """A bad-input case: set ``path`` of the ``edited`` file's document to ``value`` (or remove it); the error
    must name that file and match ``message``."""
    return pytest.param(edited, path, value, message, id=case)


BAD_INPUTS = [
    _bad("unknown-key", "train", ("instances", 1, "n_key"), 3, r"unknown key 'instances\[1\]\.n_key'"),
    _bad("wrong-type", "train", ("instances", 0, "n_keys"), "many", r"instances\[0\]\.n_keys: expected an integer"),
    _bad("bool-as-int", "train", ("instances", 0, "student_layers"), True,
         r"instances\[0\]\.student_layers: expected an integer"),
    _bad("bad-value", "train", ("instances", 2, "n_keys"), 0,
         r"instances\[2\]: n_keys=0: must be an integer in \[1, 1024\]"),
    _bad("bad-float", "test", ("instances", 1, "deterministic_share"), -1,
         r"instances\[1\]: deterministic_share=-1\.0: must be"),
    _bad("keys-past-the-bound", "test", ("instances", 1, "first_key"), 1021,
         r"instances\[1\]: first_key=1021: must be an integer in \[0, 1020\]"),
    _bad("hidden-not-multiple", "train", ("instances", 0, "student_hidden"), 20,
         r"instances\[0\]: student_hidden=20: .*multiple of 8"),
    _bad("share-of-one", "train", ("instances", 0, "deterministic_share"), 1.0,
         r"instances\[0\]: deterministic_share=1\.0"),
    _bad("blind-not-bool", "train", ("instances", 0, "member_blind"), "yes",
         r"instances\[0\]\.member_blind: expected true or false"),
    _bad("beta-out-of-range", "test", ("instances", 0, "score_beta"), 0,
         r"instances\[0\]: score_beta=0(\.0)?: must be a number in \[0\.1, 10\]"),
    _bad("bad-name", "train", ("instances", 0, "name"), "a b", r"instances\[0\]: name='a b'"),
    _bad("missing-field", "train", ("instances", 0, "student_layers"), DELETE,
         r"missing key 'instances\[0\]\.student_layers'"),
    _bad("instance-not-mapping", "train", ("instances", 1), 5, r"instances\[1\]: expected a mapping"),
    _bad("instances-not-list", "train", ("instances",), {"a": 1}, r"instances: expected a list"),
    _bad("empty-list", "train", ("instances",), [], r"instances=\[\]: must list at least one instance"),
    _bad("wrong-split-label", "train", ("split",), "test", r"split='test': this file is loaded as the train split"),
    _bad("unknown-split-label", "test", ("split",), "dev", r"split='dev': must be train or test"),
    _bad("missing-set", "test", ("set",), DELETE, r"missing key 'set'"),
    _bad("set-mismatch", "test", ("set",), "other",
         r"set='other': the training file .*toy-train\.yaml is of set 'toy'"),
    _bad("duplicate-name", "train", ("instances", 1, "name"), "a",
         r"instances\[1\]\.name='a': already names instances\[0\]$"),
    _bad("duplicate-content", "train", ("instances", 1), _instance("a2"),
         r"instances\[1\] \('a2'\): same fields as instances\[0\] \('a'\) but the name$"),
    _bad("name-in-both-splits", "test", ("instances", 1, "name"), "b",
         r"instances\[1\]\.name='b': already names instances\[1\] of .*toy-train\.yaml$"),
    _bad("content-in-both-splits", "test", ("instances", 0), _instance("x", n_keys=8),
         r"instances\[0\] \('x'\): same fields as instances\[1\] of .*toy-train\.yaml \('b'\) but the name; "
         r"a test instance must never be trained on"),
]


@pytest.mark.parametrize(("edited", "path", "value", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, edited: str, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    docs = {"train": copy.deepcopy(TRAIN_DOC), "test": copy.deepcopy(TEST_DOC)}
    _edit(docs[edited], path, value)
    train_path, test_path = _write(tmp_path, docs["train"], docs["test"])
    with pytest.raises(ConfigError) as caught:
        load_instance_set(train_path, test_path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{train_path if edited == 'train' else test_path}: "), text
    assert re.search(message, text), text


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("set: toy\nset: toy\n", "duplicate key 'set'"),
    ("", "missing key 'set'"),
])
def test_a_file_that_is_not_a_split_mapping_is_named(tmp_path: Path, text: str, message: str) -> None:
    train_path, test_path = _write(tmp_path, text, TEST_DOC)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_instance_set(train_path, test_path)
    assert str(caught.value).startswith(str(train_path)) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_keys": True}, "n_keys=True"),
    ({"deterministic_share": math.inf}, "deterministic_share=inf"),
    ({"first_key": -1}, "first_key=-1"),
    ({"student_layers": 5}, "student_layers=5"),
    ({"member_blind": 1}, "member_blind=1"),
    ({"score_beta": math.nan}, "score_beta=nan"),
])
def test_instances_built_in_code_are_validated(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Instance(**_instance("direct", **changes))


def test_sets_built_in_code_refuse_a_renamed_training_instance_in_test() -> None:
    train = (Instance(**_instance("a")),)
    with pytest.raises(ConfigError, match=r"^test: instances\[0\] \('b'\): same fields as instances\[0\] of train"):
        InstanceSet(name="toy", train=train, test=(dataclasses.replace(train[0], name="b"),))
    with pytest.raises(ConfigError, match=re.escape("test=()")):
        InstanceSet(name="toy", train=train, test=())
    instances = InstanceSet(name="toy", train=train, test=(Instance(**_instance("b", n_keys=5)),))
    with pytest.raises(ConfigError, match=r"unknown instance 'z' in set 'toy' \(train: a; test: b\)"):
        instances.get("z")
    with pytest.raises(ConfigError, match="split='dev'"):
        instances.names("dev")


def test_only_shipped_sets_are_found_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown instance set '\.\./keyed' \(available: .*keyed"):
        shipped_instance_set("../keyed")

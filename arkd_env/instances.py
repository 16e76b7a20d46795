"""Instances and instance sets: which distillation problem an episode poses, split into training and test sets.

In the style of DACBench, an *instance* fixes everything about an episode that is not the policy's choice:
which keys of the keyed task the student learns (how many, and which), the share of deterministic list tasks
in its data, the student's size, whether the student can tell a family's members apart, and which F-beta its
answers are scored by. ``reset(options={"instance": name})`` picks one;
:meth:`Instance.features` is the small numeric vector that lets a policy tell instances apart in its
observation.

**One teacher for a whole set.** The preset's ``data.keyed`` is the *layout*: every key the teacher knows,
with its valid answers, Zipf law and answer length. An instance selects keys ``first_key`` ..
``first_key + n_keys - 1`` of that layout (``data.keyed.student_keys``), so all instances of a set share one
teacher (built once, about 5 minutes on 2 cores) and differ in what the student must fit into its capacity.
The layout's own properties (answers per key, Zipf exponent, answer length) are the preset's, not the
instance's, since each of them would need a teacher of its own.

**Splits.** An :class:`InstanceSet` holds a training split and a test split. Agents train on training
instances only, and the test split is fixed (its file dated) before any agent is trained. A test instance
must never be trained on, so the splits are disjoint by name *and* by content: the same fields under another
name are refused as well. Within the set no two instances share a name or their content either, since a
repeated instance only reweights the sampling silently.

**Files.** One YAML file per split, so the test file can be fixed, and reviewed, on its own::

    set: keyed            # the set's name; both files of a set must give the same one
    split: train          # or test; must match the role the file is loaded in
    instances:
      - name: train-k4
        n_keys: 4
        ...               # every field of Instance

Every field must be given: a benchmark's instances must not change when a code default does.
:func:`load_instance_set` reads a pair of files and :func:`shipped_instance_set` the pair packaged in
``arkd_env/configs/instances/`` (``<set>-train.yaml``, ``<set>-test.yaml``). Bad input is one line naming the
file and the field, in the convention of :mod:`arkd_env.config`:
``<dir>/keyed-train.yaml: instances[2]: n_keys=0: must be an integer in [1, 1024]``.

**Features.** Every field a policy could use, scaled into [0, 1] by the bounds below (which validation
enforces, so features never leave [0, 1]); sizes spread over orders of magnitude are log-scaled. Which keys
are selected (``first_key``) is left out on purpose: it is a draw from the layout, not a property a policy
could adapt to.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from arkd_env.config import SCORE_BETA_RANGE, ConfigError, EngineConfig, check, from_dict, help_field, read_yaml

INSTANCE_DIR = Path(__file__).parent / "configs" / "instances"
SPLITS = ("train", "test")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Inclusive bounds of the fields that features scale. 1024 keys is the most a layout may have
# (data.keyed.n_keys), far beyond what the small students here can learn to condition on; the beta bounds
# (SCORE_BETA_RANGE) are data.keyed.score_beta's.
N_KEYS_RANGE = (1, 1024)
HIDDEN_RANGE = (8, 512)
LAYERS_RANGE = (1, 4)

# Students have this many attention heads, and each head's width must be even because rotary position
# embeddings rotate pairs of dimensions: hence hidden sizes are multiples of 2 * STUDENT_HEADS.
STUDENT_HEADS = 4
HIDDEN_MULTIPLE = 2 * STUDENT_HEADS

FEATURE_NAMES: tuple[str, ...] = (
    "log_n_keys",  # log(n_keys) over log(1024)
    "log_student_hidden",  # log(hidden / 8) over log(512 / 8)
    "student_layers",  # (layers - 1) / 3
    "deterministic_share",  # share of deterministic examples in the student's data
    "member_blind",  # 1 when the student cannot tell a family's members apart
    "log_score_beta",  # log(beta / 0.1) over log(10 / 0.1): 0.5 at the F1
)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, and `n_keys: true` is a typo, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_int_in(key: str, value: Any, bounds: tuple[int, int]) -> None:
    low, high = bounds
    check(_is_int(value) and low <= value <= high, key, value, f"must be an integer in [{low}, {high}]")


def _log_scale(value: float, low: float, high: float) -> float:
    return math.log(value / low) / math.log(high / low)


@dataclass(frozen=True)
class Instance:
    """One distillation problem: the keys its student learns, its share of list tasks, and its student."""

    name: str = help_field("Identifies the instance in its set, in reset(options=...) and in results; "
                           "1-64 characters of A-Z, a-z, 0-9, _ and -.")
    n_keys: int = help_field("How many keys of the layout the student learns and is scored on.")
    first_key: int = help_field("The first of those keys (keys first_key .. first_key + n_keys - 1); must lie "
                                "inside the preset's data.keyed.n_keys.")
    deterministic_share: float = help_field("Share of the student's training examples from the deterministic "
                                            "list tasks, in [0, 1); the rest are keyed.")
    student_hidden: int = help_field(f"Hidden size of the student, a multiple of {HIDDEN_MULTIPLE} "
                                     f"({STUDENT_HEADS} heads of even width).")
    student_layers: int = help_field("Decoder layers of the student.")
    member_blind: bool = help_field("The student cannot tell a family's members apart (data.keyed.member_blind); "
                                    "needs a layout with data.keyed.family_size > 1.")
    score_beta: float = help_field("beta of the F-beta the student's answers are scored by (data.keyed.score_beta): "
                                   "below 1 counts validity more than recall, above 1 recall more.")

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and bool(_NAME.fullmatch(self.name)), "name", self.name,
              "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        _check_int_in("n_keys", self.n_keys, N_KEYS_RANGE)
        _check_int_in("first_key", self.first_key, (0, N_KEYS_RANGE[1] - self.n_keys))
        # Below 1: an instance that is all deterministic tasks has no keyed task for its other fields to describe.
        check(_is_number(self.deterministic_share) and 0 <= self.deterministic_share < 1, "deterministic_share",
              self.deterministic_share, "must be a number in [0, 1)")
        _check_int_in("student_hidden", self.student_hidden, HIDDEN_RANGE)
        check(self.student_hidden % HIDDEN_MULTIPLE == 0, "student_hidden", self.student_hidden,
              f"must be a multiple of {HIDDEN_MULTIPLE} ({STUDENT_HEADS} heads of even width)")
        _check_int_in("student_layers", self.student_layers, LAYERS_RANGE)
        check(isinstance(self.member_blind, bool), "member_blind", self.member_blind, "must be true or false")
        low, high = SCORE_BETA_RANGE
        check(_is_number(self.score_beta) and low <= self.score_beta <= high, "score_beta", self.score_beta,
              f"must be a number in [{low:g}, {high:g}]")

    def features(self) -> tuple[float, ...]:
        """The instance as ``len(FEATURE_NAMES)`` numbers in [0, 1], in the order of :data:`FEATURE_NAMES`."""
        return (
            _log_scale(self.n_keys, *N_KEYS_RANGE),
            _log_scale(self.student_hidden, *HIDDEN_RANGE),
            (self.student_layers - LAYERS_RANGE[0]) / (LAYERS_RANGE[1] - LAYERS_RANGE[0]),
            float(self.deterministic_share),
            float(self.member_blind),
            _log_scale(self.score_beta, *SCORE_BETA_RANGE),
        )

    def content(self) -> tuple[Any, ...]:
        """Every field but the name: two instances with equal content pose the same problem."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name")

    def apply(self, cfg: EngineConfig) -> EngineConfig:
        """``cfg`` (a keyed preset's engine) posing this instance: its keys of the layout, its share of list
        tasks, its student and its score; the teacher's data stay the preset's, so every instance shares its
        teacher."""
        keyed = cfg.data.keyed
        if cfg.data.source != "keyed":
            raise ConfigError(f"instance {self.name!r}: instances pose keyed tasks, but data.source="
                              f"{cfg.data.source!r}")
        if self.first_key + self.n_keys > keyed.n_keys:
            raise ConfigError(f"instance {self.name!r}: keys {self.first_key}..{self.first_key + self.n_keys - 1} "
                              f"lie outside the layout's data.keyed.n_keys={keyed.n_keys}")
        if cfg.student.arch is None:
            raise ConfigError(f"instance {self.name!r}: the student must be built from engine.student.arch to "
                              f"take the instance's size")
        teacher_share = (keyed.deterministic_share if keyed.teacher_deterministic_share is None
                         else keyed.teacher_deterministic_share)
        if self.member_blind and keyed.family_size == 1:
            raise ConfigError(f"instance {self.name!r}: member_blind=true needs a layout of families, but the "
                              f"preset's data.keyed.family_size=1")
        keyed = dataclasses.replace(keyed, student_keys=[self.first_key, self.n_keys],
                                    deterministic_share=self.deterministic_share,
                                    teacher_deterministic_share=teacher_share, member_blind=self.member_blind,
                                    score_beta=float(self.score_beta))
        arch = {**cfg.student.arch, "hidden_size": self.student_hidden,
                "intermediate_size": 2 * self.student_hidden, "num_hidden_layers": self.student_layers,
                "num_attention_heads": STUDENT_HEADS, "num_key_value_heads": STUDENT_HEADS}
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, keyed=keyed),
                                   student=dataclasses.replace(cfg.student, arch=arch))


@dataclass(frozen=True)
class InstanceSet:
    """A named set of instances: a training split agents learn on and a disjoint test split they are scored on."""

    name: str = help_field("Name of the set, as the files give it.")
    train: tuple[Instance, ...] = help_field("Instances agents may train on.")
    test: tuple[Instance, ...] = help_field("Instances fixed before any training, never trained on.")
    sources: tuple[str, str] = help_field("Where the train and test splits come from (their files), named in "
                                          "error messages.", default=SPLITS, compare=False)

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and bool(_NAME.fullmatch(self.name)), "name", self.name,
              "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        names: dict[str, tuple[int, int]] = {}
        contents: dict[tuple[Any, ...], tuple[int, int]] = {}
        for s, split in enumerate((self.train, self.test)):
            check(isinstance(split, tuple) and len(split) >= 1, SPLITS[s], split,
                  "must be a non-empty tuple of instances")
            for i, instance in enumerate(split):
                check(isinstance(instance, Instance), f"{SPLITS[s]}[{i}]", instance, "must be an Instance")
                earlier = names.setdefault(instance.name, (s, i))
                if earlier != (s, i):
                    raise ConfigError(f"{self.sources[s]}: instances[{i}].name={instance.name!r}: already names "
                                      f"{self._where(earlier, s)}")
                earlier = contents.setdefault(instance.content(), (s, i))
                if earlier != (s, i):
                    other = (self.train, self.test)[earlier[0]][earlier[1]].name
                    why = "; a test instance must never be trained on" if earlier[0] != s else ""
                    raise ConfigError(f"{self.sources[s]}: instances[{i}] ({instance.name!r}): same fields as "
                                      f"{self._where(earlier, s)} ({other!r}) but the name{why}")

    def _where(self, located: tuple[int, int], split: int) -> str:
        """``instances[i]``, followed by its source when that is the other split's."""
        s, i = located
        return f"instances[{i}]" + (f" of {self.sources[s]}" if s != split else "")

    def get(self, name: str) -> Instance:
        """The instance called ``name``, of either split."""
        for instance in (*self.train, *self.test):
            if instance.name == name:
                return instance
        raise ConfigError(f"unknown instance {name!r} in set {self.name!r} (train: {', '.join(self.names('train'))}"
                          f"; test: {', '.join(self.names('test'))})")

    def names(self, split: str) -> tuple[str, ...]:
        """The instance names of ``split`` ("train" or "test"), in file order."""
        check(split in SPLITS, "split", split, "must be train or test")
        return tuple(instance.name for instance in (self.train if split == "train" else self.test))


@dataclass
class _SplitFile:
    """The top level of one split's file."""

    set: str = help_field("Name of the instance set; both files of a set give the same one.")
    split: str = help_field("'train' or 'test'.")
    instances: list[dict[str, Any]] = help_field("The split's instances, each a mapping of Instance's fields.")

    def __post_init__(self) -> None:
        check(bool(_NAME.fullmatch(self.set)), "set", self.set, "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        check(self.split in SPLITS, "split", self.split, "must be train or test")
        check(len(self.instances) >= 1, "instances", self.instances, "must list at least one instance")


T = TypeVar("T")


def _from_mapping(cls: type[T], values: dict[str, Any], source: str, prefix: str = "") -> T:
    """:func:`from_dict` with every field that has no default required: it would otherwise fail with a
    TypeError from the constructor, naming neither the file nor the key."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in values:
            raise ConfigError(f"{source}: missing key '{prefix + '.' if prefix else ''}{f.name}'")
    return from_dict(cls, values, source, prefix)


def _read_split(path: str | Path, split: str) -> tuple[str, tuple[Instance, ...]]:
    """The set name and instances of one split's file, which must say it is ``split``."""
    source = str(path)
    values = _from_mapping(_SplitFile, read_yaml(path), source)
    if values.split != split:
        raise ConfigError(f"{source}: split={values.split!r}: this file is loaded as the {split} split")
    instances = tuple(_from_mapping(Instance, item, source, f"instances[{i}]")
                      for i, item in enumerate(values.instances))
    return values.set, instances


def load_instance_set(train_path: str | Path, test_path: str | Path) -> InstanceSet:
    """The instance set of a training file and a test file (see the module docstring for their format)."""
    name, train = _read_split(train_path, "train")
    test_name, test = _read_split(test_path, "test")
    if test_name != name:
        raise ConfigError(f"{test_path}: set={test_name!r}: the training file {train_path} is of set {name!r}")
    return InstanceSet(name=name, train=train, test=test, sources=(str(train_path), str(test_path)))


def shipped_set_names() -> list[str]:
    """Names of the instance sets packaged with ARKD."""
    return sorted(p.name.removesuffix("-train.yaml") for p in INSTANCE_DIR.glob("*-train.yaml"))


def instance_set_from(spec: str) -> InstanceSet:
    """The instance set ``env.instances`` names: a shipped set's name, or ``TRAIN.yaml:TEST.yaml``."""
    if ":" not in spec:
        return shipped_instance_set(spec)
    train, _, test = spec.partition(":")
    return load_instance_set(train, test)


def shipped_instance_set(name: str = "keyed") -> InstanceSet:
    """A packaged instance set, read from ``arkd_env/configs/instances/<name>-{train,test}.yaml``."""
    if name not in shipped_set_names():
        raise ConfigError(f"unknown instance set {name!r} (available: {', '.join(shipped_set_names())})")
    return load_instance_set(INSTANCE_DIR / f"{name}-train.yaml", INSTANCE_DIR / f"{name}-test.yaml")

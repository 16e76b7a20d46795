"""Instances and instance sets: which distillation problem an episode poses, split into training and test sets.

In the style of DACBench, an *instance* fixes everything about an episode that is not the policy's choice:
the task mix (a keyed open task of :mod:`arkd_env.assets.keyed`, plus a share of the deterministic list tasks
of :mod:`arkd_env.assets.synthetic`), the student's size, and possibly one change of that mix partway through
the run. ``reset(options=...)`` picks one; :meth:`Instance.features` is the small numeric vector that lets a
policy tell instances apart in its observation.

**Splits.** An :class:`InstanceSet` holds a training split and a test split. Agents train on training
instances only, and the test split is fixed (its file dated) before any agent is trained. A test instance
must never be trained on, so the splits are disjoint by name *and* by content: the same fields under another
name are refused as well. Within the set no two instances share a name or their content either, since a
repeated instance only reweights the sampling silently.

**Files.** One YAML file per split, so the test file can be fixed, and reviewed, on its own::

    set: keyed            # the set's name; both files of a set must give the same one
    split: train          # or test; must match the role the file is loaded in
    instances:
      - name: train-k4m4
        n_keys: 4
        ...               # every field of Instance; shift_at and shift_deterministic_share may be left out

Every field without a default must be given: a benchmark's instances must not change when a code default
does. :func:`load_instance_set` reads a pair of files and :func:`shipped_instance_set` the pair packaged in
``arkd_env/configs/instances/`` (``<set>-train.yaml``, ``<set>-test.yaml``). Bad input is one line naming the
file and the field, in the convention of :mod:`arkd_env.config`:
``<dir>/keyed-train.yaml: instances[2]: n_keys=0: must be an integer in [1, 1024]``.

**Features.** Every field a policy could use, scaled into [0, 1] by the bounds below (which validation
enforces, so features never leave [0, 1]); sizes spread over orders of magnitude are log-scaled. The layout
seed is left out on purpose: it is a random draw, not a property a policy could adapt to.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from arkd_env.assets.keyed import DEFAULT_POOLS, KeyedTaskSpec
from arkd_env.config import ConfigError, check, check_seeds, from_dict, help_field, read_yaml

INSTANCE_DIR = Path(__file__).parent / "configs" / "instances"
SPLITS = ("train", "test")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Inclusive bounds of the fields that features scale. 1024 keys is far beyond what the small students here can
# learn to condition on; the modes of a key are capped by the default word pools (every slot needs that many
# distinct words); a Zipf exponent of 4 already puts over 90% of the mass on the first answer.
N_KEYS_RANGE = (1, 1024)
MODES_RANGE = (2, min(len(pool) for pool in DEFAULT_POOLS))
ZIPF_RANGE = (0.0, 4.0)
HIDDEN_RANGE = (8, 512)
LAYERS_RANGE = (1, 4)

# Students have this many attention heads, and each head's width must be even because rotary position
# embeddings rotate pairs of dimensions: hence hidden sizes are multiples of 2 * STUDENT_HEADS.
STUDENT_HEADS = 4
HIDDEN_MULTIPLE = 2 * STUDENT_HEADS

FEATURE_NAMES: tuple[str, ...] = (
    "log_n_keys",  # log(n_keys) over log(1024)
    "log_modes_per_key",  # log(modes / 2) over log(24 / 2)
    "answer_words",  # 0 for pairs, 1 for triples
    "zipf_exponent",  # exponent / 4
    "log_student_hidden",  # log(hidden / 8) over log(512 / 8)
    "student_layers",  # (layers - 1) / 3
    "deterministic_share",  # share of deterministic examples from the start
    "shift_at",  # progress at which the mix changes; 1 when it never does (a change at the end changes nothing)
    "shifted_deterministic_share",  # share after the change; the starting share when there is none
)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, and `n_keys: true` is a typo, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_int_in(key: str, value: Any, bounds: tuple[int, int]) -> None:
    low, high = bounds
    check(_is_int(value) and low <= value <= high, key, value, f"must be an integer in [{low}, {high}]")


def _check_share(key: str, value: Any) -> None:
    # Below 1: an instance that is all deterministic tasks has no keyed task for its other fields to describe.
    check(_is_number(value) and 0 <= value < 1, key, value, "must be a number in [0, 1)")


def _log_scale(value: float, low: float, high: float) -> float:
    return math.log(value / low) / math.log(high / low)


@dataclass(frozen=True)
class Instance:
    """One distillation problem: its keyed task, its share of deterministic tasks, its student and its shift."""

    name: str = help_field("Identifies the instance in its set, in reset(options=...) and in results; "
                           "1-64 characters of A-Z, a-z, 0-9, _ and -.")
    n_keys: int = help_field("Keys of the keyed task, each with its own valid answers (KeyedTaskSpec.n_keys).")
    modes_per_key: int = help_field("Valid answers of every key (KeyedTaskSpec.modes_per_key), at least 2.")
    answer_words: int = help_field("Words per answer: 2 (pairs) or 3 (triples).")
    zipf_exponent: float = help_field("Exponent s of the Zipf law over each key's ranked answers.")
    layout_seed: int = help_field("Seed of the key layout (which answers each key accepts, in which order); "
                                  "the training draws take the engine's seed.")
    deterministic_share: float = help_field("Share of training examples from the synthetic suite's "
                                            "deterministic list tasks, in [0, 1); the rest are keyed.")
    student_hidden: int = help_field(f"Hidden size of the student, a multiple of {HIDDEN_MULTIPLE} "
                                     f"({STUDENT_HEADS} heads of even width).")
    student_layers: int = help_field("Decoder layers of the student.")
    shift_at: float | None = help_field("Share of the run (in (0, 1)) after which the data mix changes to "
                                        "shift_deterministic_share; null: it never changes.", default=None)
    shift_deterministic_share: float | None = help_field("deterministic_share from shift_at on; given exactly "
                                                         "when shift_at is.", default=None)

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and bool(_NAME.fullmatch(self.name)), "name", self.name,
              "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        _check_int_in("n_keys", self.n_keys, N_KEYS_RANGE)
        _check_int_in("modes_per_key", self.modes_per_key, MODES_RANGE)
        check(self.answer_words in (2, 3) and _is_int(self.answer_words), "answer_words", self.answer_words,
              "must be 2 or 3")
        low, high = ZIPF_RANGE
        check(_is_number(self.zipf_exponent) and low <= self.zipf_exponent <= high, "zipf_exponent",
              self.zipf_exponent, f"must be a number in [{low}, {high}]")
        check_seeds("layout_seed", self.layout_seed)
        _check_share("deterministic_share", self.deterministic_share)
        _check_int_in("student_hidden", self.student_hidden, HIDDEN_RANGE)
        check(self.student_hidden % HIDDEN_MULTIPLE == 0, "student_hidden", self.student_hidden,
              f"must be a multiple of {HIDDEN_MULTIPLE} ({STUDENT_HEADS} heads of even width)")
        _check_int_in("student_layers", self.student_layers, LAYERS_RANGE)
        if self.shift_at is None:
            check(self.shift_deterministic_share is None, "shift_deterministic_share",
                  self.shift_deterministic_share, "needs shift_at, the point at which it takes over")
            return
        check(_is_number(self.shift_at) and 0 < self.shift_at < 1, "shift_at", self.shift_at,
              "must be a number in (0, 1) or null")
        check(self.shift_deterministic_share is not None, "shift_deterministic_share", None,
              "must be given with shift_at")
        _check_share("shift_deterministic_share", self.shift_deterministic_share)
        check(self.shift_deterministic_share != self.deterministic_share, "shift_deterministic_share",
              self.shift_deterministic_share, "must differ from deterministic_share, or nothing shifts")

    def keyed_spec(self) -> KeyedTaskSpec:
        """The keyed task of this instance, with the default word pools."""
        return KeyedTaskSpec(n_keys=self.n_keys, modes_per_key=self.modes_per_key,
                             zipf_exponent=self.zipf_exponent, answer_words=self.answer_words,
                             seed=self.layout_seed)

    def deterministic_share_at(self, progress: float) -> float:
        """The share of deterministic examples once ``progress`` (in [0, 1]) of the run is done."""
        check(_is_number(progress) and 0 <= progress <= 1, "progress", progress, "must be a number in [0, 1]")
        # Validation gives both shift fields or neither; testing the share as well lets type checkers know it.
        if self.shift_at is not None and self.shift_deterministic_share is not None and progress >= self.shift_at:
            return self.shift_deterministic_share
        return self.deterministic_share

    def features(self) -> tuple[float, ...]:
        """The instance as ``len(FEATURE_NAMES)`` numbers in [0, 1], in the order of :data:`FEATURE_NAMES`."""
        return (
            _log_scale(self.n_keys, *N_KEYS_RANGE),
            _log_scale(self.modes_per_key, *MODES_RANGE),
            float(self.answer_words - 2),
            self.zipf_exponent / ZIPF_RANGE[1],
            _log_scale(self.student_hidden, *HIDDEN_RANGE),
            (self.student_layers - LAYERS_RANGE[0]) / (LAYERS_RANGE[1] - LAYERS_RANGE[0]),
            float(self.deterministic_share),
            1.0 if self.shift_at is None else float(self.shift_at),
            float(self.deterministic_share_at(1.0)),
        )

    def content(self) -> tuple[Any, ...]:
        """Every field but the name: two instances with equal content pose the same problem."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name")


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


def shipped_instance_set(name: str = "keyed") -> InstanceSet:
    """A packaged instance set, read from ``arkd_env/configs/instances/<name>-{train,test}.yaml``."""
    if name not in shipped_set_names():
        raise ConfigError(f"unknown instance set {name!r} (available: {', '.join(shipped_set_names())})")
    return load_instance_set(INSTANCE_DIR / f"{name}-train.yaml", INSTANCE_DIR / f"{name}-test.yaml")

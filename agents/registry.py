"""Make, save and load agents by name: SB3, sb3-contrib, ARKD's own, or any ``module:Class``.

``make_agent("ppo", env)`` builds a Stable-Baselines3 algorithm with the defaults of
``agents/hyperparams/ppo.yaml`` for the env preset; a baseline spec (``fkl``, ``fixed:0.3``,
``greedy``...) gives the matching :class:`agents.baselines.BaselinePolicy`, so a harness can
treat every policy through the same calls.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymnasium import spaces

from agents import policy_record, policy_spec
from agents.baselines import BASELINE_NAMES, BaselinePolicy, is_baseline_spec, make_baseline
from agents.env_access import protocol_envs
from agents.hparams import load_hyperparams, resolve_activation, resolve_objects
from agents.spaces import check_spaces
from arkd_env import ARKDWarning

META_FILE = policy_record.META_FILE
CONTRIB_HINT = 'pip install "arkd[contrib]"'
REQUIRED_METHODS = ("learn", "predict", "save")


@dataclass(frozen=True)
class AlgoSpec:
    target: str  # "module:Class"
    contrib: bool = False  # lives in the optional sb3-contrib package
    box_only: bool = False  # continuous actions only (not the Discrete `binary` and `grid` action modes)
    discrete_only: bool = False  # Discrete actions only: the `binary` and `grid` action modes


ALGORITHMS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec("stable_baselines3:PPO"),
    "a2c": AlgoSpec("stable_baselines3:A2C"),
    "sac": AlgoSpec("stable_baselines3:SAC", box_only=True),
    "td3": AlgoSpec("stable_baselines3:TD3", box_only=True),
    "ddpg": AlgoSpec("stable_baselines3:DDPG", box_only=True),
    "tqc": AlgoSpec("sb3_contrib:TQC", contrib=True, box_only=True),
    "recurrent_ppo": AlgoSpec("sb3_contrib:RecurrentPPO", contrib=True),
    "trpo": AlgoSpec("sb3_contrib:TRPO", contrib=True),
    "reinforce": AlgoSpec("agents.reinforce:Reinforce"),
    "dqn": AlgoSpec("stable_baselines3:DQN", discrete_only=True),
    "bandit": AlgoSpec("agents.bandit:DiscountedThompson", discrete_only=True),
    "qrdqn": AlgoSpec("sb3_contrib:QRDQN", contrib=True, discrete_only=True),
}
# RL Baselines3 Zoo's names for the same algorithms.
ALIASES = {"ppo_lstm": "recurrent_ppo", "qr_dqn": "qrdqn"}


def canonical_name(name: str) -> str:
    """The registry key of ``name`` (case-insensitive, Zoo aliases resolved); other names unchanged."""
    key = name.lower()
    return ALIASES.get(key, key)


def known_names() -> list[str]:
    """Every name make_agent accepts besides ``module:Class`` paths."""
    return [*ALGORITHMS, *ALIASES, *BASELINE_NAMES]


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown agent {name!r}; known: {', '.join(known_names())} "
                      "(or 'package.module:Class' for your own algorithm)")


def import_class(target: str) -> type:
    """Import ``package.module:Class``; one-line ValueError when it cannot be found or used."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"agent class path {target!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"agent class path {target!r}: cannot import module {module_name!r} "
                         f"({err})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"agent class path {target!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise ValueError(f"agent class path {target!r}: {attr!r} is not a class")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(f"agent class {target!r} lacks {', '.join(missing)}: it must follow the "
                         "Stable-Baselines3 BaseAlgorithm interface (learn, predict, save, load)")
    return obj


def algorithm_class(name: str) -> type:
    """The class registered under ``name`` (importing sb3-contrib only when needed)."""
    spec = ALGORITHMS[name]
    module_name = spec.target.partition(":")[0]
    if spec.contrib:
        try:
            importlib.import_module(module_name)
        except ImportError:
            raise ImportError(f"agent {name!r} needs the sb3-contrib package: {CONTRIB_HINT}") from None
    return import_class(spec.target)


def check_action_space(name: str, env: Any) -> None:
    check_action_kind(name, isinstance(env.action_space, spaces.Discrete), str(env.action_space))


def check_action_kind(name: str, discrete: bool, space: str) -> None:
    """One line when agent ``name`` cannot act in a (``discrete`` or Box) action space described by ``space``."""
    spec = ALGORITHMS.get(canonical_name(name))
    if spec is not None and spec.box_only and discrete:
        raise ValueError(f"agent {name!r} needs continuous (Box) actions but the env's action space is "
                         f"{space}; use action_mode mix, simplex or head_tail, or ppo/a2c/trpo/"
                         "recurrent_ppo/reinforce/dqn for the binary and grid modes")
    if spec is not None and spec.discrete_only and not discrete:
        raise ValueError(f"agent {name!r} needs Discrete actions but the env's action space is {space}; "
                         "use action_mode binary or grid")


def check_hyperparameters(name: str, preset: str | None, hyperparams: Mapping[str, Any] | None) -> None:
    """Refuse hyperparameters the agent's constructor does not take, before any env or run folder exists."""
    key = canonical_name(name)
    if is_baseline_spec(name) or (key not in ALGORITHMS and ":" not in name):
        return
    cls = algorithm_class(key) if key in ALGORITHMS else import_class(name)
    values = load_hyperparams(key if key in ALGORITHMS else "", preset, hyperparams)
    _constructor_kwargs(cls, name, values, {})
    policy_kwargs = values.get("policy_kwargs")
    if isinstance(policy_kwargs, Mapping) and "activation_fn" in policy_kwargs:
        resolve_activation(policy_kwargs["activation_fn"])


def _accepted(cls: type) -> tuple[set[str], bool]:
    """Constructor keyword names of ``cls`` and whether it takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}, any(p.kind is p.VAR_KEYWORD for p in params)


def _constructor_kwargs(cls: type, label: str, hparams: dict[str, Any],
                        extras: dict[str, Any]) -> dict[str, Any]:
    names, var_kw = _accepted(cls)
    if not var_kw:
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise ValueError(f"agent {label!r}: unknown hyperparameter {unknown[0]!r} "
                             f"(accepted: {', '.join(sorted(names - {'env'}))})")
    kwargs = dict(hparams)
    # seed/verbose/tensorboard_log are passed only to classes that take them.
    for key, value in extras.items():
        if key in names or var_kw:
            kwargs.setdefault(key, value)
    return kwargs


def make_agent(name: str, env: Any, hyperparams: Mapping[str, Any] | None = None, preset: str | None = None,
               seed: int | None = None, tensorboard_log: str | None = None, verbose: int = 0,
               device: str | None = None, **kwargs: Any) -> Any:
    """Build the agent ``name`` for ``env``.

    name: a registered algorithm (``ppo``, ``sac``, ``a2c``, ``td3``, ``ddpg``, ``tqc``,
    ``recurrent_ppo``, ``trpo``, ``reinforce``), a baseline spec (see
    :func:`agents.baselines.make_baseline`; ``hyperparams`` become its options), or
    ``package.module:Class`` for any class with the BaseAlgorithm interface.
    hyperparams: overrides merged over the YAML defaults of ``preset`` (dotted keys such as
    ``policy_kwargs.net_arch`` allowed).
    device: torch device of the agent's networks, for classes that take one (None: the class's default).
    kwargs: further hyperparameters as keywords, as ``PPO(...)`` takes them (``n_steps=4``); they override
    ``hyperparams``.
    """
    hyperparams = {**dict(hyperparams or {}), **kwargs}
    if is_baseline_spec(name):
        return make_baseline(name, env, **hyperparams)
    key = canonical_name(name)
    if key in ALGORITHMS:
        check_action_space(key, env)
        cls = algorithm_class(key)
        values = load_hyperparams(key, preset, hyperparams)
    elif ":" in name:
        cls = import_class(name)
        values = load_hyperparams("", None, hyperparams)  # user classes have no YAML defaults
    else:
        raise _unknown(name)
    action_dim = int(env.action_space.shape[0]) if isinstance(env.action_space, spaces.Box) else None
    plain = values  # the YAML-level values: what a saved policy's spec rebuilds the agent from
    values = resolve_objects(values, action_dim)
    names, _ = _accepted(cls)
    if "policy" in names:
        values.setdefault("policy", "MlpPolicy")
    extras = {"seed": seed, "tensorboard_log": tensorboard_log, "verbose": verbose}
    if device is not None:
        extras["device"] = device
    kwargs = _constructor_kwargs(cls, name, values, extras)
    try:
        model = cls(env=env, **kwargs)
    except AssertionError as err:  # SB3 checks several hyperparameters with assert (batch_size > 1...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "an internal check failed"
        raise ValueError(f"agent {name!r}: {cls.__name__} refuses these hyperparameters: {reason}") from None
    policy_spec.remember(model, key if key in ALGORITHMS else name, plain, env)
    return model


# Saving and loading --------------------------------------------------------------------------

def _zip_path(path: str | Path) -> Path:
    """Where SB3-style ``save(path)`` put its file: ``path`` or ``path.zip``."""
    path = Path(path)
    if path.is_file():
        return path
    with_zip = Path(f"{path}.zip")
    return with_zip if with_zip.is_file() else path


def agent_target(model: Any) -> str:
    """The registry name of ``model``'s class, or its ``module:Class`` path."""
    cls = type(model)
    for name, spec in ALGORITHMS.items():
        module_name, _, attr = spec.target.partition(":")
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, attr, None) is cls:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def save_agent(model: Any, path: str | Path) -> Path:
    """``model.save(path)`` plus a JSON record of its algorithm and, for an agent :func:`make_agent` built,
    the spec that lets :func:`load_agent` rebuild it without unpickling anything (:mod:`agents.policy_spec`),
    and, when the model has an env, the record of what it observes (:mod:`agents.policy_record`)."""
    model.save(str(path))
    saved = _zip_path(path)
    if not zipfile.is_zipfile(saved):
        return saved  # a user format we cannot annotate; load_agent(..., algo=...) still works
    with zipfile.ZipFile(saved) as archive:
        if META_FILE in archive.namelist():
            return saved
    spec = policy_spec.spec_of(model)
    with zipfile.ZipFile(saved, "a") as archive:
        archive.writestr(META_FILE, policy_record.meta_entry(agent_target(model), model,
                                                             **({} if spec is None else {"spec": spec})))
    return saved


def _guess_sb3_algo(data: Mapping[str, Any]) -> str | None:
    """Recognise an SB3/sb3-contrib save by its policy module and its algorithm's own fields."""
    policy_module = str(data.get("policy_class", {}).get("__module__", ""))
    by_module = {"stable_baselines3.sac.policies": "sac", "sb3_contrib.tqc.policies": "tqc",
                 "sb3_contrib.common.recurrent.policies": "recurrent_ppo"}
    if policy_module in by_module:
        return by_module[policy_module]
    if policy_module == "stable_baselines3.td3.policies":
        return "ddpg" if data.get("policy_delay") == 1 and data.get("target_policy_noise") == 0 else "td3"
    if policy_module == "stable_baselines3.common.policies":
        if "cg_max_steps" in data:
            return "trpo"
        return "ppo" if "n_epochs" in data else "a2c"
    return None


def _record(path: Path) -> dict[str, Any]:
    """What a saved file says of itself: ``kind`` (its algorithm, or None), ``spec`` and ``data`` (SB3's
    field mapping, parsed as JSON only)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "baseline.json" in names:
            return {"kind": "baseline"}
        data = json.loads(archive.read("data")) if "data" in names else None
        meta = json.loads(archive.read(META_FILE)) if META_FILE in names else None
    if meta is not None and not (isinstance(meta, Mapping) and isinstance(meta.get("algo"), str)):
        raise ValueError(f"{path}: {META_FILE} must be a mapping with a string 'algo'")
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{path}: its 'data' entry must be a mapping of fields")
    kind = meta["algo"] if meta is not None else (_guess_sb3_algo(data) if data is not None else None)
    observes = (meta or {}).get(policy_record.RECORD_KEY)
    return {"kind": kind, "spec": (meta or {}).get("spec"), "data": data,
            "observes": None if observes is None else policy_record.check_record(observes, str(path))}


def load_agent(name_or_path: str | Path, env: Any = None, algo: str | None = None,
               device: str = "auto", allow_pickle: bool = False) -> Any:
    """Load a saved policy (SB3 zip, REINFORCE, baseline) or build a baseline from its name.

    The algorithm is read from the file (see :func:`save_agent`) or recognised from SB3's own
    fields; pass ``algo`` (a name or ``module:Class``) for anything else. With ``env`` the
    spaces are checked (:func:`agents.spaces.check_spaces`) and the policy is attached to it.

    No pickle in the file is run: the objects SB3 keeps pickled are rebuilt from the spec
    :func:`save_agent` wrote. A file without a spec whose data holds pickles (a plain
    ``model.save``, or one from another tool) is refused unless ``allow_pickle=True``: pass it only
    for a file you made yourself, since unpickling a crafted file runs its code.
    """
    path = _zip_path(name_or_path)
    if not path.is_file():
        text = str(name_or_path)
        if is_baseline_spec(text):
            return make_baseline(text, env)
        if text.lower() in ALGORITHMS:
            raise ValueError(f"{text!r} names an algorithm, not a policy: give the path of a saved policy "
                             "or a baseline name")
        raise ValueError(f"no saved policy at {text!r} and not a baseline name "
                         f"(baselines: {', '.join(BASELINE_NAMES)})")
    try:
        record = _record(path) if zipfile.is_zipfile(path) else {"kind": None}
    except json.JSONDecodeError as err:
        raise _unreadable(path, err) from None
    except ValueError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as err:  # a corrupt or truncated entry
        raise _unreadable(path, err) from None
    kind = algo or record["kind"]
    if kind is None:
        raise ValueError(f"{path}: not a policy saved by ARKD or Stable-Baselines3 (damaged or truncated, or "
                         f"another kind of file); for a policy in another format pass algo= "
                         f"(one of {', '.join(ALGORITHMS)} or 'package.module:Class')")
    cls: Any = BaselinePolicy if kind == "baseline" else (
        algorithm_class(kind) if kind in ALGORITHMS else import_class(kind))
    objects = _replacements(path, record, allow_pickle)
    model = _read(cls, path, env if kind == "baseline" else None, device, objects)
    if env is None or kind == "baseline":
        return _remembered(model, record)
    if zipfile.is_zipfile(path):  # a user's own format has no place for the record
        check_observes(record.get("observes"), env, str(path))
    # Check with our message first, then reload bound to env (SB3's set_env would refuse an env
    # with another number of sub-envs than the policy was trained with).
    try:
        check_spaces(model, env)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return _remembered(_read(cls, path, env, device, objects), record)


def read_observes(path: str | Path) -> dict[str, Any] | None:
    """The record of what the policy saved at ``path`` observes, or None when it was saved without one."""
    return _record(_zip_path(path)).get("observes")


def check_observes(observes: Mapping[str, Any] | None, env: Any, where: str) -> None:
    """Refuse, in one line, an env that a policy with record ``observes`` would misread; warn without a record."""
    try:
        target = protocol_envs(env)[0]
    except ValueError:  # a plain Gymnasium env names no features: there is nothing to compare
        return
    if observes is None:
        warnings.warn(f"{where}: saved without a record of the features and actions it was trained with (an "
                      "older ARKD); only the spaces' shapes can be checked", ARKDWarning, stacklevel=3)
        return
    problem = policy_record.mismatch(observes, policy_record.describe(target))
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def _replacements(path: Path, record: Mapping[str, Any], allow_pickle: bool) -> dict[str, Any] | None:
    """SB3's ``custom_objects`` for ``path``: every pickled field rebuilt from the spec, so none is unpickled."""
    data = record.get("data") or {}
    pickled = policy_spec.serialized_fields(data)
    if not pickled or (allow_pickle and record.get("spec") is None):
        return None
    if record.get("spec") is None:
        raise ValueError(f"{path}: its data holds pickled objects ({', '.join(pickled)}) and no ARKD spec to "
                         "rebuild them from, and unpickling a file runs its code; save it with "
                         "agents.save_agent from an agent made by make_agent, or, only for a file you made, "
                         "load it with load_agent(..., allow_pickle=True)")
    return policy_spec.custom_objects(record["spec"], data, str(path))


def _remembered(model: Any, record: Mapping[str, Any]) -> Any:
    """A loaded agent keeps its spec, so that saving it again (a resumed run's checkpoint) keeps it too."""
    if record.get("spec") is not None:
        policy_spec.remember(model, record["spec"]["algo"], record["spec"]["hyperparams"], model)
    return model


def _unreadable(path: Path, err: BaseException) -> ValueError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ValueError(f"{path}: not a readable saved policy, damaged or truncated ({type(err).__name__}: {first})")


def _read(cls: Any, path: Path, env: Any, device: str, objects: dict[str, Any] | None) -> Any:
    """``cls.load``; a damaged file gives one ValueError naming ``path`` (a missing package stays an ImportError)."""
    extra = {} if objects is None else {"custom_objects": objects}
    try:
        if cls is BaselinePolicy:
            return cls.load(path, env=env)
        if env is None:
            return cls.load(str(path), device=device, **extra)
        return cls.load(str(path), env=env, device=device, **extra)
    except ImportError:
        raise
    except ValueError as err:
        if isinstance(err, json.JSONDecodeError):
            raise _unreadable(path, err) from None
        raise ValueError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
    except Exception as err:  # zipfile, torch and pickle raise many types for a damaged file
        raise _unreadable(path, err) from None

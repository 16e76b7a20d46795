"""Loading never runs code from a file ARKD did not write, nothing goes to the network unless a hub model or
data set is named, and names and paths from the command line cannot leave the output directory."""

from __future__ import annotations

import ast
import inspect
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TINY, env

from train import runs
from train.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("arkd_env", "agents", "train")
PICKLERS = {"pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}


def sources() -> Iterator[tuple[str, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"))


def calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """Every call with the dotted name of what is called (``torch.load``, ``x.from_pretrained``, ``eval``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def imported_names(tree: ast.AST) -> dict[str, str]:
    """What each name an import binds stands for: ``th`` -> ``torch``, ``loads`` -> ``pickle.loads``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    names[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def resolved_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """Every call with the full dotted name of what is called, imports undone: after ``import torch as t`` or
    ``from torch import load``, both ``t.load(f)`` and ``load(f)`` are ``torch.load``."""
    names = imported_names(tree)
    for call, name in calls(tree):
        head, dot, rest = name.partition(".")
        yield call, names.get(head, head) + dot + rest


TORCH_LOADS = {"torch.load", "torch.serialization.load"}
UNPICKLERS = {"load", "loads", "Unpickler", "open"}  # what reads a pickle in pickle, cloudpickle, dill, shelve...


def unpickling(tree: ast.AST) -> list[str]:
    """Every call in ``tree`` that can turn bytes into objects by running a pickle."""
    found = []
    for call, name in resolved_calls(tree):
        root, _, last = name.rpartition(".")
        if (root.split(".")[0] in PICKLERS and last in UNPICKLERS) or name == "pandas.read_pickle":
            found.append(f"{call.lineno}: {name}()")
        elif name in ("importlib.import_module", "__import__") and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in PICKLERS:
                found.append(f"{call.lineno}: {name}({first.value!r})")
        elif name in TORCH_LOADS and not is_true(keyword(call, "weights_only")):
            found.append(f"{call.lineno}: {name}() without weights_only=True")
    return found


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_every_torch_load_is_weights_only() -> None:
    found = []
    for where, tree in sources():
        for call, name in resolved_calls(tree):
            if name in TORCH_LOADS:
                found.append(where)
                assert is_true(keyword(call, "weights_only")), f"{where}:{call.lineno}: {name} lacks weights_only=True"
    assert found, "the scan found no torch.load at all: is it scanning the right folders?"


def test_no_pickle_no_eval_no_unsafe_yaml() -> None:
    for where, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not {m.split(".")[0] for m in modules} & PICKLERS, f"{where}:{node.lineno}: imports a pickler"
        for call, name in calls(tree):
            assert name not in ("eval", "exec", "compile", "__import__"), f"{where}:{call.lineno}: {name}()"
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), f"{where}:{call.lineno}"
            assert not is_true(keyword(call, "allow_pickle")), f"{where}:{call.lineno}: allow_pickle=True"


def test_remote_code_is_never_trusted_unless_configured() -> None:
    from arkd_env.assets.models import load_tokenizer
    from arkd_env.config import ModelConfig, load_preset, preset_names

    for where, tree in sources():
        for call, name in calls(tree):
            if name.endswith(("from_pretrained", "load_dataset", "pipeline")):
                assert not is_true(keyword(call, "trust_remote_code")), f"{where}:{call.lineno}: {name}"
    assert ModelConfig().trust_remote_code is False
    assert inspect.signature(load_tokenizer).parameters["trust_remote_code"].default is False
    for preset in preset_names():
        cfg = load_preset(preset).engine
        assert not cfg.teacher.trust_remote_code and not cfg.student.trust_remote_code, preset


def test_no_module_unpickles() -> None:
    """No call in ARKD's sources runs a pickle: none of pickle/cloudpickle/dill/... load or loads (under any
    alias), no dynamic import of them, and no torch.load without weights_only=True."""
    problems = [f"{where}:{problem}" for where, tree in sources() for problem in unpickling(tree)]
    assert problems == []


@pytest.mark.parametrize(("source", "caught"), [
    ("import pickle\npickle.loads(b)", True),
    ("import pickle as p\np.load(f)", True),
    ("from pickle import loads as read\nread(b)", True),
    ("from pickle import Unpickler\nUnpickler(f).load()", True),
    ("import cloudpickle\ncloudpickle.loads(b)", True),
    ("import dill\ndill.load(f)", True),
    ("import shelve\nshelve.open(p)", True),
    ("import importlib\nimportlib.import_module('pickle')", True),
    ("import pandas as pd\npd.read_pickle(p)", True),
    ("import torch\ntorch.load(f)", True),
    ("import torch as t\nt.load(f, weights_only=False)", True),
    ("from torch import load\nload(f)", True),
    ("from torch.serialization import load\nload(f)", True),
    ("import torch\ntorch.load(f, weights_only=True)", False),
    ("import torch as th\nth.load(f, map_location='cpu', weights_only=True)", False),
    ("import json\njson.loads(b)", False),
    ("import pickle\npickle.dumps(x)", False),  # writing a pickle runs nothing (the import check refuses it)
])
def test_the_unpickling_scan_sees_through_aliases(source: str, caught: bool) -> None:
    assert bool(unpickling(ast.parse(source))) is caught, unpickling(ast.parse(source))


class _RunsCode:
    """A pickle that makes a folder when it is loaded: what a hostile policy file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_a_policy_file_whose_tensors_run_code_is_refused_unrun(tmp_path: Path) -> None:
    """ARKD's own policy format (REINFORCE: JSON + torch tensors) loads no pickle: weights that would run code
    are refused with one ValueError, and the code never runs."""
    import io

    import torch
    from _toy_env import ToyDistillEnv

    from agents.registry import load_agent, make_agent, save_agent

    env = ToyDistillEnv("mix", horizon=2)
    good = save_agent(make_agent("reinforce", env, {"n_episodes_per_update": 1}, seed=0), tmp_path / "good")
    control = io.BytesIO()
    torch.save(_RunsCode(tmp_path / "control"), control)
    torch.load(io.BytesIO(control.getvalue()), weights_only=False)  # the payload is live: an unsafe load runs it
    assert (tmp_path / "control").is_dir()

    marker = tmp_path / "ran"
    payload = io.BytesIO()
    torch.save(_RunsCode(marker), payload)
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            target.writestr(item, payload.getvalue() if item.filename == "policy.pth" else source.read(item))
    with pytest.raises(ValueError, match=r"hostile\.zip: not a readable saved policy.*Weights only load failed"):
        load_agent(hostile, env)
    assert not marker.exists()


def _with_pickled_field(source: Path, target: Path, field: str, payload: object) -> None:
    """``source`` with one ``:serialized:`` field of SB3's ``data`` replaced by a cloudpickle of ``payload``."""
    import base64
    import json

    import cloudpickle

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            blob = original.read(item)
            if item.filename == "data":
                data = json.loads(blob)
                data[field][":serialized:"] = base64.b64encode(cloudpickle.dumps(payload)).decode()
                blob = json.dumps(data).encode()
            copy.writestr(item, blob)


def test_a_crafted_pickle_in_a_stable_baselines3_policy_never_runs(tmp_path: Path) -> None:
    """Every pickled field of an SB3 ``data`` entry is rebuilt from the JSON spec ARKD saved beside it, so a
    payload planted in one (here the policy class, read by every load) is never unpickled: the policy loads and
    acts as before, and no marker appears. The same file given to SB3's own ``load`` does run the payload."""
    import numpy as np
    from _toy_env import ToyDistillEnv
    from stable_baselines3 import PPO

    from agents.registry import load_agent, make_agent, save_agent

    env = ToyDistillEnv("mix", horizon=2)
    good = save_agent(make_agent("ppo", env, {"n_steps": 2, "batch_size": 2}, seed=0), tmp_path / "good")
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.zip"
    _with_pickled_field(good, hostile, "policy_class", _RunsCode(marker))
    obs, _ = env.reset(seed=0)
    loaded = load_agent(hostile, env)
    assert not marker.exists()
    expected = load_agent(good, env).predict(obs, deterministic=True)[0]
    assert np.allclose(loaded.predict(obs, deterministic=True)[0], expected)
    with pytest.raises(Exception):  # noqa: B017 - the payload is live: an unpickling load runs it (then fails)
        PPO.load(hostile)
    assert marker.is_dir()


@pytest.mark.parametrize(("algo", "mode"), [("ppo", "mix"), ("a2c", "mix"), ("sac", "mix"), ("td3", "mix"),
                                            ("ddpg", "mix"), ("tqc", "mix"), ("trpo", "mix"),
                                            ("recurrent_ppo", "mix"), ("dqn", "binary"), ("qrdqn", "binary")])
def test_no_registered_algorithm_unpickles_on_load(algo: str, mode: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With cloudpickle's loader disabled inside Stable-Baselines3, a saved, learned, reloaded and re-saved agent
    (what a resumed run's checkpoint is) still loads: nothing in it needs unpickling."""
    from _toy_env import ToyDistillEnv
    from stable_baselines3.common import save_util

    from agents.registry import load_agent, make_agent, save_agent

    env = ToyDistillEnv(mode, horizon=2)
    agent = make_agent(algo, env, preset="nano", seed=0)
    agent.learn(2)
    first = save_agent(agent, tmp_path / "first")

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("cloudpickle.loads was called")

    monkeypatch.setattr(save_util.cloudpickle, "loads", refuse)
    resumed = load_agent(first, env)
    again = save_agent(resumed, tmp_path / "again")
    assert load_agent(again, env).num_timesteps == agent.num_timesteps


def test_a_policy_without_a_spec_is_refused_unless_the_caller_vouches_for_it(tmp_path: Path) -> None:
    from _toy_env import ToyDistillEnv
    from stable_baselines3 import PPO

    from agents.registry import load_agent

    env = ToyDistillEnv("mix", horizon=2)
    PPO("MlpPolicy", env, n_steps=2, batch_size=2).save(tmp_path / "theirs")
    with pytest.raises(ValueError, match=r"theirs\.zip: its data holds pickled objects"):
        load_agent(tmp_path / "theirs.zip", env)
    assert isinstance(load_agent(tmp_path / "theirs.zip", env, allow_pickle=True), PPO)


@pytest.mark.parametrize(("meta", "message"), [
    ("[1, 2]", r"arkd_agent\.json must be a mapping with a string 'algo'"),
    ('{"algo": "ppo", "spec": [1]}', r"the policy spec must be a mapping"),
    ('{"algo": "ppo", "spec": {"algo": "ppo", "hyperparams": {"policy_kwargs": {"activation_fn": "os:getcwd"}}}}',
     r"activation_fn='os:getcwd' is not one of"),
])
def test_a_damaged_policy_record_is_one_line(meta: str, message: str, tmp_path: Path) -> None:
    from _toy_env import ToyDistillEnv

    from agents.registry import META_FILE, load_agent, make_agent, save_agent

    env = ToyDistillEnv("mix", horizon=2)
    good = save_agent(make_agent("ppo", env, {"n_steps": 2, "batch_size": 2}, seed=0), tmp_path / "good")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for item in source.infolist():
            target.writestr(item, meta if item.filename == META_FILE else source.read(item))
    with pytest.raises(ValueError, match=rf"bad\.zip: .*{message}"):
        load_agent(bad, env)


# ---------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("name", ["../x", "../../x", "/abs/path", "a/../../b", "..", ".", "~/x", "..\\..\\x",
                                  "a/b/c", "-rf", "x" * 300, "ünï cødé", ""])
def test_run_names_stay_inside_the_output_directory(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = runs.create_run_dir(out, "../p", "/a", 0, name=name or None)
    assert folder.parent == out.resolve() and folder.is_dir()
    assert not folder.name.startswith(".") and len(folder.name) <= 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_symlink_out_of_the_output_directory_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "trap").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the output directory"):
        runs.create_run_dir(out, name="trap")
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/../../escape"])
def test_train_name_from_the_command_line(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from train import trainer

    seen: list[Path] = []

    def fake_train(cfg: Any, run_dir: Path, resume: bool = False, evaluate: bool = True) -> Any:
        seen.append(run_dir)
        return trainer.TrainResult(run_dir=run_dir, num_timesteps=0)

    monkeypatch.setattr(trainer, "train", fake_train)
    out = tmp_path / "out"
    assert main(["train", "--preset", "nano", "--output-dir", str(out), "--name", name]) == 0
    assert seen and seen[0].parent == out.resolve() and seen[0].name.endswith("escape")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---------------------------------------------------------------------------------------------- network
class NetworkAttempt(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way out to the network raises, and is recorded even when a library swallows the error."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[1:] or args)[:200])
        raise NetworkAttempt(f"network access: {args!r}")

    for owner, attr in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, attr, refuse)
    return attempts


def test_offline_preset_never_touches_the_network(tmp_path: Path, no_network: list[str]) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # as the README's test command sets it
    assert main(["distill", *TINY, "--policy", "fkl", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "metrics.json").is_file()
    assert no_network == []
    saved = {p.suffix for p in (tmp_path / "d" / "student").iterdir()}
    assert ".safetensors" in saved and not saved & {".bin", ".pt", ".pth", ".pkl"}  # tensors only, no pickle


BLOCKED_RUN = """
import socket, sys
def refuse(*args, **kwargs):
    sys.stderr.write("NETWORK ATTEMPT %r\\n" % (args[1:],))
    raise OSError("network access refused by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from train.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_offline_preset_needs_no_offline_flags(tmp_path: Path) -> None:
    """Without HF_HUB_OFFLINE/HF_DATASETS_OFFLINE, a preset that names no hub model or data set still makes
    no network connection (a separate process: the hub libraries read those flags once, at import)."""
    clean = {k: v for k, v in env().items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "distill", *TINY, "--policy", "rkl",
                           "--out", str(tmp_path / "d")], capture_output=True, text=True, env=clean, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "NETWORK ATTEMPT" not in done.stderr, done.stderr

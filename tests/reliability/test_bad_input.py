"""A corpus of bad inputs to the `arkd` command. Each must end in exit status 2 and ONE stderr line that names
the file, key or value at fault, with no traceback and nothing left in the output folder.

Every case builds its inputs in a fresh folder and runs the real command line (``train.cli.main``, the entry
point of the `arkd` script) in-process; ``test_bad_input_in_a_subprocess`` runs three of them as real processes,
and ``--debug`` shows the traceback instead. Bad actions, which only Python code can send, are at the end.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from _cli_helpers import TINY, arkd, one_error_line
from gymnasium import spaces

from train.cli import main

Case = Callable[[Path], tuple[list[str], list[str]]]  # folder -> (argv, fragments the error line must hold)
DISTILL = ["distill", "--preset", "nano", "--policy", "fkl"]
TRAIN = ["train", "--preset", "nano"]


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _data(d: Path, name: str, content: str | bytes) -> list[str]:
    return [*DISTILL, "--set", f"engine.data.source={_write(d / name, content)}"]


def _config(d: Path, content: str | bytes) -> list[str]:
    return [*TRAIN, "--config", str(_write(d / "bad.yaml", content))]


# ---------------------------------------------------------------------------------------------- policies
class _Spaces(gym.Env[np.ndarray, np.ndarray]):
    """An env with given spaces, just to build and save an agent for them."""

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, True, {}


def _nano_observation_space() -> spaces.Box:
    """The observation space of the nano env in `mix` mode, without building the env."""
    from arkd_env.env import DEFAULT_FEATURES, FEATURES

    bounds = [*(FEATURES[f] for f in DEFAULT_FEATURES), (0.0, 1.0), (0.0, 1.0)]  # + w_fkl, w_rkl
    return spaces.Box(np.array([b[0] for b in bounds], dtype=np.float32),
                      np.array([b[1] for b in bounds], dtype=np.float32), dtype=np.float32)


def _policy(d: Path, observation_space: spaces.Box, action_space: spaces.Box) -> Path:
    from agents.registry import make_agent, save_agent

    model = make_agent("ppo", _Spaces(observation_space, action_space), hyperparams={"n_steps": 4, "batch_size": 4})
    return save_agent(model, d / "policy.zip")


def _other_observations(d: Path) -> tuple[list[str], list[str]]:
    path = _policy(d, spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (1,), np.float32))
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(path), "observation space mismatch"]


def _other_actions(d: Path) -> tuple[list[str], list[str]]:
    path = _policy(d, _nano_observation_space(), spaces.Box(-1, 1, (4,), np.float32))
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(path), "action space mismatch"]


def _truncated_policy(d: Path) -> tuple[list[str], list[str]]:
    path = _policy(d, _nano_observation_space(), spaces.Box(-1, 1, (1,), np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(path), "damaged or truncated"]


def _corrupt_policy_entry(d: Path) -> tuple[list[str], list[str]]:
    """A well-formed zip whose policy weights are garbage."""
    good = _policy(d, _nano_observation_space(), spaces.Box(-1, 1, (1,), np.float32))
    path = d / "corrupt.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"\x80\x02garbage" if item.filename == "policy.pth" else data)
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(path), "not a readable saved policy"]


def _truncated_parquet(d: Path) -> tuple[list[str], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = d / "whole.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"], "response": ["c", "d"]}), whole)
    cut = _write(d / "cut.parquet", whole.read_bytes()[: whole.stat().st_size // 2])
    return ([*DISTILL, "--set", f"engine.data.source={cut}"], ["cut.parquet", "not a readable Parquet file"])


def _policy_record_a_list(d: Path) -> tuple[list[str], list[str]]:
    from agents.registry import META_FILE

    good = _policy(d, _nano_observation_space(), spaces.Box(-1, 1, (1,), np.float32))
    path = d / "listed.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            target.writestr(item, "[1, 2]" if item.filename == META_FILE else source.read(item))
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(path), f"{META_FILE} must be a mapping"]


def _policy_config_wrong_type(d: Path) -> tuple[list[str], list[str]]:
    path = _policy(d, _nano_observation_space(), spaces.Box(-1, 1, (1,), np.float32))
    _write(d / "config.yaml", "env:\n  probe_updates: many\n")
    return ["distill", "--preset", "nano", "--policy", str(path)], [str(d / "config.yaml"), "env.probe_updates"]


def _student_weights_a_pickle(d: Path) -> tuple[list[str], list[str]]:
    """A model folder whose ``pytorch_model.bin`` is a pickle that would make a folder if it were unpickled."""
    from transformers import LlamaConfig

    folder = d / "student"
    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2).save_pretrained(folder)
    torch.save({"model.embed_tokens.weight": _MakesFolder(d / "ran")}, folder / "pytorch_model.bin")
    return ["evaluate", str(folder), "--preset", "nano"], [str(folder), "pickled objects other than tensors"]


class _MakesFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.path),)


# ---------------------------------------------------------------------------------------------- run folders
def _run_folder(d: Path, run_json: str = '{"format": 1}', config_extra: str = "") -> Path:
    from train.config import load_run_config

    run = d / "run"
    run.mkdir()
    overrides = [a for a in TINY[2:] if a != "--set"]
    cfg = load_run_config("nano", None, overrides)
    _write(run / "config.yaml", cfg.to_yaml() + config_extra)
    _write(run / "run.json", run_json)
    return run


def _corrupt_checkpoint(d: Path) -> tuple[list[str], list[str]]:
    run = _run_folder(d)
    step = run / "checkpoints" / "step_2"
    step.mkdir(parents=True)
    _write(step / "model.zip", b"PK\x03\x04 cut short")
    _write(step / "state.json", '{"num_timesteps": 2}')
    return ["train", "--resume", str(run)], [f"{step / 'model.zip'}", f"delete {step}"]


def _other_tokenizer_student(d: Path) -> tuple[list[str], list[str]]:
    """A Hugging Face student folder whose tokenizer is not the nano teacher's."""
    from arkd_env.assets.models import config_from_arch, random_model
    from arkd_env.assets.tokenizer import build_synthetic_tokenizer

    tokenizer = build_synthetic_tokenizer(["an entirely different vocabulary of words"])
    arch = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128}
    model = random_model(config_from_arch(arch, tokenizer=tokenizer))
    folder = d / "student"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return [*DISTILL, "--set", f"engine.student={{name_or_path: {folder}}}"], ["teacher and student tokenizers differ"]


def _hub_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


CASES: dict[str, Case] = {
    # config files and values
    "malformed-yaml": lambda d: (_config(d, "engine:\n  lr: [1, 2\n"), ["bad.yaml", "line 3", "malformed YAML"]),
    "yaml-not-a-mapping": lambda d: (_config(d, "- engine\n- env\n"), ["bad.yaml", "expected a mapping"]),
    "yaml-not-utf8": lambda d: (_config(d, b"engine:\n  lr: 1.0e-3 # \xff\xfe\n"), ["bad.yaml", "not UTF-8"]),
    "config-file-missing": lambda d: ([*TRAIN, "--config", str(d / "none.yaml")], ["none.yaml", "not found"]),
    "unknown-key-in-file": lambda d: (_config(d, "engine:\n  lr_typo: 0.1\n"), ["bad.yaml", "engine.lr_typo"]),
    "unknown-key-set": lambda _: ([*TRAIN, "--set", "env.horizn=3"], ["unknown key 'env.horizn'"]),
    "set-without-equals": lambda _: ([*TRAIN, "--set", "nokey"], ["'nokey'", "expected key=value"]),
    "unknown-section-set": lambda _: ([*TRAIN, "--set", "engin.lr=0.1"], ["unknown section 'engin'"]),
    "wrong-type-in-file": lambda d: (_config(d, "engine:\n  lr: fast\n"), ["bad.yaml", "engine.lr", "'fast'"]),
    "wrong-type-set": lambda _: ([*TRAIN, "--set", "env.horizon=abc"], ["env.horizon", "expected an integer"]),
    "wrong-type-set-number": lambda _: ([*TRAIN, "--set", "engine.lr=abc"], ["engine.lr: expected a number"]),
    "list-for-number": lambda _: ([*TRAIN, "--set", "engine.batch_size=[8]"], ["engine.batch_size", "[8]"]),
    # numbers that are not finite, seeds out of range, counts that could only hang
    "lr-infinite": lambda _: ([*TRAIN, "--set", "engine.lr=.inf"], ["engine.lr=inf", "finite"]),
    "reward-scale-nan": lambda _: ([*TRAIN, "--set", "env.reward_scale=.nan"], ["env.reward_scale=nan", "finite"]),
    "seed-negative": lambda _: ([*TRAIN, "--seed", "-1"], ["run.seed=-1", "a seed must lie in"]),
    "engine-seed-overflow": lambda _: ([*DISTILL, "--seed", str(2**40)], [f"seed={2**40}", "a seed must lie in"]),
    "seeds-absurd-count": lambda _: (["compare", "--preset", "nano", "--policies", "fkl", "--seeds", str(10**20)],
                                     ["--seeds", "a count of seeds must lie in"]),
    "num-examples-absurd": lambda _: ([*TRAIN, "--set", "engine.data.num_examples=1000000000000"],
                                      ["data.num_examples=1000000000000", "must lie in"]),
    "unknown-component": lambda _: ([*DISTILL, "--set", "engine.components=[fkl,nope]"],
                                    ["engine.components", "'nope'", "register_component"]),
    # config files that are not plain, small YAML mappings
    "yaml-duplicate-key": lambda d: (_config(d, "engine:\n  lr: 0.1\n  lr: 0.2\n"), ["bad.yaml", "duplicate key 'lr'"]),
    "yaml-nested-too-deeply": lambda d: (_config(d, "a: " + "[" * 20000 + "]" * 20000 + "\n"),
                                         ["bad.yaml", "nested too deeply"]),
    "config-is-a-fifo": lambda d: ([*TRAIN, "--config", _fifo(d / "cfg.yaml")], ["cfg.yaml", "not a regular file"]),
    "negative-lr": lambda _: ([*TRAIN, "--set", "engine.lr=-1e-3"], ["lr=-0.001", "must be > 0"]),
    "temperature-0": lambda _: ([*TRAIN, "--set", "engine.temperature=0"], ["temperature=0.0", "must be > 0"]),
    "horizon-0": lambda _: ([*TRAIN, "--set", "env.horizon=0"], ["horizon=0", "must be >= 1"]),
    "train-seed-is-eval-seed": lambda _: ([*TRAIN, "--set", "env.train_seeds=[3, 100]"],
                                          ["env.train_seeds=[3, 100]", "seed 100", "run.eval_seeds"]),
    "mu-1": lambda _: ([*TRAIN, "--set", "engine.akl_mu=1"], ["akl_mu=1.0", "(0, 1)"]),
    "mu-0": lambda _: ([*TRAIN, "--set", "engine.akl_mu=0"], ["akl_mu=0.0", "(0, 1)"]),
    "mu-negative": lambda _: ([*TRAIN, "--set", "engine.akl_mu=-0.5"], ["akl_mu=-0.5", "(0, 1)"]),
    "timesteps-0": lambda _: ([*TRAIN, "--timesteps", "0"], ["run.timesteps=0"]),
    "unknown-preset": lambda _: (["train", "--preset", "nope"], ["unknown preset 'nope'"]),
    "unknown-preset-path": lambda _: (["train", "--preset", "../../etc/passwd"], ["unknown preset"]),
    # command-line flags
    "unknown-flag": lambda _: (["train", "--presett", "nano"], ["unrecognized arguments", "--presett"]),
    "unknown-algorithm": lambda _: ([*TRAIN, "--algo", "dqnx"], ["unknown algorithm 'dqnx'"]),
    "box-only-algo-binary": lambda _: ([*TRAIN, "--algo", "sac", "--set", "env.action_mode=binary"],
                                       ["sac", "continuous (Box) actions", "env.action_mode=binary"]),
    "box-only-algo-grid": lambda _: ([*TRAIN, "--algo", "sac", "--set", "env.action_mode=grid"],
                                     ["sac", "continuous (Box) actions", "env.action_mode=grid"]),
    "discrete-only-algo-mix": lambda _: ([*TRAIN, "--algo", "dqn"], ["'dqn' needs Discrete actions", "mix"]),
    # refused before the run folder exists, so none is left behind
    "unknown-hyperparameter": lambda _: ([*TRAIN, "--algo", "ppo", "--set", "agent.hparams.n_stepz=3"],
                                         ["unknown hyperparameter 'n_stepz'", "n_steps"]),
    "hparam-not-finite": lambda _: ([*TRAIN, "--set", "agent.hparams.learning_rate=.nan"],
                                    ["agent.hparams.learning_rate=nan", "finite"]),
    "hparam-activation-unknown": lambda _: ([*TRAIN, "--set", "agent.hparams.policy_kwargs.activation_fn=nosuch:Act"],
                                            ["activation_fn='nosuch:Act'", "cannot import it"]),
    "hparam-refused-by-sb3": lambda _: ([*TRAIN, "--algo", "ppo", "--set", "agent.hparams.batch_size=1"],
                                        ["agent 'ppo'", "PPO refuses", "batch_size"]),
    "compare-seeds-are-train-seeds": lambda _: (["compare", "--preset", "nano", "--policies", "fkl", "--seeds", "3,4",
                                                 "--set", "env.train_seeds=[3, 4]"],
                                                ["--seeds: seed 3 is in env.train_seeds"]),
    "phases-repeat-overflow": lambda _: ([*DISTILL[:-1], "phases:0.5*99999999999999999999"],
                                         ["repeat count", "from 1 to 100000"]),
    "compare-seeds-not-numbers": lambda _: (["compare", "--preset", "nano", "--policies", "fkl", "--seeds", "x"],
                                            ["--seeds 'x'"]),
    # data files
    "data-missing": lambda d: ([*DISTILL, "--set", f"engine.data.source={d / 'nope.jsonl'}"],
                               ["nope.jsonl", "data file not found"]),
    "data-empty": lambda d: (_data(d, "empty.jsonl", ""), ["empty.jsonl", "empty data set"]),
    "data-blank": lambda d: (_data(d, "blank.jsonl", "\n  \n"), ["blank.jsonl", "empty data set"]),
    "data-folder": lambda d: ([*DISTILL, "--set", f"engine.data.source={d}"], [str(d), "is a folder"]),
    "jsonl-broken-line": lambda d: (_data(d, "broken.jsonl", '{"instruction": "a", "response": "b"}\n' * 2
                                          + '{"instruction": "a", "response"\n'),
                                    ["broken.jsonl", "line 3", "malformed JSON"]),
    "jsonl-missing-field": lambda d: (_data(d, "rows.jsonl", '{"instruction": "a", "response": "b"}\n'
                                            '{"instruction": "c"}\n'),
                                      ["rows.jsonl", "line 2", "missing field 'response'"]),
    "parquet-truncated": _truncated_parquet,
    "csv-ragged-row": lambda d: (_data(d, "ragged.csv", "instruction,response\na,b\nc,d,e\n"),
                                 ["ragged.csv", "line 3", "3 fields, but the header has 2"]),
    "jsonl-not-utf8": lambda d: (_data(d, "latin.jsonl", b'{"instruction": "caf\xe9", "response": "b"}\n'),
                                 ["latin.jsonl", "not UTF-8", "byte offset 20"]),
    # models, policies and run folders
    "tokenizers-differ": _other_tokenizer_student,
    "policy-other-observations": _other_observations,
    "policy-other-actions": _other_actions,
    "policy-truncated": _truncated_policy,
    "policy-corrupt-entry": _corrupt_policy_entry,
    "policy-record-a-list": _policy_record_a_list,
    "policy-config-wrong-type": _policy_config_wrong_type,
    "student-weights-a-pickle": _student_weights_a_pickle,
    "policy-missing": lambda d: (["distill", "--preset", "nano", "--policy", str(d / "p.zip")],
                                 ["p.zip", "no such policy file"]),
    "policy-baseline-misspelt": lambda _: (["distill", "--preset", "nano", "--policy", "phase:0.2/1"],
                                           ["phase:0.2/1", "not a baseline: fkl, rkl, fixed:<alpha>, "
                                            "linear:<a>-><b>, cosine, phases:<a>/<b>/..."]),
    "policy-alpha-out-of-range": lambda _: (["distill", "--preset", "nano", "--policy", "fixed:1.5"],
                                            ["must lie in [0, 1]"]),
    "policy-linear-one-value": lambda _: (["distill", "--preset", "nano", "--policy", "linear:1"],
                                          ["expected linear:<a>-><b>"]),
    "compare-policy-missing": lambda d: (["compare", "--preset", "nano", "--policies", f"fkl,{d / 'nope.zip'}"],
                                         [f"{d / 'nope.zip'}: no such policy file"]),
    "checkpoint-corrupt": _corrupt_checkpoint,
    "run-folder-newer-format": lambda d: (["train", "--resume", str(_run_folder(d, '{"format": 99}'))],
                                          ["run folder format 99", "this ARKD reads 1"]),
    "run-folder-bad-run-json": lambda d: (["train", "--resume", str(_run_folder(d, '{"format": '))],
                                          ["run.json", "not valid JSON"]),
    "run-folder-config-from-other-version": lambda d: (
        ["train", "--resume", str(_run_folder(d, config_extra="added_later: {x: 1}\n"))],
        ["config.yaml", "unknown key 'added_later'"]),
    # a run folder knows its kind: no command writes over another command's run
    "resume-a-distill-folder": lambda d: (
        ["train", "--resume", str(_run_folder(d, '{"format": 1, "kind": "distill"}'))],
        ["not a folder of `arkd train`"]),
    "distill-out-into-a-train-run": lambda d: ([*DISTILL, "--out", str(_run_folder(d))],
                                               ["holds an `arkd train` run", "--out"]),
    "run-folder-missing": lambda d: (["train", "--resume", str(d / "gone")], ["gone", "run folder not found"]),
    "resume-changes-settings": lambda d: (["train", "--resume", str(_run_folder(d)), "--algo", "sac"],
                                          ["agent.algo would change from 'ppo' to 'sac'",
                                           "only --timesteps may change"]),
    "student-not-a-model": lambda d: (["evaluate", str(d), "--preset", "nano"], [str(d), "no config.json"]),
    "student-folder-missing": lambda d: (["evaluate", str(d / "gone"), "--preset", "nano"],
                                         ["gone", "student folder not found"]),
    # devices
    "device-unknown": lambda _: ([*TRAIN, "--set", "engine.device=tpu"], ["device='tpu'"]),
    "device-missing-engine": lambda _: ([*TRAIN, "--set", "engine.device=cuda:7"], ["engine.device='cuda:7'"]),
    "device-missing-agent": lambda _: ([*TRAIN, "--set", "agent.device=cuda:7"], ["agent.device='cuda:7'"]),
    "device-missing-distill": lambda _: ([*DISTILL, "--set", "engine.device=cuda:7"], ["device='cuda:7'"]),
    # what is absent offline
    "preset-models-absent-offline": lambda _: (["distill", "--preset", "gpt2-dolly", "--policy", "fkl"],
                                               ["'gpt2-xl'", "HF_HUB_OFFLINE=1", "pass a local folder"]),
    "hub-data-absent-offline": lambda _: ([*DISTILL, "--set", "engine.data.source=someone/absent-data"],
                                          ["'someone/absent-data'", "give a local file"]),
    "data-package-absent": lambda _: ([*DISTILL, "--set", "engine.data.source=chitchat"],
                                      ["chitchat-dataset", "pip install"]),
}


def _hide_package(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = importlib.util.find_spec

    def find_spec(fullname: str, package: str | None = None) -> Any:
        return None if fullname == name else real(fullname, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _exit_status(argv: list[str]) -> int:
    """``main(argv)``, or the status of the SystemExit that argparse raises for a bad flag."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    if case.startswith("device-missing") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if case == "preset-models-absent-offline" and _hub_cached("gpt2-xl"):
        pytest.skip("gpt2-xl is in the local hub cache")
    if case == "data-package-absent":
        _hide_package(monkeypatch, "chitchat_dataset")
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    argv, fragments = CASES[case](inputs)
    assert fragments, "a case must name what its error line holds"
    before = sorted(inputs.rglob("*"))
    if argv[0] != "evaluate":
        argv = [*argv, "--output-dir", str(out)]
    capsys.readouterr()
    assert _exit_status(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists(), sorted(out.rglob("*"))  # no run folder, not even the output folder
    assert sorted(inputs.rglob("*")) == before  # the user's own files and run folders are left as they were


@pytest.mark.slow
@pytest.mark.parametrize("case", ["jsonl-broken-line", "run-folder-newer-format", "policy-linear-one-value"])
def test_bad_input_in_a_subprocess(case: str, tmp_path: Path) -> None:
    """The real `arkd` process: exit status 2, one line, no traceback, no output folder."""
    argv, fragments = CASES[case](tmp_path)
    done = arkd(*argv, "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert all(f in line for f in fragments), line
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """With --debug a bad input is not turned into one line: the exception itself comes out."""
    with pytest.raises(ValueError, match="unknown algorithm 'dqnx'"):
        main([*TRAIN, "--algo", "dqnx", "--debug"])


# ---------------------------------------------------------------------------------------------- actions
@pytest.fixture(scope="module")
def envs() -> dict[str, Any]:
    from _nano import nano_env

    built = {mode: nano_env(mode) for mode in ("mix", "binary", "head_tail")}
    for env in built.values():
        env.reset(seed=0)
    return built


@pytest.mark.parametrize(("mode", "action", "fragment"), [
    ("mix", np.array([np.nan], dtype=np.float32), "NaN/inf"),
    ("mix", np.array([np.inf], dtype=np.float32), "NaN/inf"),
    ("mix", np.array([-np.inf], dtype=np.float32), "NaN/inf"),
    ("head_tail", np.array([0.1, np.nan, 0.2, 0.3], dtype=np.float32), "NaN/inf"),
    ("mix", np.zeros(3, dtype=np.float32), "shape (3,)"),
    ("head_tail", np.zeros((2, 2, 2), dtype=np.float32), "shape (2, 2, 2)"),
    ("binary", 2, "Discrete(2)"),
    ("binary", 0.5, "Discrete(2)"),
    ("binary", float("nan"), "Discrete(2)"),
    ("binary", np.array([0, 1]), "Discrete(2)"),
    ("mix", "0.5", "expected numbers"),
    ("mix", {"fkl": 1.0}, "expected numbers"),
    ("mix", np.array([0.5 + 0j]), "expected real numbers"),
    ("binary", "1", "expected numbers"),
])
def test_bad_action_is_refused_and_changes_nothing(envs: dict[str, Any], mode: str, action: Any,
                                                   fragment: str) -> None:
    env = envs[mode].unwrapped
    before = {k: v.clone() for k, v in env.distiller.student.state_dict().items()}
    updates = env.distiller.updates
    with pytest.raises(ValueError, match="action") as raised:
        env.step(action)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert env.distiller.updates == updates
    after = env.distiller.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_reset_options_and_env_arguments_name_the_argument(envs: dict[str, Any]) -> None:
    import gymnasium as gym

    from arkd_env.config import ConfigError

    env = envs["mix"].unwrapped
    with pytest.raises(TypeError, match=r"reset\(options='x'\): options must be a mapping"):
        env.reset(options="x")
    with pytest.raises(ValueError, match="unknown option 'engine_sed'"):
        env.reset(options={"engine_sed": 1})
    with pytest.raises(ValueError, match=r"'engine_seed': 4294967296\}\): the engine seed must be an int in \[0, "):
        env.reset(options={"engine_seed": 2**32})  # numpy's seeding, which SB3 uses, would fail on it later
    with pytest.raises(ConfigError, match=r"env.reward_scale=nan: must be a finite number"):
        gym.make("arkd_env/Distill-v0", preset="nano", reward_scale=float("nan"))


def test_out_of_range_finite_actions_are_clipped(envs: dict[str, Any]) -> None:
    env = envs["mix"].unwrapped
    assert env.action_to_weights(np.array([7.0])) == {"fkl": 1.0, "rkl": 0.0}
    assert env.action_to_weights(np.array([-7.0])) == {"fkl": 0.0, "rkl": 1.0}



# ---------------------------------------------------------------------------------------------- clean-up rules
def test_a_failed_command_removes_only_what_it_made(tmp_path: Path) -> None:
    from train import runs

    kept = tmp_path / "existing"
    kept.mkdir()
    with pytest.raises(ValueError, match="bad input"), runs.removed_on_error():
        fresh = runs.create_run_dir(tmp_path / "new" / "runs", "nano", "ppo", 0)
        resumable = runs.create_run_dir(kept, "nano", "ppo", 1)
        (resumable / "checkpoints" / "step_2").mkdir(parents=True)
        for name in ("model.zip", "state.json"):
            (resumable / "checkpoints" / "step_2" / name).write_text("x")
        (fresh / "config.yaml").write_text("x")  # written by every command before any work: not a result
        (fresh / "tb").mkdir()
        (fresh / "tb" / "events").write_text("x")
        finished = runs.create_run_dir(kept, "compare", "nano", 3)
        (finished / "runs" / "fkl").mkdir(parents=True)
        (finished / "runs" / "fkl" / "seed_100.json").write_text("{}")
        out = runs.make_out_dir(tmp_path / "a" / "b")
        assert runs.make_out_dir(kept) == kept  # already there: not the command's to remove
        raise ValueError("bad input")
    assert not fresh.exists() and not (tmp_path / "new").exists() and not out.exists()
    assert not (tmp_path / "a").exists()
    assert resumable.is_dir() and kept.is_dir()  # a run with a checkpoint can still be resumed
    assert (finished / "runs" / "fkl" / "seed_100.json").is_file()  # a late failure keeps finished results


def test_an_interrupt_keeps_the_run_folder(tmp_path: Path) -> None:
    from train import runs
    from train.errors import Interrupted

    with pytest.raises(Interrupted), runs.removed_on_error():
        folder = runs.create_run_dir(tmp_path, "nano", "ppo", 0)
        raise Interrupted(folder, None)
    assert folder.is_dir()


def test_an_empty_output_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _exit_status([*TRAIN, "--output-dir", ""]) == 2
    assert "run.output_dir=''" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []

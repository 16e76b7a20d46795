"""Online runs (train/online.py): every agent learns inside one distillation run, the run folder holds what it did,
probe updates count in the cost, the prototype runs on its own terms, and a run killed mid-way and resumed ends
exactly as one never stopped."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _cli_helpers import TINY, arkd, popen
from safetensors.torch import load_file

from agents.registry import load_agent
from train import checkpoints, online
from train.cli import main
from train.config import RunConfig, load_run_config

HORIZON = 8
ALGOS = {"ppo": [], "sac": [], "reinforce": [], "prototype": [], "bandit": ["env.action_mode=grid"]}
# What each agent logs when it learns: losses, entropy, the rewards it learned from.
LEARNING_KEYS = {"ppo": ("train/policy_gradient_loss", "train/entropy_loss"),
                 "sac": ("train/actor_loss", "train/ent_coef"),
                 "reinforce": ("train/policy_loss", "train/entropy"),
                 "prototype": ("train/policy_loss", "train/entropy"),
                 "bandit": ("bandit/reward", "bandit/chosen_arm")}


def nano(*overrides: str) -> RunConfig:
    return load_run_config("nano", None, [f"env.horizon={HORIZON}", "env.updates_per_step=1",
                                          "engine.rouge_size=2", "engine.eval_size=8", *overrides])


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def parameters(model: Any) -> np.ndarray:
    """Everything the agent has learned, flattened: network weights, or a bandit's arm statistics."""
    if hasattr(model, "policy"):
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()]).numpy()
    return np.concatenate([model.stats.counts, model.stats.sums])


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_the_agent_learns_during_the_one_run_and_the_folder_holds_it(algo: str, tmp_path: Path) -> None:
    cfg = nano(*ALGOS[algo])
    before = parameters(online.new_agent(cfg, algo, online.build_env(cfg, algo, 0)))
    out = folder(tmp_path / algo)
    result = online.run_online(cfg, algo, 0, out)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["complete"] and saved["online"] == algo
    assert [s["step"] for s in saved["steps"]] == list(range(HORIZON + 1))  # one episode: the whole run
    assert all(math.isclose(sum(s["weights"].values()), 1.0) for s in saved["steps"][1:])
    assert saved["metrics"]["student_updates"] == HORIZON  # no probes: one update per step
    assert saved["metrics"] == {"episode_return": result.episode_return,  # NaN metrics are saved as null
                                **{k: v if math.isfinite(v) else None for k, v in result.metrics.items()}}
    logged = {key for row in saved["agent_log"] for key in row}
    assert set(LEARNING_KEYS[algo]) <= logged, logged
    after = parameters(load_agent(out / "policy.zip"))
    assert after.shape == before.shape and not np.allclose(after, before)  # it learned inside the run
    assert (out / "student" / "config.json").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*")) and list((out / "tb" / "agent").glob("events.*"))
    assert (out / "plots" / "weights.png").is_file()


def test_probe_updates_count_in_the_cost(tmp_path: Path) -> None:
    # The relative reward runs one step's updates with the reference weighting from the same state, then undoes them.
    cfg = nano("env.reward=relative", "online.reward=env")
    result = online.run_online(cfg, "reinforce", 0, folder(tmp_path / "relative"))
    assert result.metrics["student_updates"] == 2 * HORIZON
    assert [s["reward"] for s in result.steps[1:]] == [s["env_reward"] for s in result.steps[1:]]


def test_prototype_plays_pure_fkl_or_rkl_on_its_features_for_rouge_every_k_steps(tmp_path: Path) -> None:
    out = folder(tmp_path / "prototype")
    result = online.run_online(nano("online.reward_every=4"), "prototype", 0, out)
    played = load_run_config(config_file=out / "config.yaml")
    assert played.env.action_mode == "binary" and tuple(played.env.features) == online.PROTOTYPE_FEATURES
    steps = result.steps[1:]
    assert all(s["weights"] in ({"fkl": 1.0, "rkl": 0.0}, {"fkl": 0.0, "rkl": 1.0}) for s in steps)
    paid = [s["step"] for s in steps if "checkpoint_rouge_l" in s]
    assert paid == [4, 8]
    for s in steps:
        expected = s["checkpoint_rouge_l"] / 100 - 0.5 if s["step"] in paid else 0.0
        assert s["reward"] == pytest.approx(expected)
    agent = load_agent(out / "policy.zip")
    assert agent.reward_every == 4 and agent.n_steps_per_update == 20  # an update every 5 rewards


def same(a: dict[str, float | None], b: dict[str, float | None]) -> bool:
    """Equal metrics, counting NaN (null once saved) as equal to itself."""
    def missing(v: float | None) -> bool:
        return v is None or math.isnan(v)

    return a.keys() == b.keys() and all(a[k] == b[k] or (missing(a[k]) and missing(b[k])) for k in a)


class Killed(Exception):
    pass


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_end(algo: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = nano(*ALGOS[algo])
    whole = online.run_online(cfg, algo, 0, folder(tmp_path / "whole"))

    save = online.save_checkpoint
    saved: list[Path] = []

    def dies_before_the_second(*args: Any, **kwargs: Any) -> Path:
        if saved:  # the steps since the first checkpoint are lost with the process
            raise Killed
        saved.append(save(*args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(online, "save_checkpoint", dies_before_the_second)
    run = folder(tmp_path / "killed")
    with pytest.raises(Killed):
        online.run_online(cfg, algo, 0, run)
    monkeypatch.setattr(online, "save_checkpoint", save)
    assert not (run / "student").exists() and checkpoints.latest(run) == saved[0]
    resumed = online.run_online(cfg, algo, 0, run, resume=True)

    assert [s["weights"] for s in resumed.steps] == [s["weights"] for s in whole.steps]
    assert [s["reward"] for s in resumed.steps] == [s["reward"] for s in whole.steps]
    assert same(resumed.metrics, whole.metrics), (resumed.metrics, whole.metrics)
    a, b = (load_file(str(d / "student" / "model.safetensors")) for d in (tmp_path / "whole", run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_and_resume_through_the_command(tmp_path: Path) -> None:
    flags = [*TINY, "--set", "env.horizon=12", "--online", "reinforce"]
    assert arkd("distill", *flags, "--out", str(tmp_path / "whole")).returncode == 0
    run = tmp_path / "killed"
    process = popen("distill", *flags, "--out", str(run))
    deadline = time.monotonic() + 300
    while not [s for s, _ in checkpoints.complete(run / "checkpoints") if s >= 4] and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{stderr}"
    assert not (run / "student").exists()
    done = arkd("distill", "--resume", str(run))
    assert done.returncode == 0, done.stderr
    whole, resumed = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "whole", run))
    assert resumed["complete"] and same(resumed["metrics"], whole["metrics"])
    assert [s["weights"] for s in resumed["steps"]] == [s["weights"] for s in whole["steps"]]


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_bad_online_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["distill", "--preset", "nano", "--out", str(tmp_path / "out")]
    assert "unknown online algorithm" in error_line([*base, "--online", "dqn"], capsys)
    assert "needs continuous (Box) actions" in error_line([*base, "--online", "sac", "--set",
                                                           "env.action_mode=grid"], capsys)
    assert "needs Discrete actions" in error_line([*base, "--online", "bandit"], capsys)
    policy = tmp_path / "policy.zip"
    policy.write_bytes(b"")
    assert "cannot be combined" in error_line([*base, "--online", "ppo", "--policy", str(policy)], capsys)
    assert "give --policy" in error_line(["distill", "--preset", "nano"], capsys)
    assert "not a whole number of PPO rollouts" in error_line([*base, "--online", "ppo", "--set", "env.horizon=6"],
                                                              capsys)
    assert "--set cannot be given" in error_line(["distill", "--resume", str(tmp_path), "--set", "env.horizon=2"],
                                                 capsys)
    (tmp_path / "config.yaml").write_text("preset: nano\n")
    assert "not an online distill run" in error_line(["distill", "--resume", str(tmp_path)], capsys)
    assert not (tmp_path / "out").exists()  # no refusal leaves a folder behind


@pytest.mark.parametrize("preset", ["gpt2-dolly", "qwen-dolly"])
def test_the_paper_presets_run_online_on_the_same_code_path(preset: str, tmp_path: Path) -> None:
    # The presets as they are, with tiny local models and a local file in place of the hub's (and a short run).
    from _local_models import gpt2_folder

    from arkd_env.assets.tokenizer import build_synthetic_tokenizer

    rows = [{"instruction": f"Repeat w{i}.", "context": "", "response": f"w{i} w{i}"} for i in range(24)]
    data = tmp_path / "dolly.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tok = build_synthetic_tokenizer([text for row in rows for text in row.values() if text])
    teacher = gpt2_folder(tmp_path / "teacher", tok, layers=2, width=32)
    student = gpt2_folder(tmp_path / "student", tok, layers=1, width=16)
    cfg = load_run_config(preset, None, [
        f"engine.teacher.name_or_path={teacher}", f"engine.student.name_or_path={student}",
        f"engine.data.source={data}", "engine.data.val_size=6", "engine.data.max_prompt_length=48",
        "engine.data.max_length=64", "engine.eval_size=4", "engine.test_size=2", "engine.batch_size=2",
        "engine.grad_accum=1", "engine.rouge_size=2", "engine.max_new_tokens=4", "engine.total_updates=8",
        "engine.warmup_updates=0", "engine.teacher_dtype=float32", "engine.device=cpu", "env.horizon=4"])
    assert cfg.env.updates_per_step == 100  # the preset's own step
    result = online.run_online(cfg, "reinforce", 0, folder(tmp_path / "run"))
    assert len(result.steps) == 5 and result.metrics["student_updates"] == 4 * 100
    assert (tmp_path / "run" / "student" / "config.json").is_file()


def test_a_run_that_ends_early_stops_its_agent_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every step leaves non-finite weights (and is undone): two in a row end the episode at step 2, inside
    # PPO's first rollout of 4 steps, which must not step on.
    from arkd_env.engine import Distiller

    monkeypatch.setattr(Distiller, "parameters_finite", lambda self: False)
    result = online.run_online(nano("env.max_consecutive_failures=2"), "ppo", 0, folder(tmp_path / "run"))
    assert [s["step"] for s in result.steps] == [0, 1, 2] and result.steps[-1]["done"]
    assert math.isfinite(result.metrics["val_divergence"])


def test_a_new_run_in_an_old_runs_folder_never_resumes_the_old_one(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = folder(tmp_path / "run")
    online.run_online(nano(), "sac", 0, run)
    assert checkpoints.latest(run) is not None
    save = online.save_checkpoint

    def dies_after_the_first(*args: Any, **kwargs: Any) -> Path:
        save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(online, "save_checkpoint", dies_after_the_first)
    with pytest.raises(Killed):
        online.run_online(nano(), "ppo", 0, run)
    assert [step for step, _ in checkpoints.complete(run / "checkpoints")] == [4]  # PPO's first rollout only
    assert json.loads((run / "online.json").read_text())["online"] == "ppo"
    # and a --policy run into it leaves nothing a --resume could take for its own
    from train.distill import distill

    monkeypatch.setattr(online, "save_checkpoint", save)
    distill(nano(), "fkl", 0, run)
    assert not (run / "checkpoints").exists() and not (run / "online.json").exists()


def test_resume_refuses_what_it_cannot_honour_and_dry_run_only_prints(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = folder(tmp_path / "run")
    online.run_online(nano(), "reinforce", 0, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "--teacher cannot be given" in error_line(["distill", "--resume", str(run), "--teacher", "x"], capsys)
    assert main(["distill", "--resume", str(run), "--dry-run"]) == 0
    assert "online:" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing ran
    assert "only the prototype's agent credits" in error_line(
        ["distill", "--preset", "nano", "--online", "reinforce", "--set", "online.reward=prototype"], capsys)

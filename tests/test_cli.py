"""The `arkd` command end to end on a shrunken nano preset (subprocesses, as CleanRL tests its scripts).

One `arkd train` run is shared by the module: its folder layout, TensorBoard tags and checkpoints are
checked, and its policy is then distilled, evaluated and compared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _cli_helpers import TINY, TINY_PPO, arkd, one_error_line
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from arkd_env.config import read_yaml
from tests._local_models import chat_tokenizer, gpt2_folder
from train.cli import main
from train.runs import sanitize

pytestmark = pytest.mark.slow

SCALAR_TAGS = ["env/reward", "env/weight/fkl", "env/weight/rkl", "env/val/val_divergence", "env/val/val_fkl",
               "env/loss", "rollout/ep_rew_mean", "train/loss"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    done = arkd("train", *TINY, *TINY_PPO, "--timesteps", "4", "--seed", "1", "--output-dir", str(out),
                "--set", "run.reference_policies=[fkl]")
    assert done.returncode == 0, done.stderr
    (folder,) = out.iterdir()
    assert folder.name.startswith("nano__ppo__1__")
    assert f"run folder: {folder}" in done.stdout
    return folder


def test_train_writes_a_complete_run_folder(run_dir: Path) -> None:
    for name in ("config.yaml", "run.json", "policy.zip", "metrics.json", "learning_curve.csv",
                 "plots/learning_curve.png", "plots/weights.png", "plots/validation.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_timesteps"] == 4 and metrics["episodes"] == 2
    assert set(metrics["reference_returns"]) == {"fkl"}
    assert math.isfinite(metrics["final_episode"]["val_divergence"])
    # The saved config reproduces the run's settings.
    dry = arkd("train", "--config", str(run_dir / "config.yaml"), "--dry-run")
    assert dry.returncode == 0 and dry.stdout == (run_dir / "config.yaml").read_text()


def test_tensorboard_has_documented_tags(run_dir: Path) -> None:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    missing = [t for t in SCALAR_TAGS if t not in tags["scalars"]]
    assert not missing
    # A divergence is logged when it carried weight in the step (a weight of exactly 0 skips it).
    assert {"env/divergence/fkl", "env/divergence/rkl"} & set(tags["scalars"])
    assert "rollout/actions" in tags["histograms"]
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    steps = [e.step for e in acc.Scalars("env/weight/fkl")]
    assert steps == [1, 2, 3, 4]  # one point per env step
    assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars("env/weight/fkl"))


def test_every_checkpoint_loads(run_dir: Path) -> None:
    from agents.registry import load_agent

    folders = sorted((run_dir / "checkpoints").iterdir())
    assert [f.name for f in folders] == ["step_2", "step_4"]
    for folder in folders:
        model = load_agent(folder / "model.zip")
        assert model.num_timesteps == json.loads((folder / "state.json").read_text())["num_timesteps"]


def test_distill_evaluate_and_space_mismatch(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "distilled"
    done = arkd("distill", "--policy", str(run_dir / "policy.zip"), *TINY, "--seed", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "student" / "config.json").is_file() and (out / "student" / "tokenizer.json").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert len(saved["steps"]) == 3 and saved["seed"] == 3
    assert {"rouge_l", "exact_match", "tail_coverage", "val_divergence"} <= set(saved["metrics"])
    # Evaluating the saved student on the same preset and seed reproduces the distill metrics.
    assert main(["evaluate", str(out / "student"), *TINY, "--set", "engine.seed=3"]) == 0
    evaluated = json.loads((out / "evaluation.json").read_text())["metrics"]
    for key in ("val_fkl", "val_rkl", "val_ce", "rouge_l"):
        assert evaluated[key] == pytest.approx(saved["metrics"][key], rel=1e-5), key
    capsys.readouterr()
    # A policy trained on the mix action space cannot drive a head_tail env: in its run folder it is played
    # with its run's own settings, but a bare policy file brings none.
    bare = tmp_path / "bare" / "policy.zip"
    bare.parent.mkdir()
    bare.write_bytes((run_dir / "policy.zip").read_bytes())
    code = main(["distill", "--policy", str(bare), *TINY, "--set", "env.action_mode=head_tail",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "action_mode: the policy was trained with 'mix', this one has 'head_tail'" in one_error_line(
        capsys.readouterr().err)
    # From its run folder the same --set is replaced by the policy's own setting, said so, and recorded.
    code = main(["distill", "--policy", str(run_dir), *TINY, "--set", "env.action_mode=head_tail",
                 "--out", str(tmp_path / "y")])
    assert code == 0
    assert "env.action_mode='mix' (not 'head_tail')" in capsys.readouterr().err
    assert "action_mode: mix" in (tmp_path / "y" / "config.yaml").read_text()


def test_compare_table_equals_metrics_json(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "--policies", f"linear:1->0,{run_dir / 'policy.zip'}", "--seeds", "2", *TINY,
                 "--output-dir", str(tmp_path)])
    assert code == 0
    (out,) = [p for p in tmp_path.iterdir() if p.name.startswith("compare__nano__2__")]
    table = json.loads((out / "table.json").read_text())
    assert table["seeds"] == [100, 101] and table["policies"] == ["linear:1->0", run_dir.name]
    for policy in table["policies"]:
        folder = out / "runs" / sanitize(policy)
        runs = [json.loads((folder / f"seed_{s}.json").read_text())["metrics"] for s in (100, 101)]
        for metric, cell in table["rows"][policy].items():
            values = [r[metric] for r in runs if r[metric] is not None]
            if values:
                assert cell["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12), (policy, metric)
    # nano's reference policies (fkl, rkl) are not in this table, so the first policy is the reference.
    assert table["references"] == ["linear:1->0"]
    diff = next(d for d in table["differences"] if d["metric"] == "val_divergence")
    assert diff["policy"] == run_dir.name and diff["n"] == 2
    per_seed = {p: [json.loads((out / "runs" / sanitize(p) / f"seed_{s}.json").read_text())["metrics"]
                    ["val_divergence"] for s in (100, 101)] for p in table["policies"]}
    gaps = [a - b for a, b in zip(per_seed[run_dir.name], per_seed["linear:1->0"], strict=True)]
    assert diff["mean"] == pytest.approx(sum(gaps) / 2) and diff["low"] <= diff["mean"] <= diff["high"]
    markdown = (out / "table.md").read_text()
    assert f"| {run_dir.name} − linear:1->0 |" in markdown
    mean = table["rows"]["linear:1->0"]["val_divergence"]["mean"]
    assert f"{mean:.4g} ±" in markdown
    printed = capsys.readouterr().out  # the terminal gets the headline columns, the file every column
    header = next(line for line in printed.splitlines() if line.startswith("| policy | "))
    assert header.startswith("| policy | episode_return |") and "| val_divergence |" in header
    assert "val_fkl" in markdown and "val_fkl" not in printed and "more columns in table.md" in printed
    for name in ("table.csv", "plots/weights.png", "plots/validation.png"):
        assert (out / name).is_file()


def test_compare_in_worker_processes_matches_one_process(run_dir: Path, tmp_path: Path) -> None:
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"workers_{workers}"
        code = main(["compare", "--policies", f"fkl,{run_dir / 'policy.zip'}", "--seeds", "2", *TINY,
                     "--set", f"run.workers={workers}", "--output-dir", str(out)])
        assert code == 0
        (folder,) = out.iterdir()
        rows[workers] = json.loads((folder / "table.json").read_text())["rows"]
    assert list(rows[2]) == ["fkl", run_dir.name]
    for policy, row in rows[1].items():
        for metric, cell in row.items():
            parallel = rows[2][policy][metric]["mean"]
            assert parallel == (None if cell["mean"] is None else pytest.approx(cell["mean"], rel=1e-5)), metric


def test_demo_on_nano(tmp_path: Path) -> None:
    done = arkd("demo", *TINY, *TINY_PPO, "--timesteps", "2", "--output-dir", str(tmp_path),
                "--set", "run.policies=[fkl, akl]", "--set", "run.eval_seeds=[5, 6, 7]", "--seeds", "1")
    assert done.returncode == 0, done.stderr
    # the learning curve's reference lines are played (on one training seed), not dropped
    assert "playing fkl, rkl on training seed(s)" in done.stdout
    assert "| ppo (learned) |" in done.stdout and "| akl |" in done.stdout
    assert "| ppo (learned) − fkl |" in done.stdout and "(one seed, no interval)" in done.stdout
    assert "TensorBoard: tensorboard --logdir" in done.stdout
    (run,) = tmp_path.iterdir()
    assert (run / "compare" / "table.md").is_file() and (run / "plots" / "learning_curve.png").is_file()
    acc = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "comparison/table/text_summary" in acc.Tags()["tensors"]


def test_demo_compares_on_the_first_two_eval_seeds_and_checks_its_seeds_first(tmp_path: Path) -> None:
    done = arkd("demo", *TINY, "--set", "run.eval_seeds=[5, 6, 7]", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "held-out seeds [5, 6]" in done.stdout
    bad = arkd("demo", *TINY, "--seeds", "two", "--output-dir", str(tmp_path))
    assert bad.returncode != 0 and "--seeds 'two'" in one_error_line(bad.stderr)
    assert not any(tmp_path.iterdir())  # it stopped before preparing or training anything


def test_prepare_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    done = arkd("prepare", "--preset", "nano")
    assert done.returncode == 0 and "ready in" in done.stdout, done.stderr
    for command in ("prepare", "train", "distill", "evaluate", "compare", "demo"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0 and "example:" in capsys.readouterr().out, command


def test_arkds_own_warnings_survive_the_silenced_libraries() -> None:
    import warnings

    from arkd_env.vec.ray import ActorRestartWarning
    from train.cli import _configure_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _configure_warnings(debug=False)
        warnings.warn("a library's", DeprecationWarning, stacklevel=1)
        warnings.warn("env 0 replaced", ActorRestartWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["env 0 replaced"]


def test_distill_own_teacher_student_and_chat_data_from_nano(tmp_path: Path) -> None:
    chats = [{"messages": [{"role": "user", "content": f"Say w{i}."},
                           {"role": "assistant", "content": f"w{i} w{i}."}]} for i in range(24)]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chats))
    tok = chat_tokenizer([m["content"] for c in chats for m in c["messages"]])
    teacher = gpt2_folder(tmp_path / "teacher", tok, layers=2, width=32)
    student = gpt2_folder(tmp_path / "student", tok, layers=1, width=16)
    out = tmp_path / "out"
    code = main(["distill", "--policy", "fkl", *TINY, "--teacher", teacher, "--student", student, "--data",
                 str(data), "--set", "engine.data.val_size=4", "--set", "engine.eval_size=4", "--out", str(out)])
    assert code == 0
    saved = read_yaml(out / "config.yaml")
    assert saved["engine"]["teacher"]["name_or_path"] == teacher and saved["engine"]["data"]["format"] == "auto"
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["metrics"]["val_fkl"])
    assert (out / "student" / "config.json").is_file()

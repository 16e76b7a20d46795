"""`arkd distill` (one full distillation run driven by a policy) and `arkd evaluate` (a saved student)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from arkd_env.atomic import atomic_write_text
from train import checkpoints, plots
from train.compare import write_policy_run
from train.config import RunConfig, replace
from train.episode import EpisodeResult, check_played, play, played_config
from train.model_card import write_model_card
from train.runs import CONFIG_FILE, METRICS_FILE, ONLINE_FILE, locked, require_kind, write_json, write_run_info

STUDENT_DIR = "student"
TB_DIR = "tb"


def distill(cfg: RunConfig, spec: str, seed: int, out_dir: Path) -> EpisodeResult:
    """Run the episode, save the student (Hugging Face folder), metrics.json, config, plots and TensorBoard
    events (``tb/``, the tags of one policy's run in `arkd compare`)."""
    check_played(cfg, spec)
    require_kind(out_dir, "distill", "--out")
    with locked(out_dir):
        write_run_info(out_dir, "distill")
        result, env = play(cfg, spec, seed)
        try:
            env.unwrapped.distiller.save_student(out_dir / STUDENT_DIR)
        finally:
            env.close()
        played = replace(played_config(cfg, spec), engine={"seed": seed})  # the settings it ran with
        write_model_card(out_dir / STUDENT_DIR, played, result.policy,
                         f"arkd distill --policy {spec} --config config.yaml", result.steps, result.metrics)
        atomic_write_text(out_dir / CONFIG_FILE, played.to_yaml())
        write_json(out_dir / METRICS_FILE, result.summary())
        plots.weight_trajectories({result.policy: [result.steps]}, out_dir / "plots" / "weights.png")
        plots.validation_curves({result.policy: [result.steps]}, out_dir / "plots" / "validation.png")
        # A distill into an existing folder replaces its run; old events would draw a second line under each tag.
        shutil.rmtree(out_dir / TB_DIR, ignore_errors=True)
        write_policy_run([result], out_dir / TB_DIR)
        # An online run this one replaces leaves nothing a --resume could take for this run's.
        shutil.rmtree(checkpoints.checkpoint_root(out_dir), ignore_errors=True)
        (out_dir / ONLINE_FILE).unlink(missing_ok=True)
    return result


def _embedding_rows(model: Any) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def evaluate_student(cfg: RunConfig, student_dir: Path) -> dict[str, float]:
    """Validation divergences to the preset's teacher and generation metrics of a saved student."""
    from arkd_env.assets import models
    from arkd_env.assets.build import load_assets
    from arkd_env.engine import Distiller
    from train.suite import load_student

    if not student_dir.is_dir():
        raise FileNotFoundError(f"{student_dir}: student folder not found")
    if not (student_dir / "config.json").is_file():
        raise FileNotFoundError(f"{student_dir}: not a Hugging Face model folder (no config.json)")
    device = models.pick_device(cfg.engine.device, key="engine.device")
    student = load_student(student_dir, device)  # a bad student folder fails before the teacher is loaded
    assets = load_assets(cfg.engine, device)
    rows = _embedding_rows(student)
    if rows < assets.vocab_size:
        raise ValueError(f"{student_dir}: the student has {rows} token embeddings but preset "
                         f"{cfg.preset!r} uses a vocabulary of {assets.vocab_size}; evaluate it with the "
                         "preset it was distilled on")
    if (student_dir / "tokenizer.json").is_file() or (student_dir / "tokenizer_config.json").is_file():
        models.check_tokenizers(assets.tokenizer, models.load_tokenizer(str(student_dir)))
    distiller = Distiller(cfg.engine, dataclasses.replace(assets, student=student), device=device)
    return {k: float(v) for k, v in distiller.evaluate(generate=True, held_out=True).items()}

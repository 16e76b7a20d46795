"""DistillationMixin inside TRL's SFTTrainer: TRL's own tokenisation, masks and collator, ARKD's loss and weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _local_models import chat_tokenizer
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel
from trl import SFTConfig, SFTTrainer

from train.hf import DistillationMixin, WeightingCallback, distillation_loss

ROWS = [{"prompt": f"add {a} and {b} :", "completion": f" {a + b}"} for a in range(3) for b in range(3)]


class ARKDSFTTrainer(DistillationMixin, SFTTrainer):
    pass


def _gpt2(tokenizer: object, width: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=1, n_head=2,  # type: ignore[arg-type]
                                      n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def test_sft_trainer_distils_on_the_completions_with_a_schedule(tmp_path: Path) -> None:
    tokenizer = chat_tokenizer([f"{r['prompt']} {r['completion']}" for r in ROWS])
    args = SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=len(ROWS), learning_rate=1e-2,
                     logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                     max_length=32, seed=0)
    callback = WeightingCallback("linear:1->0", every=1)
    trainer = ARKDSFTTrainer(model=_gpt2(tokenizer, 16, 1), teacher_model=_gpt2(tokenizer, 32, 2), args=args,
                             train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer, callbacks=[callback])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])  # the one batch
    prompt_ids = tokenizer(ROWS[0]["prompt"])["input_ids"]
    # TRL's collator puts the loss on the completion only: the prompt's positions carry -100.
    assert (batch["labels"][0, : len(prompt_ids)] == -100).all() and (batch["labels"][0] != -100).any()
    with torch.no_grad():
        expected, _ = distillation_loss(trainer.model(input_ids=batch["input_ids"]).logits,
                                        trainer.teacher_model(input_ids=batch["input_ids"]).logits,
                                        batch["labels"], {"fkl": 1.0, "rkl": 0.0})
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["arkd/w_fkl"] for entry in logged] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert logged[0]["loss"] == pytest.approx(float(expected), rel=1e-4)  # step 0 is pure FKL from the start

"""Tiny local models and data for the transformers Trainer tests (import from tests/, not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

VOCAB = 40
LENGTH = 10


def tiny_llama(seed: int, hidden: int = 16) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config)


def tiny_rows(n: int = 4) -> Dataset:
    """Rows of equal length whose first three tokens are a prompt without loss (-100), as TRL's collators mark."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (LENGTH,), generator=generator).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * LENGTH, "labels": [-100] * 3 + ids[3:]})
    return Dataset.from_list(rows)


def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {key: torch.tensor([row[key] for row in rows]) for key in ("input_ids", "attention_mask", "labels")}


def tiny_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    values: dict[str, Any] = {"output_dir": str(output_dir), "max_steps": 6, "per_device_train_batch_size": 4,
                              "learning_rate": 1e-2, "logging_steps": 1, "report_to": [], "use_cpu": True,
                              "save_strategy": "no", "disable_tqdm": True, "seed": 0, "lr_scheduler_type": "constant"}
    return TrainingArguments(**{**values, **overrides})

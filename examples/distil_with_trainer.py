"""Distil a teacher into a student with transformers' Trainer, ARKD's loss and a weighting policy.

    python examples/distil_with_trainer.py --teacher TEACHER --student STUDENT --data rows.jsonl \
        --policy linear:1->0 --output-dir runs/hf-student

``--data`` holds prompt/completion rows (``{"prompt": ..., "completion": ...}``); the loss is on the completion.
``--policy`` is a baseline spec or a policy.zip that ``arkd train`` saved. Teacher and student share a tokenizer.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from train.hf import ARKDTrainer, WeightingCallback


def tokenize(tokenizer: Any, max_length: int) -> Any:
    def encode(row: dict[str, str]) -> dict[str, list[int]]:
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + completion)[:max_length]
        return {"input_ids": ids, "labels": ([-100] * len(prompt) + completion)[:max_length]}
    return encode


def pad(pad_id: int) -> Any:
    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return {"input_ids": padded("input_ids", pad_id), "labels": padded("labels", -100), "attention_mask": mask}
    return collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--data", required=True, help="JSON/JSONL file of prompt/completion rows")
    parser.add_argument("--policy", default="linear:1->0", help="baseline spec or path of a policy.zip")
    parser.add_argument("--every", type=int, default=10, help="optimizer steps between two weighting decisions")
    parser.add_argument("--output-dir", default="runs/hf-student")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = load_dataset("json", data_files=args.data, split="train")
    data = rows.map(tokenize(tokenizer, args.max_length), remove_columns=rows.column_names)
    trainer = ARKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.student),
        teacher_model=AutoModelForCausalLM.from_pretrained(args.teacher),
        args=TrainingArguments(output_dir=args.output_dir, max_steps=args.max_steps, logging_steps=args.every,
                               per_device_train_batch_size=8, learning_rate=5e-5, save_steps=args.every * 10,
                               report_to="tensorboard"),
        train_dataset=data, data_collator=pad(pad_id),
        callbacks=[WeightingCallback(args.policy, every=args.every)],
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()

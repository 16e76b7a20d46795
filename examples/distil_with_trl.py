"""The same distillation inside TRL's SFTTrainer, which reads prompt/completion and messages rows itself.

    python examples/distil_with_trl.py --teacher TEACHER --student STUDENT --data chats.jsonl --policy cosine

TRL tokenises the rows (with the chat template for ``messages``), puts -100 on the prompt of prompt/completion
rows, and collates; ARKD's DistillationMixin replaces the cross-entropy with its weighted divergence to the
teacher. For ``messages`` rows TRL scores every token unless ``assistant_only_loss=True`` is set in SFTConfig,
which needs a chat template that marks the assistant turns.
"""

from __future__ import annotations

import argparse

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from train.hf import DistillationMixin, WeightingCallback


class ARKDSFTTrainer(DistillationMixin, SFTTrainer):
    """SFTTrainer's data handling, ARKD's loss."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--data", required=True, help="JSON/JSONL file of prompt/completion or messages rows")
    parser.add_argument("--policy", default="linear:1->0", help="baseline spec or path of a policy.zip")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--output-dir", default="runs/trl-student")
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args()

    trainer = ARKDSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.student),
        teacher_model=AutoModelForCausalLM.from_pretrained(args.teacher),
        args=SFTConfig(output_dir=args.output_dir, max_steps=args.max_steps, logging_steps=args.every,
                       per_device_train_batch_size=8, learning_rate=5e-5, report_to="tensorboard",
                       bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        train_dataset=load_dataset("json", data_files=args.data, split="train"),
        processing_class=AutoTokenizer.from_pretrained(args.teacher),
        callbacks=[WeightingCallback(args.policy, every=args.every)],
    )
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()

"""A student's exact probability of every valid answer of the keyed tasks, by teacher forcing.

For each keyed prompt and each of its valid answers, the sequence ``<bos> prompt answer <eos>`` is scored in
one forward pass: ``q(answer) = prod_t q(token_t | earlier tokens)`` over the answer's tokens and the final
``<eos>``, so ``q`` is the chance that a sample from the student is exactly that answer. Summed over a key's
valid answers it is the student's valid mass; what is left is on invalid strings. The numbers go to
:func:`arkd_env.eval.exact.exact_scores`, which needs no sampling and so has no sampling noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arkd_env.assets.data import collate, tokenize_records
from arkd_env.config import DataConfig
from arkd_env.eval.exact import ExactScores, exact_scores, mean_scores

METRIC_PREFIX = "val_"


@dataclass
class AnswerSet:
    """The keyed prompts and their tokenised (prompt, answer) sequences, in batches, prompt by prompt."""

    prompts: Sequence[Any]  # arkd_env.assets.keyed.KeyedPrompt
    batches: list[dict[str, Tensor]]

    @classmethod
    def build(cls, prompts: Sequence[Any], tokenizer: Any, cfg: DataConfig, batch_size: int) -> AnswerSet:
        records = [{"instruction": p.instruction, "context": "", "response": answer}
                   for p in prompts for answer in p.answers]
        examples, stats = tokenize_records(records, tokenizer, cfg)
        if len(examples) != len(records) or stats.truncated:
            raise ValueError(f"data.max_length={cfg.max_length}: a keyed prompt and answer do not fit; the exact "
                             "metrics need every answer whole")
        batches = [collate(examples[i:i + batch_size], tokenizer.pad_token_id)
                   for i in range(0, len(examples), batch_size)]
        return cls(prompts=prompts, batches=batches)


def sequence_log_probs(model: torch.nn.Module, batch: dict[str, Tensor], vocab_size: int) -> Tensor:
    """log q of each sequence's response tokens (its labels), summed per sequence: shape [B]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_q = torch.log_softmax(logits[..., :vocab_size].float(), dim=-1)
    mask = batch["loss_mask"]
    picked = log_q[mask].gather(1, batch["labels"][mask].unsqueeze(1)).squeeze(1)
    rows = mask.nonzero()[:, 0]  # the sequence of each picked token, in the same row-major order
    return torch.zeros(mask.shape[0], dtype=picked.dtype, device=picked.device).index_add_(0, rows, picked)


def answer_scores(model: torch.nn.Module, answers: AnswerSet, vocab_size: int, device: torch.device,
                  beta: float = 1.0) -> list[ExactScores]:
    """The exact scores of each keyed prompt for ``model`` (put in eval mode for the pass, then restored), the
    score at F-``beta`` (``data.keyed.score_beta``)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        log_q = torch.cat([sequence_log_probs(model, {k: v.to(device) for k, v in b.items()}, vocab_size)
                           for b in answers.batches]).exp().tolist()
    model.train(was_training)
    scores, start = [], 0
    for prompt in answers.prompts:
        q = dict(zip(prompt.answers, log_q[start:start + len(prompt.answers)], strict=True))
        start += len(prompt.answers)
        scores.append(exact_scores(prompt.distribution, q, prompt.head, beta=beta))
    return scores


def as_metrics(scores: Sequence[ExactScores]) -> dict[str, float]:
    """The mean over prompts as validation metrics: ``val_score``, ``val_validity``, ``val_exact_kl``..."""
    mean = mean_scores(scores)
    return {f"{METRIC_PREFIX}score": mean.score, f"{METRIC_PREFIX}validity": mean.validity_mass,
            f"{METRIC_PREFIX}overlap": mean.overlap, f"{METRIC_PREFIX}head_recall": mean.head_recall,
            f"{METRIC_PREFIX}tail_recall": mean.tail_recall, f"{METRIC_PREFIX}exact_kl": mean.exact_kl}

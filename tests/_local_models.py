"""Tiny Hugging Face model folders built on the spot, standing in for hub models in offline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import GPT2Config, GPT2LMHeadModel

from arkd_env.assets.tokenizer import build_synthetic_tokenizer


def gpt2_folder(path: Path, tokenizer: object, layers: int, width: int) -> str:
    """A randomly initialised GPT-2 of ``layers`` × ``width`` saved with ``tokenizer`` in ``path``."""
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=2, n_positions=128,  # type: ignore[arg-type]
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # type: ignore[attr-defined]
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return str(path)


# ChatML, the chat template of Qwen2.5 and SmolLM2, written out so tests need no hub tokenizer.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>"]


def chat_tokenizer(texts: list[str]) -> Any:
    """The project's word-level tokenizer over ``texts``, with ChatML's special tokens and template."""
    tok = build_synthetic_tokenizer(texts)
    tok.add_special_tokens({"additional_special_tokens": CHATML_SPECIALS})
    tok.chat_template = CHATML
    return tok

"""The embedded word-level tokenizer, built with the `tokenizers` library and used as a Hugging Face one.

Words and punctuation runs become tokens (the ``Whitespace`` pre-tokeniser splits on ``\\w+|[^\\w\\s]+``),
so texts made of space-separated words decode back unchanged. Ids 0-3 are the special tokens
``<pad> <bos> <eos> <unk>``; the other ids follow word frequency in the given texts (ties broken
alphabetically), so the same texts always give the same vocabulary. No special tokens are added on
encoding: :mod:`arkd_env.assets.data` places ``<bos>`` and ``<eos>`` itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
MODEL_MAX_LENGTH = 4096


def build_synthetic_tokenizer(texts: Iterable[str], max_vocab: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``texts`` (at most ``max_vocab`` ids including specials).

    Build it from the *formatted* texts (prompt template + response) so the template's own words are known.
    """
    if max_vocab is not None and max_vocab <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_vocab={max_vocab}: must exceed the {len(SPECIAL_TOKENS)} special tokens")
    splitter = pre_tokenizers.Whitespace()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(piece for piece, _ in splitter.pre_tokenize_str(text))
    for special in SPECIAL_TOKENS:
        counts.pop(special, None)
    # Frequency first so a capped vocabulary keeps the common words; the name breaks ties deterministically.
    words = sorted(counts, key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        words = words[: max_vocab - len(SPECIAL_TOKENS)]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
    )


def suite_tokenizer(template: str = "alpaca") -> PreTrainedTokenizerFast:
    """The tokenizer of the embedded preset: the prompt template's words plus every word the synthetic
    suite can produce, so it is the same whatever the suite's size or seed."""
    from arkd_env.assets.data import PROMPT_TEMPLATES
    from arkd_env.assets.synthetic import suite_vocabulary

    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r} (known: {', '.join(PROMPT_TEMPLATES)})")
    # Fill the placeholders with nothing so their names do not become tokens.
    texts = [t.format(instruction="", input="") for t in PROMPT_TEMPLATES[template].values()]
    texts.append(" ".join(suite_vocabulary()))
    return build_synthetic_tokenizer(texts)

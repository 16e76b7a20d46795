from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from arkd_env.assets.data import format_prompt
from arkd_env.assets.synthetic import generate_suite
from arkd_env.assets.tokenizer import build_synthetic_tokenizer, suite_tokenizer


def test_special_tokens_and_frequency_order() -> None:
    tok = build_synthetic_tokenizer(["b a b", "c b, a!"])
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # b x3, a x2, then ties (count 1) by name: "!" < "," < "c".
    assert tok.convert_ids_to_tokens(list(range(4, 9))) == ["b", "a", "!", ",", "c"]
    assert tok("a b zebra", add_special_tokens=False)["input_ids"] == [5, 4, 3]
    assert len(tok) == 9


def test_deterministic_and_order_independent() -> None:
    texts = ["one two three", "two three", "three"]
    assert build_synthetic_tokenizer(texts).get_vocab() == build_synthetic_tokenizer(texts[::-1]).get_vocab()


def test_max_vocab_keeps_most_frequent() -> None:
    tok = build_synthetic_tokenizer(["x x x y y z"], max_vocab=6)
    assert set(tok.get_vocab()) == {"<pad>", "<bos>", "<eos>", "<unk>", "x", "y"}
    with pytest.raises(ValueError, match="max_vocab=4"):
        build_synthetic_tokenizer(["x"], max_vocab=4)


def test_round_trip_through_save_pretrained(tmp_path: Path) -> None:
    tok = suite_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = format_prompt("Reverse the words.", "alpha beta gamma") + "gamma beta alpha"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token) == (
        "<pad>", "<bos>", "<eos>", "<unk>")


def test_suite_tokenizer_covers_template_and_suite() -> None:
    tok = suite_tokenizer()
    unk = tok.unk_token_id
    for e in generate_suite(200, seed=9):
        prompt_ids = tok(format_prompt(e.instruction, e.context), add_special_tokens=False)["input_ids"]
        response_ids = tok(e.response, add_special_tokens=False)["input_ids"]
        assert unk not in prompt_ids and unk not in response_ids
        assert tok.decode(response_ids) == e.response  # space-separated words decode unchanged
    assert len(tok) < 300
    # The same tokenizer whatever the suite's size or seed.
    assert suite_tokenizer().get_vocab() == tok.get_vocab()
    assert len(suite_tokenizer("compact")) < len(tok)

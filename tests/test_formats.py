"""TRL row formats -> ARKD examples (arkd_env/assets/formats.py), on small tokenizers built here (no hub).

Two tokenizers: the project's word-level one with ChatML's special tokens added (its ``<bos>`` and ``<eos>``
are distinct from ``<|im_end|>``, so <bos>/<eos> placement shows), and a byte-level BPE one whose end token is
``<|im_end|>`` and which decodes back to the exact text, so masked tokens can be compared to strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from arkd_env.assets import formats
from arkd_env.assets.data import (
    PROMPT_TEMPLATES,
    TokenizedExample,
    TruncationStats,
    build_datasets,
    collate,
    format_prompt,
    tokenize_records,
)
from arkd_env.assets.formats import row_format, target_mask, tokenize_row
from arkd_env.assets.tokenizer import build_synthetic_tokenizer
from arkd_env.config import ConfigError, DataConfig, load_preset
from arkd_env.engine import Distiller
from tests._local_models import CHATML, chat_tokenizer, gpt2_folder
from tests._local_models import CHATML_SPECIALS as SPECIALS

SOURCE = "data.jsonl"
SYSTEM = {"role": "system", "content": "You are terse."}
USER1 = {"role": "user", "content": "Hello there, how are you?"}
BOT1 = {"role": "assistant", "content": "fine, thanks!"}
USER2 = {"role": "user", "content": "Do you like tea?"}
BOT2 = {"role": "assistant", "content": "yes I do."}
TWO_TURNS = [SYSTEM, USER1, BOT1, USER2, BOT2]
TEXTS = [m["content"] for m in TWO_TURNS] + ["system user assistant Sort. 3 1 1 3 a b c d e f g h"]


def _cfg(**kw: Any) -> DataConfig:
    return DataConfig(source=SOURCE, num_examples=0, val_size=1, **{"format": "auto", **kw})


@pytest.fixture(scope="module")
def words() -> PreTrainedTokenizerFast:
    """Word-level, <bos>/<eos> of its own; knows the Alpaca template's words for the equivalence tests."""
    templates = [t.format(instruction="", input="") for p in PROMPT_TEMPLATES.values() for t in p.values()]
    return chat_tokenizer([*templates, *TEXTS])


@pytest.fixture(scope="module")
def bpe() -> PreTrainedTokenizerFast:
    """Byte-level BPE, no <bos>, <|im_end|> as its end token (as Qwen2.5/SmolLM2 instruct tokenizers)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", *SPECIALS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(TEXTS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def _runs(example: TokenizedExample) -> list[list[int]]:
    """The target tokens of ``example`` grouped into maximal consecutive runs."""
    runs: list[list[int]] = []
    previous = False
    for token, target in zip(example.input_ids, target_mask(example), strict=True):
        if target and not previous:
            runs.append([])
        if target:
            runs[-1].append(token)
        previous = target
    return runs


def _one(row: dict[str, Any], tok: Any, cfg: DataConfig | None = None, index: int = 0,
         stats: TruncationStats | None = None) -> TokenizedExample | None:
    cfg = cfg or _cfg()
    return tokenize_row(row, row_format(row, index, SOURCE, cfg), tok, cfg, index, SOURCE, stats)


def _same(a: TokenizedExample | None, b: TokenizedExample | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.input_ids == b.input_ids
        assert a.prompt_length == b.prompt_length
        assert target_mask(a) == target_mask(b)
        assert collate([a], 0)["loss_mask"].tolist() == collate([b], 0)["loss_mask"].tolist()


# ----------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(("row", "expected"), [
    ({"messages": [USER1, BOT1]}, "messages"),
    ({"prompt": "Say hi.", "completion": "hi"}, "prompt_completion"),
    ({"prompt": [SYSTEM, USER1], "completion": [BOT1]}, "prompt_completion"),
    ({"instruction": "Say hi.", "response": "hi"}, "instruction"),
    ({"instruction": "Sort.", "context": "3 1", "response": "1 3"}, "instruction"),
    # A file mixing formats, as `datasets` reads it: every column in every row, None where absent.
    ({"messages": None, "prompt": "Say hi.", "completion": "hi", "instruction": None, "response": None},
     "prompt_completion"),
])
def test_row_format_detects_each_format(row: dict[str, Any], expected: str) -> None:
    assert row_format(row, 0, SOURCE) == expected


def test_row_format_uses_the_configured_instruction_fields() -> None:
    row = {"question": "Say hi.", "answer": "hi"}
    cfg = _cfg(instruction_field="question", response_field="answer")
    assert row_format(row, 0, SOURCE, cfg) == "instruction"
    with pytest.raises(ConfigError, match="no known format"):
        row_format(row, 0, SOURCE)


# ----------------------------------------------------------------------------------- conversations


def test_two_turn_mask_covers_exactly_the_assistant_turns(bpe: Any) -> None:
    example = _one({"messages": TWO_TURNS}, bpe)
    assert example is not None and example.target_mask is not None
    # Content and end-of-turn token of each assistant turn; no role header, no user/system text, and not the
    # newline the template writes after <|im_end|> (generation stops at <|im_end|>, this tokenizer's eos).
    assert [bpe.decode(run) for run in _runs(example)] == ["fine, thanks!<|im_end|>", "yes I do.<|im_end|>"]
    assert example.prompt_length == example.target_mask.index(True)
    assert example.input_ids[-1] == bpe.eos_token_id
    assert example.input_ids.count(bpe.eos_token_id) == len(TWO_TURNS)  # no <eos> added after <|im_end|>


def test_chat_template_is_applied(bpe: Any, words: Any) -> None:
    example = _one({"messages": TWO_TURNS}, bpe)
    assert example is not None
    rendered = bpe.apply_chat_template(TWO_TURNS, tokenize=False)
    assert "<|im_start|>user\nHello there" in rendered
    assert bpe.decode(example.input_ids) == rendered.rstrip()  # nothing lost or added but trailing whitespace
    word_example = _one({"messages": TWO_TURNS}, words)
    assert word_example is not None
    assert words.decode(word_example.input_ids).startswith(
        "<bos> <|im_start|> system You are terse . <|im_end|> <|im_start|> user Hello there")


def test_word_tokenizer_mask_and_eos(words: Any) -> None:
    example = _one({"messages": TWO_TURNS}, words)
    assert example is not None and example.target_mask is not None
    # Its <eos> is not <|im_end|>: appended after the last turn only, as data.py ends every response with it.
    assert [words.decode(run) for run in _runs(example)] == ["fine , thanks ! <|im_end|>",
                                                            "yes I do . <|im_end|> <eos>"]
    assert example.input_ids[:2] == [words.bos_token_id, words.convert_tokens_to_ids("<|im_start|>")]
    assert example.input_ids.count(words.bos_token_id) == 1


def test_collate_scores_only_assistant_tokens(words: Any) -> None:
    example = _one({"messages": TWO_TURNS}, words)
    assert example is not None and example.target_mask is not None
    batch = collate([example], words.pad_token_id)
    ids, mask = batch["input_ids"][0], batch["loss_mask"][0]
    wanted = [t - 1 for t, target in enumerate(example.target_mask) if target]
    assert mask.nonzero().flatten().tolist() == wanted
    assert batch["labels"][0, mask].tolist() == [example.input_ids[t + 1] for t in wanted]
    assert ids.tolist() == example.input_ids
    # Without its mask, everything after the prompt would be scored, the second user turn included.
    unmasked = dataclasses.replace(example, target_mask=None)
    assert collate([unmasked], words.pad_token_id)["loss_mask"][0].sum() > mask.sum()


def test_bos_written_by_the_template_is_not_doubled(words: Any) -> None:
    tok = build_synthetic_tokenizer(TEXTS)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = "{{ bos_token }}" + CHATML
    example = _one({"messages": [USER1, BOT1]}, tok)
    assert example is not None
    assert example.input_ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<|im_start|>")]
    plain = _one({"messages": [USER1, BOT1]}, words)
    assert plain is not None and len(plain.input_ids) == len(example.input_ids)


def test_conversational_prompt_trains_only_the_completion(bpe: Any) -> None:
    example = _one({"prompt": TWO_TURNS[:4], "completion": [BOT2]}, bpe)
    assert example is not None and example.target_mask is None
    assert [bpe.decode(run) for run in _runs(example)] == ["yes I do.<|im_end|>"]
    prompt = bpe.apply_chat_template(TWO_TURNS[:4], tokenize=False, add_generation_prompt=True)
    assert bpe.decode(example.input_ids[: example.prompt_length]) == prompt


# ----------------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("context", ["", "3 1"])
@pytest.mark.parametrize("limit", ["none", "skip", "cut"])
@pytest.mark.parametrize("template", ["alpaca", "compact"])
def test_instruction_equals_string_prompt_completion(words: Any, context: str, limit: str, template: str) -> None:
    """Same prompt text and response -> same ids and mask, also where a limit skips or cuts the example."""
    record = {"instruction": "Sort.", "context": context, "response": "1 3 a b c d e f g h"}
    as_pc = {"prompt": format_prompt("Sort.", context, template), "completion": record["response"]}
    unlimited = _one(record, words, _cfg(prompt_template=template))
    assert unlimited is not None
    prompt = unlimited.prompt_length
    limits = {"none": {}, "skip": {"max_prompt_length": prompt - 1, "max_length": prompt + 20},
              "cut": {"max_prompt_length": prompt, "max_length": prompt + 3}}[limit]
    cfg = _cfg(prompt_template=template, **limits)
    stats_i, stats_pc = TruncationStats(), TruncationStats()
    from_instruction = _one(record, words, cfg, 3, stats_i)
    from_pc = _one(as_pc, words, cfg, 3, stats_pc)
    _same(from_instruction, from_pc)
    assert stats_i == stats_pc
    # The limit did reach its branch, so the equivalence is checked there and not vacuously.
    assert (stats_i.total, stats_i.kept, stats_i.skipped_long_prompt, stats_i.truncated) == {
        "none": (1, 1, 0, 0), "skip": (1, 0, 1, 0), "cut": (1, 1, 0, 1)}[limit]
    if limit == "skip":
        assert stats_pc.examples_at_fault == [3]
    else:
        assert from_pc is not None and from_pc.record_index == 3
        assert (from_pc.input_ids[-1] == words.eos_token_id) == (limit == "none")  # a cut drops <eos>
    # ... and both equal what ARKD's own pipeline makes of the record.
    reference, _ = tokenize_records([record], words, cfg)
    _same(reference[0] if reference else None, from_pc)


@pytest.mark.parametrize("system", [False, True])
def test_single_turn_messages_equal_conversational_prompt_completion(words: Any, bpe: Any, system: bool) -> None:
    head = [SYSTEM] if system else []
    for tok in (words, bpe):
        as_messages = _one({"messages": [*head, USER1, BOT1]}, tok)
        as_pc = _one({"prompt": [*head, USER1], "completion": [BOT1]}, tok)
        assert type(as_messages) is TokenizedExample  # one run of targets: plain examples, plain collate
        _same(as_messages, as_pc)


# ----------------------------------------------------------------------------------- limits


def test_conversation_limits_skip_and_cut(words: Any) -> None:
    stats = TruncationStats()
    assert _one({"messages": TWO_TURNS}, words, _cfg(max_prompt_length=5), 4, stats) is None
    assert (stats.total, stats.kept, stats.skipped_long_prompt, stats.examples_at_fault) == (1, 0, 1, [4])
    full = _one({"messages": TWO_TURNS}, words)
    assert full is not None
    cut = _one({"messages": TWO_TURNS}, words, _cfg(max_prompt_length=20, max_length=len(full.input_ids) - 1),
               0, stats)
    assert cut is not None and stats.truncated == 1
    assert cut.input_ids == full.input_ids[:-1]  # the cut drops <eos>
    assert target_mask(cut) == target_mask(full)[:-1]


def test_tokenize_rows_mixes_formats(words: Any) -> None:
    rows: list[dict[str, Any]] = [{"messages": [USER1, BOT1], "prompt": None, "completion": None},
                                  {"messages": None, "prompt": "Say hi.", "completion": "hi"},
                                  {"instruction": "Sort.", "response": "1 3"}]
    examples, stats = formats.tokenize_rows(rows, words, _cfg(), SOURCE)
    assert [e.record_index for e in examples] == [0, 1, 2]
    assert (stats.total, stats.kept) == (3, 3)


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("row", "expected"), [
    ({"messages": [USER1, {"role": "assistant"}]}, "row 8: field 'messages'[1]: missing 'content'"),
    ({"messages": [USER1, {"content": "hi"}]}, "row 8: field 'messages'[1]: missing 'role'"),
    ({"prompt": "Say hi."}, "row 8: field 'completion': missing"),
    ({"instruction": "Say hi.", "context": ""}, "row 8: field 'response': missing"),
    ({"messages": [USER1, {"role": "assistant", "content": 3}]},
     "row 8: field 'messages'[1]['content']: expected a string, got int"),
    ({"messages": "hi"}, "row 8: field 'messages': expected a list of messages, got str"),
    ({"messages": [USER1, "hi"]}, "row 8: field 'messages'[1]: expected a {'role', 'content'} object"),
    ({"prompt": "Say hi.", "completion": [BOT1]}, "row 8: field 'completion': a list of messages while 'prompt'"),
    ({"prompt": "Say hi.", "completion": 3}, "row 8: field 'completion': expected a string, got int"),
    ({"messages": [USER1, {"role": "bot", "content": "hi"}]},
     "row 8: field 'messages'[1]['role']: unknown role 'bot'"),
    ({"prompt": [USER1], "completion": [USER2]}, "row 8: field 'completion'[0]['role']: 'user'"),
    ({"messages": []}, "row 8: field 'messages': empty list of messages"),
    ({"prompt": [], "completion": [BOT1]}, "row 8: field 'prompt': empty list of messages"),
    ({"messages": [SYSTEM, USER1]}, "row 8: field 'messages': no assistant turn"),
    ({"messages": [USER1, BOT1], "prompt": "Say hi.", "completion": "hi"},
     "row 8: fields 'messages' and 'prompt': two formats in one row"),
    ({"prompt": "Say hi.", "completion": "hi", "response": "hi"},
     "row 8: fields 'prompt' and 'response': two formats in one row"),
    ({"text": "hello"}, "row 8: no known format: expected field 'messages'"),
])
def test_malformed_rows_give_one_line_errors(row: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        row_format(row, 7, SOURCE)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: {expected}"), message


def test_tokenize_row_checks_the_row_against_the_given_format(words: Any) -> None:
    with pytest.raises(ConfigError, match=r"^data\.jsonl: row 2: field 'messages': missing$"):
        tokenize_row({"prompt": "Say hi.", "completion": "hi"}, "messages", words, _cfg(), 1, SOURCE)


def test_tokenizer_without_chat_template() -> None:
    tok = build_synthetic_tokenizer(TEXTS)
    tok.name_or_path = "tiny-words"
    with pytest.raises(ConfigError) as caught:
        _one({"messages": [USER1, BOT1]}, tok, index=2)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: row 3: field 'messages': tokenizer 'tiny-words' has no chat template")
    assert "prompt/completion" in message
    # String prompt/completion rows need no template.
    assert _one({"prompt": "Say hi.", "completion": "hi"}, tok) is not None


def test_template_that_rewrites_earlier_turns_is_refused() -> None:
    tok = build_synthetic_tokenizer(TEXTS)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = "{{ messages | length }} turns\n" + CHATML  # the header changes with every turn
    with pytest.raises(ConfigError, match=r"^data\.jsonl: row 1: field 'messages'\[2\]: .* re-renders earlier"):
        _one({"messages": TWO_TURNS}, tok)


def test_template_errors_become_one_line() -> None:
    tok = build_synthetic_tokenizer(TEXTS)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role\n"
                         "here') }}{% endif %}" + CHATML)
    with pytest.raises(ConfigError) as caught:
        _one({"messages": TWO_TURNS}, tok)
    message = str(caught.value)
    assert "\n" not in message and "no system role" in message and message.startswith(f"{SOURCE}: row 1:")


# ----------------------------------------------------------------------------------- data.format


MIXED_ROWS = [
    {"messages": TWO_TURNS},
    {"prompt": "Say hi.", "completion": "hi"},
    {"prompt": [SYSTEM, USER1], "completion": [BOT1]},
    {"instruction": "Sort.", "context": "3 1", "response": "1 3"},
] * 3


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_build_datasets_reads_every_row_in_its_own_format(tmp_path: Path, words: Any) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", MIXED_ROWS)
    cfg = DataConfig(source=str(path), format="auto", num_examples=0, val_size=4, val_split="first")
    bundle = build_datasets(cfg, words)
    assert len(bundle.train) + len(bundle.val) == len(MIXED_ROWS)
    for example in [*bundle.val, *bundle.train]:
        row = MIXED_ROWS[example.record_index]
        expected = tokenize_row(row, row_format(row, example.record_index, str(path), cfg), words, cfg,
                                example.record_index, str(path))
        _same(example, expected)
    # Only the two-turn chat needs a per-token mask; the engine's batches then skip its second user turn.
    assert [e.target_mask is not None for e in bundle.val] == [True, False, False, False]
    batch = collate(bundle.val, words.pad_token_id)
    chat = bundle.val[0]
    assert int(batch["loss_mask"][0].sum()) == sum(target_mask(chat)) < len(chat.input_ids) - chat.prompt_length
    # The reference each answer is scored against is the first thing the model must say.
    assert [r["reference"] for r in bundle.val_records] == ["fine, thanks!", "hi", "fine, thanks!", "1 3"]
    assert bundle.val_records[3]["instruction"] == "Sort."


def test_a_required_format_names_the_row_that_lacks_it(tmp_path: Path, words: Any) -> None:
    path = _write_jsonl(tmp_path / "mixed.jsonl", MIXED_ROWS)
    cfg = DataConfig(source=str(path), format="messages", num_examples=0, val_size=1)
    with pytest.raises(ConfigError, match=r"mixed\.jsonl: row 2: field 'messages': missing$"):
        build_datasets(cfg, words)


def test_instruction_format_on_a_chat_file_points_to_auto(tmp_path: Path, words: Any) -> None:
    path = _write_jsonl(tmp_path / "chats.jsonl", [{"messages": [USER1, BOT1]}] * 3)
    with pytest.raises(ValueError, match=r"chats\.jsonl: missing column 'instruction' .*data\.format=auto"):
        build_datasets(DataConfig(source=str(path), num_examples=0, val_size=1), words)


def test_distiller_trains_on_a_chat_file(tmp_path: Path, words: Any) -> None:
    chats = [{"messages": [SYSTEM, {"role": "user", "content": f"Say w{i}."},
                           {"role": "assistant", "content": f"w{i} w{i}."}]} for i in range(24)]
    path = _write_jsonl(tmp_path / "chats.jsonl", chats)
    tok = chat_tokenizer([*TEXTS, *(m["content"] for c in chats for m in c["messages"])])
    teacher = gpt2_folder(tmp_path / "teacher", tok, layers=2, width=32)
    student = gpt2_folder(tmp_path / "student", tok, layers=1, width=16)
    cfg = load_preset("gpt2-dolly", [f"engine.teacher.name_or_path={teacher}",
                                     f"engine.student.name_or_path={student}", f"engine.data.source={path}",
                                     "engine.data.format=messages", "engine.data.val_size=4",
                                     "engine.data.val_split=random", "engine.eval_size=4", "engine.batch_size=4",
                                     "engine.rouge_size=0"]).engine
    distiller = Distiller.from_config(cfg)
    assert distiller.data.format == "messages" and len(distiller.data.val) == 4
    before = distiller.evaluate()["val_fkl"]
    report = distiller.train_steps({"fkl": 1.0}, 3)
    assert report.n_failed == 0 and math.isfinite(report.loss)
    assert distiller.evaluate()["val_fkl"] < before

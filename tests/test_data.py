from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from arkd_env.assets import data
from arkd_env.assets.data import (
    PROMPT_TEMPLATE,
    TokenizedExample,
    build_datasets,
    collate,
    collate_prompts,
    format_prompt,
    load_records,
    split_train_val,
    tokenize_records,
)
from arkd_env.assets.tokenizer import build_synthetic_tokenizer, suite_tokenizer
from arkd_env.config import DataConfig

ROWS = [
    {"instruction": "Say hi.", "context": "", "response": "hi"},
    {"instruction": "Repeat.", "context": "a b", "response": "a b"},
]


def _records(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: r[k] for k in ("instruction", "context", "response")} for r in rows]


@pytest.fixture(scope="module")
def tok() -> Any:
    return suite_tokenizer()


# ----------------------------------------------------------------------------------- templates


def test_prompt_template_variants() -> None:
    with_input = format_prompt("Sort.", "3 1")
    assert with_input.startswith("Below is an instruction that describes a task, paired with an input")
    assert with_input.endswith("### Instruction:\nSort.\n\n### Input:\n3 1\n\n### Response:\n")
    no_input = format_prompt("Name a fruit.", "  ")
    assert no_input == PROMPT_TEMPLATE["no_input"].format(instruction="Name a fruit.")
    assert "### Input:" not in no_input
    compact = "### Instruction:\nSort.\n\n### Input:\n3 1\n\n### Response:\n"
    assert format_prompt("Sort.", "3 1", "compact") == compact


# ----------------------------------------------------------------------------------- formats


def _cfg(path: Path | str, **kw: Any) -> DataConfig:
    return DataConfig(source=str(path), num_examples=0, val_size=1, **kw)


def test_json_list_and_nested_and_lines(tmp_path: Path) -> None:
    plain = tmp_path / "d.json"
    plain.write_text(json.dumps(ROWS))
    assert load_records(None, _cfg(plain)) == _records(ROWS)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"version": 1, "data": ROWS}))
    assert load_records(None, _cfg(nested)) == _records(ROWS)
    lines_in_json = tmp_path / "lines.json"  # JSON Lines under a .json name is common; accept it
    lines_in_json.write_text("\n".join(json.dumps(r) for r in ROWS))
    assert load_records(None, _cfg(lines_in_json)) == _records(ROWS)


def test_jsonl_with_missing_context_and_custom_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "Say hi.", "a": "hi"}\n\n{"q": "Count.", "a": 3, "ctx": "x"}\n')
    cfg = _cfg(path, instruction_field="q", response_field="a", context_field="ctx")
    assert load_records(None, cfg) == [
        {"instruction": "Say hi.", "context": "", "response": "hi"},
        {"instruction": "Count.", "context": "x", "response": "3"},
    ]


def test_csv_and_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text('instruction,context,response\nSay hi.,,hi\nRepeat.,a b,"a b"\n')
    assert load_records(None, _cfg(csv)) == _records(ROWS)
    import datasets

    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(parquet))
    assert load_records(None, _cfg(parquet)) == _records(ROWS)


def test_txt_is_plain_text_and_cap(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first line\nsecond line\nthird\n")
    assert load_records(None, _cfg(path, format="text")) == [{"text": "first line"}, {"text": "second line"},
                                                            {"text": "third"}]
    capped = DataConfig(source=str(path), format="text", num_examples=2, val_size=1)
    assert len(load_records(None, capped)) == 2
    with pytest.raises(ValueError, match=r"d\.txt: a \.txt file holds plain text; set data.format=text"):
        load_records(None, _cfg(path))


# ----------------------------------------------------------------------------------- bad data


def test_missing_file_and_empty_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: data file not found"):
        load_records(None, _cfg(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: empty data set"):
        load_records(None, _cfg(empty))
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]")
    with pytest.raises(ValueError, match=r"empty\.json: empty data set"):
        load_records(None, _cfg(empty_list))
    header_only = tmp_path / "header.csv"
    header_only.write_text("instruction,response\n")
    with pytest.raises(ValueError, match=r"header\.csv: empty data set"):
        load_records(None, _cfg(header_only))


def test_missing_column_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("prompt,response\nhello,hi\n")
    expected = r"cols\.csv: missing column 'instruction' \(found: prompt, response\); set data\.instr"
    with pytest.raises(ValueError, match=expected):
        load_records(None, _cfg(path))


def test_missing_field_in_a_row_names_line_or_row(tmp_path: Path) -> None:
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"instruction": "a", "response": "b"}\n\n{"instruction": "c"}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl: line 3: missing field 'response'"):
        load_records(None, _cfg(jsonl))
    csv = tmp_path / "rows.csv"
    csv.write_text("instruction,response\na,b\nc,d\ne,\n")
    with pytest.raises(ValueError, match=r"rows\.csv: row 3: missing field 'response'"):
        load_records(None, _cfg(csv))


def test_broken_json_line_is_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    good = '{"instruction": "a", "response": "b"}\n'
    path.write_text(good + good + '{"instruction": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 3: malformed JSON"):
        load_records(None, _cfg(path))
    doc = tmp_path / "broken.json"
    doc.write_text('[\n{"instruction": "a",\n "response": }\n]')
    with pytest.raises(ValueError, match=r"broken\.json: line 3 column 14: malformed JSON"):
        load_records(None, _cfg(doc))


def test_non_utf8_names_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"instruction,response\ncaf\xe9,ok\n")
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text: byte offset 24 \(line 2\)"):
        load_records(None, _cfg(path))


def test_hub_name_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    expected = r"data set 'someone/missing-set' is not a local file .*HF_DATASETS_OFFLINE"
    with pytest.raises(ValueError, match=expected):
        load_records("someone/missing-set", DataConfig())


# ----------------------------------------------------------------------------------- built-in sources


@pytest.mark.parametrize("source", ["chitchat", "chatterbot"])
def test_dialogue_packages_give_pairs(source: str) -> None:
    records = load_records(source, DataConfig(source=source, num_examples=300))
    assert len(records) == 300
    for r in records:
        assert r["instruction"].strip() and r["response"].strip() and r["context"] == ""
    if source == "chatterbot":  # small enough to load whole (chitchat's 40 MB JSON is not, in a unit test)
        everything = load_records(source, DataConfig(source=source, num_examples=0))
        assert len(everything) > 1000
        assert everything[:300] == records


def test_synthetic_records_carry_metadata_and_text_format() -> None:
    records = load_records("synthetic", DataConfig(num_examples=16, split_seed=2))
    assert {r["kind"] for r in records} == {"deterministic", "open"}
    assert all({"instruction", "context", "response", "task", "distribution"} <= set(r) for r in records)
    text = load_records("synthetic", DataConfig(num_examples=16, split_seed=2, format="text"))
    first = records[0]
    assert text[0] == {"text": format_prompt(first["instruction"], first["context"]) + first["response"]}


# ----------------------------------------------------------------------------------- tokenize + masks


def test_tokenize_layout_on_a_known_tokenizer() -> None:
    record = {"instruction": "Say hi.", "context": "", "response": "hi there"}
    tok = build_synthetic_tokenizer([format_prompt("Say hi.") + "hi there"])
    (example,), stats = tokenize_records([record], tok, DataConfig())
    prompt_ids = tok(format_prompt("Say hi."), add_special_tokens=False)["input_ids"]
    vocab = tok.get_vocab()
    hi, there = vocab["hi"], vocab["there"]
    assert example.input_ids == [tok.bos_token_id, *prompt_ids, hi, there, tok.eos_token_id]
    assert example.prompt_length == 1 + len(prompt_ids)
    assert stats.as_dict() == {
        "total": 1, "kept": 1, "skipped_long_prompt": 0, "truncated": 0, "skipped_empty": 0}
    batch = collate([example], tok.pad_token_id)
    n = example.prompt_length
    # Position n-1 (last prompt token) predicts "hi", n predicts "there", n+1 predicts <eos>; nothing else.
    expected = [-100] * (n - 1) + [hi, there, tok.eos_token_id, -100]
    assert batch["labels"][0].tolist() == expected
    assert batch["loss_mask"][0].tolist() == [x != -100 for x in expected]


def test_collate_exact_values_with_right_padding() -> None:
    a = TokenizedExample([1, 10, 11, 12, 20, 21, 2], prompt_length=4)
    b = TokenizedExample([1, 10, 20, 2], prompt_length=2)
    batch = collate([a, b], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12, 20, 21, 2], [1, 10, 20, 2, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 20, 21, 2, -100],
                                        [-100, 20, 2, -100, -100, -100, -100]]
    assert batch["loss_mask"].tolist() == [[False, False, False, True, True, True, False],
                                           [False, True, True, False, False, False, False]]
    assert batch["loss_mask"].dtype == torch.bool and batch["labels"].dtype == torch.long
    assert batch["prompt_lengths"].tolist() == [4, 2]


def test_text_format_every_token_is_a_loss_token() -> None:
    tok = build_synthetic_tokenizer(["the cat sat"])
    (example,), _ = tokenize_records([{"text": "the cat sat"}], tok, DataConfig(format="text"))
    vocab = tok.get_vocab()
    the, cat, sat = vocab["the"], vocab["cat"], vocab["sat"]
    assert example.input_ids == [1, the, cat, sat, 2] and example.prompt_length == 1
    batch = collate([example], 0)
    assert batch["labels"][0].tolist() == [the, cat, sat, 2, -100]


def test_collate_prompts_left_pads() -> None:
    a = TokenizedExample([1, 10, 11, 12, 20, 2], prompt_length=4)
    b = TokenizedExample([1, 10, 20, 2], prompt_length=2)
    batch = collate_prompts([a, b], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12], [0, 0, 1, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert collate_prompts([[5, 6], [7]], 0)["input_ids"].tolist() == [[5, 6], [0, 7]]


def test_truncation_counts(tok: Any) -> None:
    long_prompt = {"instruction": "Copy the words.", "context": " ".join(["alpha"] * 50), "response": "x"}
    long_response = {"instruction": "Copy the words.", "context": "alpha",
                     "response": " ".join(["beta"] * 100)}
    fine = {"instruction": "Name a fruit.", "context": "", "response": "apple"}
    cfg = DataConfig(max_prompt_length=60, max_length=80)
    examples, stats = tokenize_records([long_prompt, long_response, fine, long_prompt], tok, cfg)
    assert (stats.total, stats.kept, stats.skipped_long_prompt, stats.truncated) == (4, 2, 2, 1)
    assert stats.examples_at_fault == [0, 3]
    assert [e.record_index for e in examples] == [1, 2]
    cut = examples[0]
    assert len(cut.input_ids) == 80 and cut.input_ids[-1] == tok.convert_tokens_to_ids("beta")  # no <eos>
    assert examples[1].input_ids[-1] == tok.eos_token_id
    text_cfg = DataConfig(format="text", max_prompt_length=3, max_length=4)
    texts = [{"text": "a b c d e"}, {"text": ""}, {"text": "a"}]
    text_examples, text_stats = tokenize_records(texts, tok, text_cfg)
    assert (text_stats.truncated, text_stats.skipped_empty, text_stats.kept) == (1, 1, 2)
    assert len(text_examples[0].input_ids) == 4


# ----------------------------------------------------------------------------------- split + bundle


def test_split_is_deterministic_and_disjoint() -> None:
    items = list(range(50))
    train, val = split_train_val(items, 10, seed=7)
    assert (train, val) == split_train_val(items, 10, seed=7)
    assert val != split_train_val(items, 10, seed=8)[1]
    assert len(val) == 10 and sorted(train + val) == items and not set(train) & set(val)
    assert val == sorted(val)
    with pytest.raises(ValueError, match=r"data\.val_size=50"):
        split_train_val(items, 50, seed=0)


def test_build_datasets_synthetic(tok: Any) -> None:
    cfg = DataConfig(num_examples=120, val_size=16, split_seed=1)
    bundle = build_datasets(cfg, tok)
    assert (len(bundle.train), len(bundle.val), len(bundle.val_records)) == (104, 16, 16)
    again = build_datasets(cfg, tok)
    assert [e.input_ids for e in again.val] == [e.input_ids for e in bundle.val]
    train_ids = {e.record_index for e in bundle.train}
    for example, record in zip(bundle.val, bundle.val_records, strict=True):
        assert example.record_index not in train_ids
        response = tok.decode(example.input_ids[example.prompt_length:-1])
        assert response == record["reference"]
        assert data.encode_prompts(tok, [record["prompt"]])[0] == example.input_ids[: example.prompt_length]
        assert record["kind"] in ("deterministic", "open") and "task" in record


def test_first_records_held_out_as_in_the_dolly_protocol(tmp_path: Path, tok: Any) -> None:
    rows = [{"instruction": "Say hi.", "context": "", "response": f"hi {i}"} for i in range(12)]
    rows[1]["context"] = " ".join(["long"] * 50)  # a dev record whose prompt is dropped stays out of training
    path = tmp_path / "dolly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(source=str(path), val_size=4, val_split="first", max_prompt_length=30, max_length=40)
    bundle = build_datasets(cfg, tok)
    assert [e.record_index for e in bundle.val] == [0, 2, 3]
    assert [e.record_index for e in bundle.train] == list(range(4, 12))
    assert [r["reference"] for r in bundle.val_records] == ["hi 0", "hi 2", "hi 3"]
    with pytest.raises(ValueError, match="val_split"):
        DataConfig(val_split="last")
    with pytest.raises(ValueError, match=r"val_split=first: 0 validation"):
        data.split_first(bundle.train, 4)


def test_build_datasets_reports_when_nothing_fits(tok: Any) -> None:
    cfg = DataConfig(num_examples=20, val_size=2, max_prompt_length=5, max_length=10)
    with pytest.raises(ValueError, match=r"no usable example out of 20 .*max_prompt_length=5: 20"):
        build_datasets(cfg, tok)

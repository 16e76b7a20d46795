"""arkd_env/eval/suite.py and `arkd evaluate --suite paper`: the five sets in their formats, the loading rules,
seeded sampling, and scores that equal a direct rouge-score computation on the written texts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from transformers import GPT2Config, GPT2LMHeadModel

from arkd_env.assets.data import format_prompt
from arkd_env.assets.tokenizer import build_synthetic_tokenizer
from arkd_env.config import SUITE_SETS, ConfigError, SuiteConfig
from arkd_env.eval.suite import (
    SET_FILES,
    SuiteExample,
    load_set,
    load_suite,
    locate_set,
    parse_row,
    run_suite,
    sample_texts,
)
from tests._cli_helpers import one_error_line
from train.cli import main


def words(n: int, stem: str = "word") -> str:
    """A text of exactly ``n`` whitespace-separated words."""
    return " ".join(f"{stem}{i}" for i in range(n))


LONG_INPUT = words(60, "ctx")  # makes a prompt far longer than the tests' 64-token limit
# One file per set, in the formats MiniLLM distributes them (processed rows carry a ready "prompt" too).
FIXTURES: dict[str, list[dict[str, Any]]] = {
    "dolly": [  # MiniLLM's processed Dolly: instruction / prompt / input / output (a string)
        {"instruction": "Name a colour.", "prompt": "ignored", "input": "", "output": "Blue."},
        {"instruction": "Summarise the text.", "prompt": "ignored", "input": "The sky is blue today.",
         "output": words(12, "sum")},
        {"instruction": "Explain this.", "prompt": "ignored", "input": LONG_INPUT, "output": words(15)},
    ],
    "self_inst": [  # several references per prompt
        {"instruction": "Write a greeting.", "input": "", "output": ["Hello there friend.", "Hi, how are you?"]},
        {"instruction": "Give a title.", "input": "A story about a cat.", "output": ["The Cat", "A Cat's Tale"]},
    ],
    "vicuna": [
        {"instruction": "What is the best way to learn?", "input": "", "output": words(20, "learn")},
        {"instruction": "How do plants grow?", "input": "", "output": words(18, "plant")},
    ],
    "sinst": [  # ready prompts with <n> for newlines, references as lists, some too short
        {"prompt": "### Instruction:<n>Translate to French.<n><n>### Response:<n>", "output": ["Bonjour."]},
        {"prompt": "### Instruction:<n>Define a word.<n><n>### Response:<n>", "output": [words(11, "def"), "x"]},
        {"prompt": "### Instruction:<n>Answer briefly.<n><n>### Response:<n>", "output": [words(10, "ans")]},
    ],
    "uinst": [  # Hub-style field names: context / response
        {"instruction": f"Task number {i}.", "context": "" if i % 2 else f"Detail {i}.",
         "response": words(11 + i, f"r{i}x") if i != 1 else "too short"}
        for i in range(5)
    ],
}


def write_suite(root: Path) -> Path:
    for name, rows in FIXTURES.items():
        path = root / SET_FILES[name][0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def references_of(row: dict[str, Any]) -> list[str]:
    value = row.get("output", row.get("response"))
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    texts = [format_prompt("x", "y") + format_prompt("x")]
    for rows in FIXTURES.values():
        for row in rows:
            texts.append(" ".join(str(v) for v in row.values()).replace("<n>", " "))
    return build_synthetic_tokenizer(texts)


def student_folder(path: Path, tokenizer: Any, seed: int) -> Path:
    torch.manual_seed(seed)
    # A wide initialisation gives peaked next-token distributions, so two seeds give clearly different models
    # (near-uniform ones would sample the same tokens from the same RNG stream).
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=128,
                        initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------- locating and parsing
def test_missing_set_names_the_file_and_where_to_get_it(tmp_path: Path) -> None:
    write_suite(tmp_path)
    (tmp_path / SET_FILES["sinst"][0]).unlink()
    with pytest.raises(FileNotFoundError) as caught:
        locate_set("sinst", SuiteConfig(dir=str(tmp_path)))
    message = str(caught.value)
    assert "sinst/11_/valid.jsonl" in message and "MiniLLM/sinst" in message and "\n" not in message
    assert locate_set("dolly", SuiteConfig(dir=str(tmp_path))) == tmp_path / "dolly" / "valid.jsonl"
    with pytest.raises(ConfigError, match="--suite-dir"):
        locate_set("dolly", SuiteConfig())
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: UnNI file not found"):
        locate_set("uinst", SuiteConfig(dir=str(tmp_path), paths={"uinst": str(tmp_path / "nope.jsonl")}))
    other = tmp_path / "elsewhere.jsonl"
    other.write_text(json.dumps(FIXTURES["vicuna"][0]) + "\n")
    assert locate_set("vicuna", SuiteConfig(paths={"vicuna": str(other)})) == other


@pytest.mark.parametrize("name", SUITE_SETS)
def test_every_format_gives_an_alpaca_prompt_and_its_references(name: str) -> None:
    for i, row in enumerate(FIXTURES[name]):
        prompt, refs = parse_row(row, f"{name}: line {i + 1}", "alpaca")
        assert refs == references_of(row)
        if "instruction" in row:
            expected = format_prompt(row["instruction"], row.get("input", row.get("context", "")), "alpaca")
            assert prompt == expected and prompt.startswith("Below is an instruction")
        else:
            assert prompt == row["prompt"].replace("<n>", "\n") and "<n>" not in prompt


def test_malformed_rows_are_named() -> None:
    with pytest.raises(ValueError, match="line 3: missing field 'output'"):
        parse_row({"instruction": "x"}, "f.jsonl: line 3", "alpaca")
    with pytest.raises(ValueError, match="a string or a non-empty list of strings"):
        parse_row({"instruction": "x", "output": []}, "f.jsonl: line 1", "alpaca")
    with pytest.raises(ValueError, match="missing field 'instruction'"):
        parse_row({"output": "y"}, "f.jsonl: line 1", "alpaca")


# ----------------------------------------------------------------------------------- loading rules
def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reference_word_filter_keeps_eleven_and_drops_ten(tmp_path: Path, tokenizer: Any) -> None:
    path = _write(tmp_path / "s.jsonl", [
        {"instruction": "a", "output": words(10)},
        {"instruction": "b", "output": words(11)},
        {"instruction": "c", "output": [words(3), words(20)]},  # the first reference decides
        {"instruction": "d", "output": "one,two three   four\nfive six seven eight nine ten eleven twelve"},  # 11
    ])
    loaded = load_set("sinst", path, tokenizer, min_reference_words=11)
    assert [e.row for e in loaded.examples] == [1, 3]
    assert (loaded.stats.rows, loaded.stats.short_reference, loaded.stats.kept) == (4, 2, 2)
    assert len(load_set("sinst", path, tokenizer, min_reference_words=0).examples) == 4


def test_prompt_length_limit_is_inclusive(tmp_path: Path, tokenizer: Any) -> None:
    rows = [{"instruction": "Name a colour.", "output": "x"}, {"instruction": "Summarise the text.",
                                                              "input": "The sky is blue today.", "output": "y"}]
    path = _write(tmp_path / "p.jsonl", rows)
    lengths = [len(e.prompt_ids) for e in load_set("dolly", path, tokenizer, max_prompt_length=10_000).examples]
    assert lengths[0] < lengths[1]
    loaded = load_set("dolly", path, tokenizer, max_prompt_length=lengths[0])
    assert [e.row for e in loaded.examples] == [0] and loaded.stats.long_prompt == 1
    ids = tokenizer(format_prompt("Name a colour."), add_special_tokens=False)["input_ids"]
    assert loaded.examples[0].prompt_ids[-len(ids):] == ids


def test_cap_keeps_the_first_usable_rows_in_file_order(tmp_path: Path, tokenizer: Any) -> None:
    rows = [{"instruction": f"Task number {i}.", "output": words(12) if i != 1 else "short"} for i in range(6)]
    path = _write(tmp_path / "u.jsonl", rows)
    loaded = load_set("uinst", path, tokenizer, min_reference_words=11, max_examples=3)
    assert [e.row for e in loaded.examples] == [0, 2, 3]
    assert (loaded.stats.short_reference, loaded.stats.over_cap, loaded.stats.kept) == (1, 2, 3)


def test_default_rules_of_the_protocol(tmp_path: Path, tokenizer: Any) -> None:
    defaults = SuiteConfig()
    assert defaults.seeds == [10, 20, 30, 40, 50] and (defaults.max_length, defaults.max_prompt_length) == (512, 256)
    assert defaults.min_reference_words == {"sinst": 11, "uinst": 11} and defaults.max_examples == {"uinst": 10000}
    cfg = SuiteConfig(dir=str(write_suite(tmp_path)), max_prompt_length=64, max_examples={"uinst": 2})
    sets = load_suite(cfg, tokenizer)
    assert list(sets) == list(SUITE_SETS)
    assert [e.row for e in sets["dolly"].examples] == [0, 1]  # short answers stay in Dolly; the long prompt goes
    assert sets["dolly"].stats.long_prompt == 1
    assert [e.row for e in sets["sinst"].examples] == [1]  # S-NI keeps references of >= 11 words only
    assert sets["sinst"].examples[0].references == FIXTURES["sinst"][1]["output"]
    assert [e.row for e in sets["uinst"].examples] == [0, 2] and sets["uinst"].stats.over_cap == 2
    with pytest.raises(ConfigError, match="unknown set"):
        SuiteConfig(max_examples={"alpaca": 3})


# ----------------------------------------------------------------------------------- generation
def test_sampling_is_seeded_bounded_and_leaves_the_global_rng_alone(tmp_path: Path, tokenizer: Any) -> None:
    model = GPT2LMHeadModel.from_pretrained(student_folder(tmp_path / "m", tokenizer, seed=0))
    ids = tokenizer(format_prompt("Name a colour."), add_special_tokens=False)["input_ids"]
    examples = [SuiteExample(i, "", ids, ["x"]) for i in range(4)]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = sample_texts(model, tokenizer, examples, seed=10, max_new_tokens=8, batch_size=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert sample_texts(model, tokenizer, examples, seed=10, max_new_tokens=8, batch_size=3) == first
    assert sample_texts(model, tokenizer, examples, seed=20, max_new_tokens=8, batch_size=3) != first
    assert len(set(first)) > 1  # sampled, not greedy: the same prompt gets different answers
    assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= 8 for t in first)


# ----------------------------------------------------------------------------------- the command, end to end
def _direct_rouge(text: str, refs: list[str]) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * max(scorer.score(r, text)["rougeL"].fmeasure for r in refs)


@pytest.mark.slow
def test_suite_command_end_to_end(tmp_path: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    suite_dir = write_suite(tmp_path / "sets")
    students = [student_folder(tmp_path / "runA" / "student", tokenizer, 1),
                student_folder(tmp_path / "runB" / "student", tokenizer, 2)]
    monkeypatch.setitem(sys.modules, "bert_score", None)  # BERTScore asked for but not installed: skipped
    out = tmp_path / "report" / "suite.json"
    code = main(["evaluate", *map(str, students), "--suite", "paper", "--suite-dir", str(suite_dir),
                 "--preset", "gpt2-dolly", "--set", "engine.device=cpu", "--set", "eval_suite.max_length=72",
                 "--set", "eval_suite.max_prompt_length=64", "--set", "eval_suite.max_examples={uinst: 2}",
                 "--set", "eval_suite.bertscore=true", "--seeds", "10,30,50", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sum("BERTScore skipped:" in line for line in captured.out.splitlines()) == 1
    report = json.loads(out.read_text())
    assert [s["student"] for s in report["students"]] == ["runA", "runB"]
    for student in report["students"]:
        assert list(student["sets"]) == list(SUITE_SETS)
        assert student["protocol"]["max_new_tokens"] == 8 and student["protocol"]["template"] == "alpaca"
        for name, entry in student["sets"].items():
            assert "pip install 'arkd[bertscore]'" in entry["bertscore_f1"]["skipped"]
            per_seed = entry["rouge_l"]["per_seed"]
            assert list(per_seed) == ["10", "30", "50"]
            rows = FIXTURES[name]
            for seed, value in per_seed.items():
                lines = (out.parent / "suite_generations" / student["student"] / f"{name}_seed{seed}.jsonl")
                generated = [json.loads(x) for x in lines.read_text().splitlines()]
                assert len(generated) == entry["examples"] and entry["examples"] == entry["loading"]["kept"]
                direct = [_direct_rouge(g["text"], references_of(rows[g["row"]])) for g in generated]
                assert value == pytest.approx(float(np.mean(direct)), abs=1e-9), (name, seed)
            values = list(per_seed.values())
            assert entry["rouge_l"]["mean"] == pytest.approx(np.mean(values))
            assert entry["rouge_l"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert [s["sets"]["uinst"]["examples"] for s in report["students"]] == [2, 2]
    first, second = ((out.parent / "suite_generations" / s / "vicuna_seed10.jsonl").read_text()
                     for s in ("runA", "runB"))
    assert first != second  # different students, different samples
    table = (out.parent / "suite.md").read_text()
    assert "| student | metric | DollyEval | SelfInst | VicunaEval | S-NI | UnNI |" in table
    dolly = report["students"][0]["sets"]["dolly"]["rouge_l"]
    assert f"| runA | ROUGE-L | {dolly['mean']:.2f} ({dolly['std']:.2f}) |" in table
    assert "| runA | BERTScore F1 | skipped |" in table and table in captured.out


def test_suite_run_is_reproducible(tmp_path: Path, tokenizer: Any) -> None:
    model = GPT2LMHeadModel.from_pretrained(student_folder(tmp_path / "m", tokenizer, seed=4))
    sets = load_suite(SuiteConfig(dir=str(write_suite(tmp_path / "sets")), sets=["vicuna", "dolly"],
                                  max_prompt_length=64), tokenizer)
    first = run_suite(model, tokenizer, sets, [10, 20], max_new_tokens=6, batch_size=2)
    again = run_suite(model, tokenizer, sets, [10, 20], max_new_tokens=6, batch_size=2)
    assert first.to_json() == again.to_json() and list(first.to_json()["sets"]) == ["vicuna", "dolly"]
    assert first.metrics == ["rouge_l"] and "bertscore_f1" not in first.to_json()["sets"]["dolly"]


def test_suite_errors_are_one_line(tmp_path: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    student = student_folder(tmp_path / "run" / "student", tokenizer, 0)
    suite_dir = write_suite(tmp_path / "sets")
    (suite_dir / SET_FILES["vicuna"][0]).unlink()
    capsys.readouterr()  # drop the progress output of saving the model
    cases = [
        (["--suite", "paper", "--suite-dir", str(suite_dir)], "vicuna/valid.jsonl: VicunaEval file not found"),
        (["--suite", "paper"], "give --suite-dir DIR"),
        (["--suite-dir", str(suite_dir)], "--suite-dir belongs to the evaluation suite"),
        (["--suite", "paper", "--suite-dir", str(suite_dir), "--seeds", "10,10"], "eval_suite.seeds"),
        (["--suite", "paper", "--suite-dir", str(suite_dir), "--seeds", "ten"], "comma-separated integers"),
    ]
    for extra, expected in cases:
        assert main(["evaluate", str(student), "--preset", "gpt2-dolly", *extra]) == 2, extra
        assert expected in one_error_line(capsys.readouterr().err), extra

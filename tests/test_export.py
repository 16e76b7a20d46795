from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from arkd_env.assets.data import format_prompt
from arkd_env.assets.export import chat_template_for, portable_tokenizer
from arkd_env.config import load_preset
from arkd_env.engine import Distiller


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Distiller, Path]:
    engine = Distiller.from_config(load_preset("nano").engine)
    engine.train_steps({"fkl": 1.0}, 3)
    return engine, engine.save_student(tmp_path_factory.mktemp("run") / "student")


def test_a_saved_student_encodes_and_generates_with_plain_transformers_as_the_engine_does(
        saved: tuple[Distiller, Path]) -> None:
    engine, folder = saved
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    template = engine.cfg.data.prompt_template
    examples, records = engine.data.val[:4], engine.data.val_records[:4]
    expected = engine.generate(examples, engine.cfg.max_new_tokens, sample=False)
    for example, record, tokens in zip(examples, records, expected, strict=True):
        prompt = format_prompt(record["instruction"], record.get("context") or "", template)
        encoded = tokenizer(prompt, return_tensors="pt")
        assert encoded["input_ids"][0].tolist() == example.input_ids[:example.prompt_length]  # <bos> included
        with torch.no_grad():
            out = model.generate(**encoded)  # the saved generation config: greedy, max_new_tokens, stop at <eos>
        assert out[0, example.prompt_length:].tolist() == tokens
        text = pipeline("text-generation", model=model, tokenizer=tokenizer)(prompt, return_full_text=False)
        assert text[0]["generated_text"].strip() == tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert tokenizer.padding_side == "left"


def test_the_chat_template_renders_a_user_turn_as_the_run_s_prompt(saved: tuple[Distiller, Path]) -> None:
    engine, folder = saved
    tokenizer = AutoTokenizer.from_pretrained(folder)
    record, example = engine.data.val_records[0], engine.data.val[0]
    if record.get("context"):
        pytest.fail("the first nano validation record has a context; pick one without")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": record["instruction"]}], tokenize=False)
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == example.input_ids[:example.prompt_length]
    with pytest.raises(Exception, match="user and assistant turns only, not system"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)
    turn = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                         tokenize=False)
    assert turn == "<bos>" + format_prompt("hi", "", engine.cfg.data.prompt_template) + "yo<eos>"
    assert "Below is an instruction" in chat_template_for("alpaca")


def test_a_tokenizer_that_already_adds_bos_or_has_a_chat_template_is_left_as_it_is(
        saved: tuple[Distiller, Path]) -> None:
    engine, folder = saved
    once = AutoTokenizer.from_pretrained(folder)
    once.chat_template = "{{ messages[0]['content'] }}"
    again = portable_tokenizer(once, "compact")
    assert again("a b")["input_ids"] == once("a b")["input_ids"] and again("a b")["input_ids"][0] == once.bos_token_id
    assert again.chat_template == once.chat_template
    assert engine.tokenizer("a")["input_ids"][:1] != [engine.tokenizer.bos_token_id]  # the engine's own is untouched


def test_a_tokenizer_whose_bos_is_its_eos_gets_neither_a_bos_nor_one_in_its_chat_template() -> None:
    from arkd_env.assets.tokenizer import build_synthetic_tokenizer

    tokenizer = build_synthetic_tokenizer(["say hi"])
    tokenizer.bos_token = tokenizer.eos_token  # as GPT-2's: ARKD's layout then has no <bos>
    portable = portable_tokenizer(tokenizer, "compact")
    assert portable("say hi")["input_ids"] == tokenizer("say hi")["input_ids"]
    rendered = portable.apply_chat_template([{"role": "user", "content": "say hi"}], tokenize=False)
    assert rendered == format_prompt("say hi", "", "compact")


def test_saving_again_replaces_the_folder_whole(saved: tuple[Distiller, Path]) -> None:
    engine, folder = saved
    (folder / "stale.txt").write_text("from an earlier save")
    assert engine.save_student(folder) == folder
    assert not (folder / "stale.txt").exists() and (folder / "generation_config.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary left beside it


def test_a_post_processor_the_tokenizer_already_has_is_kept_and_bos_added_before_it() -> None:
    from tokenizers import processors

    from arkd_env.assets.tokenizer import build_synthetic_tokenizer

    tokenizer = build_synthetic_tokenizer(["say hi"])
    eos = tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", eos)])
    ids = portable_tokenizer(tokenizer, "compact")("say hi")["input_ids"]
    assert ids == [tokenizer.bos_token_id, *tokenizer("say hi", add_special_tokens=False)["input_ids"], eos]

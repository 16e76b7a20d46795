from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from arkd_env.assets.build import prepare
from arkd_env.assets.tokenizer import build_synthetic_tokenizer
from arkd_env.config import load_preset
from arkd_env.engine import Distiller
from tests._local_models import gpt2_folder

ROWS = [{"instruction": f"Say the word number {i}.", "context": "" if i % 2 else f"The word is w{i}.",
         "response": f"w{i} is the word.", "category": "open_qa"} for i in range(48)]


def _dolly_preset(tmp_path: Path, student_tokenizer: object | None = None) -> list[str]:
    data = tmp_path / "dolly.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    tokenizer = build_synthetic_tokenizer([" ".join(r.values()) for r in ROWS] + ["Below is an instruction"])
    teacher = gpt2_folder(tmp_path / "teacher", tokenizer, layers=2, width=32)
    student = gpt2_folder(tmp_path / "student", student_tokenizer or tokenizer, layers=1, width=16)
    return [f"engine.teacher.name_or_path={teacher}", f"engine.student.name_or_path={student}",
            f"engine.data.source={data}", "engine.data.val_size=8", "engine.eval_size=8", "engine.batch_size=4",
            "engine.rouge_size=0"]


def test_hub_preset_runs_offline_on_local_copies_in_the_same_format(tmp_path: Path) -> None:
    cfg = load_preset("gpt2-dolly", _dolly_preset(tmp_path)).engine
    distiller = Distiller.from_config(cfg)
    assert distiller.data.source.endswith("dolly.jsonl") and len(distiller.data.val) == 8
    before = distiller.evaluate()["val_fkl"]
    report = distiller.train_steps({"fkl": 1.0}, 3)
    assert report.n_failed == 0 and math.isfinite(report.loss)
    assert distiller.evaluate()["val_fkl"] < before


def test_student_with_another_tokenizer_fails_before_training(tmp_path: Path) -> None:
    other = build_synthetic_tokenizer(["completely different words here"])
    cfg = load_preset("gpt2-dolly", _dolly_preset(tmp_path, student_tokenizer=other)).engine
    with pytest.raises(ValueError, match=r"vocab"):
        Distiller.from_config(cfg)


def test_prepare_builds_once_and_reuses_the_cache() -> None:
    cfg = load_preset("nano").engine
    folder = prepare(cfg)
    assert folder is not None and (folder / "complete").is_file()
    stamp = (folder / "teacher" / "model.safetensors").stat().st_mtime_ns
    assert prepare(cfg) == folder
    assert (folder / "teacher" / "model.safetensors").stat().st_mtime_ns == stamp
    changed = load_preset("nano", ["engine.teacher.pretrain_steps=1"]).engine
    assert prepare(changed) != folder  # the cache is keyed by every value the teacher depends on


def test_hub_presets_need_no_build() -> None:
    assert prepare(load_preset("gpt2-dolly").engine) is None


@pytest.mark.slow
def test_smollm2_preset_distils_offline() -> None:
    cfg = load_preset("smollm2", ["engine.data.num_examples=64", "engine.data.val_size=8", "engine.eval_size=4",
                                  "engine.batch_size=2", "engine.data.max_length=64",
                                  "engine.data.max_prompt_length=48"]).engine
    distiller = Distiller.from_config(cfg)
    assert distiller.vocab_size == 49152 and distiller.loss_path == "fused"
    report = distiller.train_steps({"fkl": 0.5, "rkl": 0.5}, 1)
    assert report.n_failed == 0 and math.isfinite(report.loss)
    assert math.isfinite(distiller.evaluate()["val_divergence"])


def test_synthetic_teacher_trains_on_fresh_examples_without_validation_prompts() -> None:
    from arkd_env.assets.build import _build_tokenizer, teacher_training_set
    from arkd_env.assets.data import build_datasets
    from arkd_env.assets.synthetic import DETERMINISTIC, TASKS

    cfg = load_preset("nano").engine
    tokenizer = _build_tokenizer(cfg)
    data = build_datasets(cfg.data, tokenizer)
    examples = teacher_training_set(cfg, tokenizer, data)
    wanted = cfg.teacher.pretrain_steps * cfg.teacher.pretrain_batch_size
    split_prompts = {tuple(e.input_ids[:e.prompt_length]) for e in data.train}
    fresh_prompts = [tuple(e.input_ids[:e.prompt_length]) for e in examples]
    held_out = {tuple(e.input_ids[:e.prompt_length]) for e, r in zip(data.val, data.val_records, strict=True)
                if TASKS[r["task"]].kind == DETERMINISTIC}
    assert 0.9 * wanted <= len(examples) <= wanted  # one per training sequence, minus the dropped ones
    assert not held_out & set(fresh_prompts)  # validation's deterministic prompts never trained on
    # not the distillation split replayed: most deterministic prompts are new, and every open task is there
    assert len(set(fresh_prompts) - split_prompts) > len(examples) / 4
    prompts = [tokenizer.decode(e.input_ids[:e.prompt_length]) for e in examples]
    for task in TASKS.values():  # every task, open ones included, keeps its share of the sequences
        words = " ".join(tokenizer.tokenize(task.instruction))
        assert sum(words in p for p in prompts) >= 0.8 * wanted / len(TASKS), task.name


def test_teacher_pretraining_reports_progress_without_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Under nohup the tqdm bar of teacher training would be off; a plain record says how far it got."""
    import torch

    from arkd_env import progress
    from arkd_env.assets.build import pretrain
    from arkd_env.assets.data import tokenize_records
    from arkd_env.config import DataConfig

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    tokenizer = build_synthetic_tokenizer([" ".join(r.values()) for r in ROWS[:8]])
    examples, _ = tokenize_records(ROWS[:8], tokenizer, DataConfig())
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=128))
    capsys.readouterr()
    pretrain(model, examples, tokenizer.pad_token_id, steps=3, lr=1e-3, batch_size=2, device=torch.device("cpu"),
             seed=0)
    assert "training teacher: 3/3 it (100%)" in capsys.readouterr().out


def test_member_tokens_are_read_from_the_prompts_as_encoded_and_refused_when_not_one_token_each() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from arkd_env.assets.build import member_token_ids
    from arkd_env.assets.data import format_prompt
    from arkd_env.assets.keyed import MEMBER_NAMES, KeyedTaskSpec, keyed_prompts
    from arkd_env.config import ConfigError

    cfg = load_preset("nano", ["engine.data.source=keyed",
                               "engine.data.keyed={n_keys: 4, modes_per_key: 4, family_size: 2}"]).engine
    texts = [format_prompt(p.instruction, "", cfg.data.prompt_template)
             for p in keyed_prompts(KeyedTaskSpec(n_keys=4, modes_per_key=4, family_size=2))]
    # A byte-level BPE, as GPT-2's: in the prompt the member is " first", a token other than the bare word's.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(texts * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", bos_token="<eos>")
    ids = member_token_ids(cfg, bpe)
    assert bpe.convert_ids_to_tokens(ids) == ["Ġfirst", "Ġsecond"]  # Ġ: the byte-level space
    assert ids != [bpe("first", add_special_tokens=False)["input_ids"][0],
                   bpe("second", add_special_tokens=False)["input_ids"][0]]
    # A word-level tokenizer that never saw the member words reads both as <unk>.
    blind = build_synthetic_tokenizer([t.replace(MEMBER_NAMES[0], "").replace(MEMBER_NAMES[1], "") for t in texts])
    with pytest.raises(ConfigError, match=r"member_blind=True: the tokenizer does not spell each member name "
                                          r"\(first, second\) as one token of its own"):
        member_token_ids(cfg, blind)

"""The examples under examples/ run end to end for a few steps on tiny local models (CleanRL-style smoke tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _local_models import chat_tokenizer, gpt2_folder
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("add one and two", "three"), ("add two and two", "four"), ("add one and one", "two")]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("models")
    tokenizer = chat_tokenizer([f"{p} {c}" for p, c in PAIRS])
    return (gpt2_folder(folder / "teacher", tokenizer, layers=1, width=32),
            gpt2_folder(folder / "student", tokenizer, layers=1, width=16))


def _run(script: str, teacher: str, student: str, data: Path, out: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--teacher", teacher, "--student", student,
                           "--data", str(data), "--max-steps", "2", "--every", "1", "--output-dir", str(out),
                           "--policy", "linear:1->0"], capture_output=True, text=True, env=env, cwd=out.parent,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    AutoModelForCausalLM.from_pretrained(out)  # the student it saved loads with plain transformers


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_trainer_example_on_prompt_completion_rows(tmp_path: Path, models: tuple[str, str]) -> None:
    data = _write(tmp_path / "rows.jsonl", [{"prompt": p, "completion": " " + c} for p, c in PAIRS])
    _run("distil_with_trainer.py", *models, data, tmp_path / "out")


def test_trl_example_on_messages_rows(tmp_path: Path, models: tuple[str, str]) -> None:
    data = _write(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": p},
                                                           {"role": "assistant", "content": c}]} for p, c in PAIRS])
    _run("distil_with_trl.py", *models, data, tmp_path / "out")

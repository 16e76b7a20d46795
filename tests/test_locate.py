"""arkd_env/assets/locate.py: one rule for "is this a local path", one offline check, for models and data alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkd_env.assets.locate import hub_offline, is_local


@pytest.mark.parametrize("name", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "databricks/databricks-dolly-15k"])
def test_hub_names_are_not_local(name: str) -> None:
    assert not is_local(name)


@pytest.mark.parametrize("name", ["./model", "/abs/model", "~/model", "a/b/c", "model/", "train.jsonl",
                                  "data.CSV", "rows.parquet"])
def test_path_spellings_and_data_files_are_local(name: str) -> None:
    assert is_local(name)


def test_an_existing_bare_name_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_local("mymodel")
    (tmp_path / "mymodel").mkdir()
    assert is_local("mymodel")


def test_offline_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert not hub_offline() and hub_offline(datasets=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub_offline()

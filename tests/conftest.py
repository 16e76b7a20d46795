"""Test-wide settings: no hub access, one torch thread, one shared cache of built presets per test session."""

from __future__ import annotations

import os

import pytest
import torch

# The test models are tiny: a second torch thread only adds synchronisation, and on 2 busy cores it made
# steps dozens of times slower. Subprocesses get the same from OMP_NUM_THREADS (tests/_cli_helpers.py).
torch.set_num_threads(1)

# A stray hub call must fail in seconds instead of hanging on a machine without network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def arkd_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Built presets (tokenizer, trained nano teacher) go to one folder shared by the session and its
    subprocesses, so the nano teacher is trained once per test run, never into the user's cache."""
    path = str(tmp_path_factory.getbasetemp() / "arkd-cache")
    os.environ["ARKD_CACHE_DIR"] = path
    return path

"""Shared pieces of the `arkd` command tests: tiny nano settings and a subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# nano, made smaller still: 2 env steps per episode, 1 student update per step, 2 generations.
TINY = ["--preset", "nano", "--set", "env.horizon=2", "--set", "env.updates_per_step=1",
        "--set", "engine.rouge_size=2", "--set", "engine.eval_size=8"]
TINY_PPO = ["--set", "agent.hparams.n_steps=2", "--set", "agent.hparams.batch_size=2",
            "--set", "agent.hparams.n_epochs=1"]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def arkd(*args: str, cwd: Path | None = None, timeout: float = 600,
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m train ARGS` (the same entry point as the `arkd` console script)."""
    return subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True,
                          env={**env(), **(extra_env or {})}, cwd=cwd, timeout=timeout)


def popen(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=cwd)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert "error:" in lines[0]
    return lines[0]

"""Exceptions the `arkd` command turns into one-line messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the command line the user can fix (exit status 2)."""


class Interrupted(Exception):
    """Ctrl-C during learning; a checkpoint was saved before this was raised (exit status 130)."""

    def __init__(self, run_dir: Path, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint {checkpoint} saved, resume with: arkd train --resume {run_dir}")
        self.run_dir, self.checkpoint = run_dir, checkpoint

"""Atomic writes: every file or folder ARKD writes is assembled under a hidden temporary name and renamed
into place, so a process killed at any moment (SIGKILL, a full disk) leaves the previous version or the new
one, never half of either. This is the only module that renames a temporary into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # leftovers of killed writes start with it, so readers can skip them and cleaners find them


@contextlib.contextmanager
def atomic_path(target: str | Path, *, folder: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write into; rename it onto ``target`` when the block succeeds.

    The temporary keeps ``target``'s name as its suffix, so writers that infer a format from the extension
    (matplotlib, Stable-Baselines3's ``.zip``) behave as on the real name. ``folder`` yields an empty directory.
    ``replace=False`` raises FileExistsError instead of replacing an existing ``target`` (a cache another
    process may be reading). On failure the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TEMP_PREFIX}{target.name}-"
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=f"-{target.name}", dir=target.parent)
        os.close(handle)
        tmp = Path(name)
    # tempfile makes private (0600/0700) entries; what lands in place gets the permissions a plain write gives.
    os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())
    try:
        yield tmp
        if target.exists() and not replace:
            raise FileExistsError(f"{target}: already exists")
        if folder and target.exists():
            # os.replace cannot put a folder over a non-empty one: move the old one aside first, so the
            # window in which neither exists is one rename long.
            old = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
            os.replace(target, old / target.name)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old / target.name, target)  # put the previous version back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def remove_leftovers(folder: str | Path) -> None:
    """Delete what killed writes left in ``folder`` (temporaries of :func:`atomic_path`)."""
    folder = Path(folder)
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith(TEMP_PREFIX):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask

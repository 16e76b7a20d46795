"""Run folders: safe names, atomic file writes and the JSON form of metrics.

A run folder is ``<output_dir>/<preset>__<algo>__<seed>__<timestamp>/``. Every part of the name that
comes from the user is reduced to ``[A-Za-z0-9._-]`` and the final path is checked to lie inside the
output directory, so no name can write elsewhere. Folders made by :func:`create_run_dir` and
:func:`make_out_dir` inside :func:`removed_on_error` are deleted again when the command fails before
they hold any result, so bad input leaves no partial output behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from arkd_env.atomic import atomic_write_text

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
POLICY_FILE = "policy.zip"
RUN_INFO = "run.json"  # the run folder's format version
ONLINE_FILE = "online.json"  # an online distill's algorithm and engine seed, which its resume continues with
SETUP_FILES = (CONFIG_FILE, RUN_INFO, ONLINE_FILE, "tb")  # what a command writes before any result
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Per open `removed_on_error` block: the output folders made in it, with the parents made for each.
_BLOCKS: list[list[tuple[Path, list[Path]]]] = []


def sanitize(part: str, fallback: str = "run") -> str:
    """A single safe path component: unsafe characters become '-', no leading dots, at most 80 chars."""
    text = _UNSAFE.sub("-", str(part)).strip("-.")
    return text[:80] or fallback


def inside(path: Path, root: Path) -> Path:
    """``path`` resolved, or ValueError when it escapes ``root``."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"{path}: outside the output directory {root}")
    return resolved


def run_name(*parts: str | int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return "__".join([*(sanitize(str(p)) for p in parts), stamp])


def _record(folder: Path, parents: list[Path]) -> None:
    if _BLOCKS:
        _BLOCKS[-1].append((folder, parents))


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, innermost first."""
    return [p for p in path.absolute().parents if not p.exists()]


def create_run_dir(output_dir: str | Path, *parts: str | int, name: str | None = None) -> Path:
    """Make a fresh run folder under ``output_dir`` (a numeric suffix avoids collisions)."""
    root = Path(output_dir)
    base = sanitize(name) if name else run_name(*parts)
    made = _missing_parents(root / base)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = inside(root / (base if attempt == 0 else f"{base}-{attempt}"), root)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _record(candidate, made)
        return candidate
    raise ValueError(f"{root / base}: cannot create a fresh run folder")


def make_out_dir(path: str | Path) -> Path:
    """The folder ``path`` a user named for the outputs (``--out``), made with its parents when missing."""
    path = Path(path)
    if not path.is_dir():
        made = _missing_parents(path)
        path.mkdir(parents=True, exist_ok=True)
        _record(path, made)
    return path


def _holds_results(folder: Path) -> bool:
    """True once a run wrote anything beyond what commands write first (config, run.json, TensorBoard
    folder): a checkpoint, a per-seed result, a learning curve. Those are the user's and are never deleted."""
    return any(p.is_file() for p in folder.rglob("*") if p.relative_to(folder).parts[0] not in SETUP_FILES)


@contextlib.contextmanager
def removed_on_error() -> Iterator[None]:
    """Delete the output folders made inside the block when it raises an error before they hold any result
    (so a long compare that fails late keeps its finished runs, and a checkpointed run stays resumable).
    Ctrl-C (KeyboardInterrupt, :class:`train.errors.Interrupted`) keeps them."""
    from train.errors import Interrupted

    made: list[tuple[Path, list[Path]]] = []
    _BLOCKS.append(made)
    try:
        yield
    except Interrupted:
        raise
    except Exception:
        for folder, parents in reversed(made):
            if folder.is_dir() and not _holds_results(folder):
                shutil.rmtree(folder, ignore_errors=True)
                for parent in parents:  # only while empty: another run may have written there meanwhile
                    with contextlib.suppress(OSError):
                        parent.rmdir()
        raise
    finally:
        _BLOCKS.pop()  # blocks nest, so the innermost (this one) is last


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers, tuples lists."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(clean(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


RUN_FORMAT = 1
RUN_KINDS = ("train", "distill", "compare")


def write_run_info(folder: Path, kind: str) -> None:
    """Mark ``folder`` as the output of one kind of command, so another command cannot write over it."""
    from arkd_env import __version__

    write_json(folder / RUN_INFO, {"format": RUN_FORMAT, "kind": kind, "arkd_version": __version__,
                                   "created": time.time()})


def run_kind(folder: Path) -> str | None:
    """The kind of run ``folder`` holds, None when it holds none (no run.json); checks the format version."""
    info_path = folder / RUN_INFO
    if not info_path.is_file():
        return None
    info = read_json(info_path)
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{folder}: run folder format {info.get('format')!r}, this ARKD reads {RUN_FORMAT}")
    return str(info.get("kind", "train"))  # folders from before kinds were recorded: only train wrote run.json


def require_kind(folder: Path, kind: str, flag: str) -> None:
    """Refuse to write ``kind`` outputs into a folder that holds another kind of run."""
    found = run_kind(folder)
    if found is not None and found != kind:
        raise ValueError(f"{folder}: holds an `arkd {found}` run; {flag} takes a folder of `arkd {kind}` "
                         "(give another folder, so that run is not overwritten)")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this process: a second arkd command on the same run folder fails at once instead of
    interleaving its writes with ours. The lock dies with the process, so a killed run leaves none behind."""
    import fcntl

    handle = os.open(folder, os.O_RDONLY)  # the folder itself is locked: no lock file to leave behind
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder}: another arkd command is using this run folder; wait for it to "
                             "finish") from None
        yield
    finally:
        os.close(handle)  # closing releases the lock


def require_run_dir(path: str | Path) -> Path:
    """A run folder written by `arkd train`, or FileNotFoundError naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: run folder not found")
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no {CONFIG_FILE})")
    return path

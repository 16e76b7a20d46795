"""arkd_env/atomic.py: a write that fails leaves the previous file or folder whole and no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkd_env.atomic import TEMP_PREFIX, atomic_path, atomic_write_text, remove_leftovers


def test_failed_file_write_keeps_the_previous_version(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_folder_replaces_the_old_one_and_keeps_the_target_suffix(tmp_path: Path) -> None:
    target = tmp_path / "step_1"
    with atomic_path(target, folder=True) as tmp:
        (tmp / "x").write_text("1")
    with atomic_path(target, folder=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1"]
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.name.endswith("plot.png") and tmp.name.startswith(TEMP_PREFIX)


def test_replace_false_refuses_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    (target / "kept").write_text("1")
    with pytest.raises(FileExistsError), atomic_path(target, folder=True, replace=False) as tmp:
        (tmp / "new").write_text("2")
    assert [p.name for p in target.iterdir()] == ["kept"]


def test_remove_leftovers_deletes_only_temporaries(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}a-1").mkdir()
    (tmp_path / f"{TEMP_PREFIX}b-2").write_text("")
    (tmp_path / "step_3").mkdir()
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["step_3"]


def test_written_files_and_folders_get_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        written = atomic_write_text(tmp_path / "run.json", "{}")
        with atomic_path(tmp_path / "cache", folder=True) as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(mask)
    assert written.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o755

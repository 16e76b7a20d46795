"""Where a model or data set name points: a local path, or the Hugging Face hub, and whether the hub may be asked."""

from __future__ import annotations

import os
from pathlib import Path

# The data-file extensions ARKD reads, with the `datasets` builder of each; a name ending in one is a file even
# before it exists (and then reported as not found).
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
_TRUTHY = ("1", "true", "yes", "on")


def is_local(name: str) -> bool:
    """Whether ``name`` means a path on this machine rather than a hub repository.

    Hub names are ``name`` or ``org/name``. Anything that exists here, is spelled as a path (``./x``, ``/x``,
    ``~/x``, more than one ``/``, a Windows separator, a trailing separator), or ends in a data-file extension
    is local, so a typo in a path is reported as a missing file instead of being sent to the hub.
    """
    path = Path(name).expanduser()
    spelled_as_path = (name.startswith((".", "/", "~", ".\\")) or name.count("/") > 1
                       or os.sep in name.replace("/", "") or name.endswith(("/", os.sep)))
    return spelled_as_path or path.suffix.lower() in FILE_BUILDERS or path.exists()


def hub_offline(datasets: bool = False) -> bool:
    """Whether the user has turned the hub off: ``HF_HUB_OFFLINE``, and for data sets ``HF_DATASETS_OFFLINE``
    too (``datasets`` also reads its own setting, which a program may have changed after import)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    if any(os.environ.get(n, "").strip().lower() in _TRUTHY for n in names):
        return True
    if not datasets:
        return False
    import datasets as hf_datasets

    return bool(getattr(hf_datasets.config, "HF_HUB_OFFLINE", False))

"""Progress bars that stay quiet when stderr is not a terminal (tqdm's ``disable=None``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0) -> Any:
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=None, file=sys.stderr,
                dynamic_ncols=True)


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    yield from tqdm(items, desc=desc, total=total, disable=None, file=sys.stderr, dynamic_ncols=True)


def say(message: str) -> None:
    """A status line for the user (stdout), flushed at once so it shows before slow work."""
    print(message, flush=True)

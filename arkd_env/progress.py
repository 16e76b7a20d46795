"""Progress for the user: tqdm bars on a terminal, and one-line records every half minute when stderr is not
a terminal (under nohup or a batch scheduler, where a bar would be invisible or garbage)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_EVERY_S = 30.0  # seconds between progress records when there is no terminal


class LineProgress:
    """The part of tqdm's interface ARKD uses, printed as occasional plain lines on stdout."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.n, self._initial = total, desc, unit, initial, initial
        self._start = time.monotonic()
        self._last: float | None = None  # when the last record was printed
        self._printed = -1  # the count it showed

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if self._last is None or now - self._last >= LOG_EVERY_S:
            self._emit(now)

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if self._last is None or self.n != self._printed:
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        self._last, self._printed = now, self.n
        elapsed = now - self._start
        if self.total:
            share = self.n / self.total
            rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0  # this session's pace, not a resume's
            left = f", about {(self.total - self.n) / rate:.0f} s left" if rate > 0 and share < 1 else ""
            done = f"{self.n}/{self.total} {self.unit} ({100 * share:.0f}%)"
        else:
            done, left = f"{self.n} {self.unit}", ""
        say(f"{self.desc}: {done}, {elapsed:.0f} s{left}")


def bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0) -> Any:
    if not sys.stderr.isatty():
        return LineProgress(total, desc, unit, initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True)


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    progress = bar(total=total, desc=desc)
    try:
        for item in items:
            yield item
            progress.update(1)
    finally:
        progress.close()


def say(message: str) -> None:
    """A status line for the user (stdout), flushed at once so it shows before slow work."""
    print(message, flush=True)

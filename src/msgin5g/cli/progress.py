"""Progress of long CLI jobs on stderr (``ue import``, ``group import``, ``area import``).

The same look as the segmented-send bar of ``ue send`` (:mod:`.device`):
``\\r<label> [#####-----] <done>/<total>`` redrawn in place on stderr, stdout
left to the command's data. Shown when stderr is a terminal, or always with
``--progress`` (:func:`add_progress_flag`); quiet otherwise, so scripts and
logs get only the final summary line. Redraws are limited to ``every``
seconds (default 0.1 s) so a million-line import spends its time importing.
With ``--progress`` into a file or pipe, each update is a line of its own (at
most one a second) instead of a redrawn one.
"""

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "add_progress_flag"]

_WIDTH = 30


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress`` (show progress even when stderr is not a terminal)."""
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal "
        "(default: only on a terminal)",
    )


class Progress:
    """A progress line on stderr.

    Args:
        label: what is being done (``import``, ``groups``, ``areas``).
        unit: what is counted (``lines``).
        total: the size of the job in the unit of :meth:`update`'s
            ``position`` (bytes of the input file, or lines), None if unknown.
        forced: ``--progress`` was given.
        stream: where to draw (stderr).
        clock: monotonic seconds.
        every: minimum seconds between two redraws.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "lines",
        total: int | None = None,
        forced: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = forced or self.tty
        self.label = label
        self.unit = unit
        self.total = total
        self._clock = clock
        self._every = every if self.tty else max(every, 1.0)
        self.started = clock()
        self._drawn = float("-inf")
        self._dirty = False

    def update(
        self, count: int, position: int | None = None, *, force: bool = False
    ) -> None:
        """``count`` units done; ``position`` (default ``count``) of ``total``."""
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._drawn < self._every:
            return
        self._drawn = now
        rate = count / max(now - self.started, 1e-6)
        done = count if position is None else position
        if self.total:
            filled = min(_WIDTH, _WIDTH * done // self.total)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            text = f"{self.label} [{bar}] {count:,} {self.unit}"
            if position is None:
                text = f"{self.label} [{bar}] {count:,}/{self.total:,} {self.unit}"
        else:
            text = f"{self.label} {count:,} {self.unit}"
        if self.tty:
            self.stream.write(f"\r{text} ({rate:,.0f}/s)\x1b[K")
            self._dirty = True
        else:  # --progress into a file or pipe: one line per update
            self.stream.write(f"{text} ({rate:,.0f}/s)\n")
        self.stream.flush()

    def interrupt(self) -> None:
        """Clear the line so that a message can be printed (e.g. a bad line)."""
        if self.enabled and self._dirty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._dirty = False
            self._drawn = float("-inf")

    def finish(self, count: int, position: int | None = None) -> None:
        """Draw the final state and end the line (like the segments bar)."""
        if not self.enabled:
            return
        self.update(count, position, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._dirty = False

"""Progress on long work, in Ultralytics' style: its ``TQDM`` bar on a terminal, a few plain lines elsewhere.

Pseudo-labelling a pool and fetching a dataset's shards can each take minutes. On a terminal the user sees one bar
that moves (Ultralytics' own ``TQDM``, imported only then); in a pod's log, CI or a pipe a redrawn bar is noise, so a
line is written at most every :data:`LINE_EVERY_S` seconds, and once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

#: Off a terminal: the longest wait between two progress lines.
LINE_EVERY_S = 30.0


class Progress:
    """Count done work toward ``total``; a context manager (the bar is closed, the last line written, on exit).

    Examples:
        >>> import io
        >>> with Progress(2, "fetch", "shards", stream=io.StringIO()) as p:
        ...     p.update(2, "5 MB")
        >>> p.done
        2
    """

    def __init__(self, total: int, desc: str, unit: str = "it", stream: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last_line = time.perf_counter()
        self.bar: Any = None
        if _is_terminal(self.stream):
            from ultralytics.utils import TQDM

            self.bar = TQDM(total=total, desc=desc, unit=unit, file=self.stream, disable=False)

    def update(self, n: int = 1, note: str = "") -> None:
        """Add ``n`` done; ``note`` (e.g. ``"120/400 MB"``) goes on the line or the bar's description."""
        self.done += n
        if self.bar is not None:
            if note:
                self.bar.set_description(f"{self.desc} ({note})")
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_line >= LINE_EVERY_S or self.done >= self.total:
            self.last_line = now
            rate = self.done / max(now - self.started, 1e-9)
            extra = f", {note}" if note else ""
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}{extra} ({rate:.1f} {self.unit}/s)",
                  file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        """Close the bar (a terminal's line is left showing the total)."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream: no bar
        return False

"""Progress on long work, in Ultralytics' style: its ``TQDM`` bar on a terminal, a few plain lines elsewhere.

Pseudo-labelling a pool, packing, uploading and fetching a dataset's shards can each take minutes. On a terminal the
user sees one bar that moves (Ultralytics' own ``TQDM``, imported only then); in a pod's log, CI or a pipe a redrawn
bar is noise, so a line is written at most every :data:`LINE_EVERY_S` seconds, and once at the end.

Work that is one long call rather than many counted pieces (an export, a pipeline step) gets a :class:`Stage`
instead: one line when it starts, one when it ends with the time it took. Everything goes to stderr, so a command's
result on stdout (JSON) stays clean.
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


class Stage:
    """Say that a stage of long work starts (``"what ..."``) and, on exit, how long it took or that it failed.

    ``note`` (set inside the block, e.g. ``"model.onnx, 12.1 MB"``) ends the done line; ``failed`` (set inside the
    block) reports a failure that came back as a status rather than an exception. A failure is only timed here: what
    went wrong is the error's own message, printed once by whoever handles it.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> with Stage("export: ONNX", stream=out) as stage:
        ...     stage.note = "model.onnx"
        >>> out.getvalue().splitlines()[0]
        'export: ONNX ...'
    """

    def __init__(self, what: str, stream: IO[str] | None = None) -> None:
        self.what, self.note, self.stream, self.failed = what, "", stream, False
        self.started = time.perf_counter()

    def __enter__(self) -> Stage:
        say(f"{self.what} ...", self.stream)
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        took = duration(time.perf_counter() - self.started)
        if exc_type is None and not self.failed:
            say(f"{self.what} done in {took}" + (f" ({self.note})" if self.note else ""), self.stream)
        elif exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            say(f"{self.what} interrupted after {took}", self.stream)
        else:
            say(f"{self.what} failed after {took}", self.stream)


def say(text: str, stream: IO[str] | None = None) -> None:
    """Write one progress line to ``stream`` (default: the current ``sys.stderr``), flushed at once."""
    print(text, file=stream if stream is not None else sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """Return a wait as a person reads it.

    Examples:
        >>> duration(4.26), duration(75), duration(3725)
        ('4.3 s', '1 min 15 s', '1 h 02 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds) // 60
    if minutes < 60:
        return f"{minutes} min {int(seconds) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def size_note(done: int, total: int) -> str:
    """Return ``done`` of ``total`` bytes in the unit that suits ``total`` (a progress line's note).

    Examples:
        >>> size_note(120_000, 1_200_000), size_note(7 * 10**8, 3 * 10**9), size_note(5_000, 40_000)
        ('0.1/1.2 MB', '0.7/3.0 GB', '5/40 kB')
    """
    unit, name = next(((u, n) for u, n in ((1e9, "GB"), (1e6, "MB")) if total >= u), (1e3, "kB"))
    digits = 0 if total / unit >= 10 else 1
    return f"{done / unit:.{digits}f}/{total / unit:.{digits}f} {name}"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream: no bar
        return False

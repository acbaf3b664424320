"""Progress on long work: Ultralytics' own bar on a terminal, a few plain lines elsewhere (issue 40)."""

from __future__ import annotations

import io

import pytest

from distill import progress

pytestmark = pytest.mark.fast


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's console does."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_ultralytics_bar_that_reaches_the_total():
    stream = Terminal()
    with progress.Progress(4, "fetch", "shards", stream=stream) as bar:
        for _ in range(4):
            bar.update(1, "3/12 MB")
    assert type(bar.bar).__module__ == "ultralytics.utils.tqdm"  # Ultralytics' own TQDM drew it
    text = stream.getvalue()
    assert "\r" in text and "fetch (3/12 MB)" in text and "4/4" in text


def test_off_a_terminal_a_line_at_most_every_interval_and_one_at_the_end(monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every call: 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    with progress.Progress(9, "pseudo-labels", "images", stream=stream) as bar:
        for _ in range(9):
            bar.update(1, "with objects")
    lines = stream.getvalue().splitlines()
    assert bar.bar is None and "\r" not in stream.getvalue()
    assert 2 <= len(lines) <= 4  # 90 s of work: one line per 30 s, not one per image
    assert lines[-1].startswith("pseudo-labels: 9/9 images, with objects (")

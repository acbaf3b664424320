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


def test_a_stage_says_when_it_starts_and_how_long_it_took_or_that_it_failed(monkeypatch):
    clock = iter([0.0, 0.0, 4.26, 10.0, 10.0, 85.0, 90.0, 90.0, 91.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    with progress.Stage("export: ONNX (imgsz 64)", stream=stream) as stage:
        stage.note = "model.onnx, 12.1 MB"
    with pytest.raises(RuntimeError), progress.Stage("[3/6] distill", stream=stream):
        raise RuntimeError("the step's own error, reported by whoever handles it")
    with progress.Stage("[5/6] evaluate", stream=stream) as stage:
        stage.failed = True  # a failure that comes back as a status
    assert stream.getvalue().splitlines() == [
        "export: ONNX (imgsz 64) ...",
        "export: ONNX (imgsz 64) done in 4.3 s (model.onnx, 12.1 MB)",
        "[3/6] distill ...",
        "[3/6] distill failed after 1 min 15 s",
        "[5/6] evaluate ...",
        "[5/6] evaluate failed after 1.0 s",
    ]


def test_stage_lines_go_to_the_current_stderr(capsys):
    with progress.Stage("verify: ONNX vs PyTorch on 2 images"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "verify: ONNX vs PyTorch on 2 images ..." and err[1].startswith("verify: ONNX vs PyTorch on 2 ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (59.94, "59.9 s"), (60, "1 min 00 s"), (3599, "59 min 59 s"), (7260, "2 h 01 min")],
)
def test_durations_read_as_a_person_reads_them(seconds, text):
    assert progress.duration(seconds) == text


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [(0, 0, "0.0/0.0 kB"), (5_000, 40_000, "5/40 kB"), (120_000, 1_200_000, "0.1/1.2 MB"),
     (3 * 10**8, 4 * 10**8, "300/400 MB"), (7 * 10**8, 3 * 10**9, "0.7/3.0 GB")],
)  # fmt: skip
def test_sizes_are_shown_in_the_unit_of_the_total(done, total, text):
    assert progress.size_note(done, total) == text

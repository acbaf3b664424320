"""The error scheme every entry point follows: one ``error:`` line, exit 2 for bad input, exit 1 for a failure.

- :class:`DistillError` — the *input* is wrong (a bad flag value, a missing file or URI, a dataset that does not
  parse). Exit status 2; rerunning the same command cannot help.
- :class:`RunFailure` — the input was fine but running it failed (a corrupt object, a training crash, an incomplete
  upstream step). Exit status 1; :class:`ServiceUnavailable` is the outage case (S3 or MLflow unreachable after the
  bounded retries), where the same command rerun later finishes what was started.

Code tells them apart by type (``except DistillError`` / ``except RunFailure``) or by :func:`exit_status`, never by
message text; a class that is both (a missing S3 object is bad input *and* a storage error) inherits both.
"""

from __future__ import annotations


class Failure(Exception):
    """Base of the errors the entry points print as one line; ``exit_code`` is the process status to exit with."""

    exit_code = 1


class DistillError(Failure, ValueError):
    """Invalid input: the message names the bad value and, where useful, what would be valid. Exit status 2."""

    exit_code = 2


class RunFailure(Failure, RuntimeError):
    """A failure while running valid input (corrupt data, a crashed step, an incomplete upstream step). Exit 1."""

    exit_code = 1


class ServiceUnavailable(RunFailure):
    """A server the step needs (S3, MLflow) could not be reached or kept failing after the bounded retries."""


def exit_status(error: BaseException) -> int:
    """Return the exit status for ``error``: its ``exit_code`` for our errors, 1 for anything else.

    Examples:
        >>> exit_status(DistillError("bad")), exit_status(ServiceUnavailable("down")), exit_status(OSError())
        (2, 1, 1)
    """
    return int(getattr(error, "exit_code", 1)) if isinstance(error, Failure) else 1


def plain_message(error: BaseException) -> str:
    """Return an Ultralytics error's first meaningful line without its ANSI colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def shown(value: object, width: int = 80) -> str:
    """Return ``repr(value)`` for a message, cut to ``width`` characters with its closing quote or bracket kept.

    A user's bad value is named in the error, but a path or a mapping can be as long as they like; a plain
    ``{value!r:.80}`` would cut the closing quote off and make the value look like it ends mid-word.
    """
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]}...{text[-1]}"

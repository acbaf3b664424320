"""Local paths and S3 key parts made from text the program did not write: checked once, here (issue 37).

A step turns outside text into file names and keys: a dataset or pool manifest read from S3 names the cache folder
(its ``hash``), every file (its ``files``) and every shard; a user names the run (``--run-id``) and the step
(``--name``). Text like ``/etc``, ``../../x`` or ``a/../../b`` in any of these would make a step write outside its
cache or its run's folder. Every such path is built by :func:`confine` and every such single name is checked by
:func:`check_name`, so there is one rule and one place to read it.

Refusals are :class:`UnsafePath`, a :class:`~distill.errors.DistillError` (exit 2, one line naming the value): the
text is the step's *input* — a flag, or a manifest that does not parse as one — and rerunning cannot help. (Bytes
that do not match what a valid manifest says stay a storage failure, exit 1: that is a corrupt object.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import DistillError, shown

#: What a name that becomes one path segment or key segment may hold: letters, digits, ``.``, ``_``, ``-``; it
#: starts with a letter, digit or ``_`` (no hidden file, no ``.``/``..``, no ``-`` a command line would take for a
#: flag). 128 characters at most: well inside a file name's 255 bytes with a suffix added.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
#: Longest path segment a file system takes (bytes, as the OS encodes it).
NAME_MAX = 255
#: Characters no path from outside may hold: NUL and the other control characters, and the line separators — a name
#: that breaks the one ``error:`` line a refusal prints is no file name a dataset needs.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UnsafePath(DistillError):
    """A name or path from outside text would leave its folder, or is no valid name: refused (bad input, exit 2)."""


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a safe single name (:data:`NAME_RE`), else raise :class:`UnsafePath` naming it.

    For run ids, step names and shard names: each becomes one segment of a local path and of an S3 key.

    Examples:
        >>> check_name("run-a", "run_id")
        'run-a'
        >>> check_name("../x", "run_id")
        Traceback (most recent call last):
        ...
        distill.paths.UnsafePath: run_id '../x' is not a valid name: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'
    """  # noqa: E501
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        shown = repr(value)[:80] if not isinstance(value, str) else repr(value[:80])[1:-1]
        raise UnsafePath(
            f"{what} '{shown}' is not a valid name: use 1 to 128 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return value


def check_relative(rel: object, what: str) -> str:
    """Return ``rel`` if it is a relative POSIX path that stays inside its folder, else raise :class:`UnsafePath`.

    A lexical check (no file system access): text, no control character (NUL included), not absolute, no empty,
    ``.`` or ``..`` segment, every segment a file name the OS takes. Used on every path a manifest lists, before any
    of them is used.

    Examples:
        >>> check_relative("images/train/a.jpg", "file")
        'images/train/a.jpg'
        >>> check_relative("images/../../etc/passwd", "file")
        Traceback (most recent call last):
        ...
        distill.paths.UnsafePath: file 'images/../../etc/passwd' would leave its folder (absolute, or an empty, '.' or '..' segment)
    """  # noqa: E501
    if not isinstance(rel, str):
        raise UnsafePath(f"{what} {shown(rel)} is not a path (text)")
    text = repr(rel[:120])[1:-1]
    if _CONTROL_RE.search(rel):
        raise UnsafePath(f"{what} '{text}' holds a control character (NUL, a line break, ...)")
    if rel.startswith("/") or any(part in {"", ".", ".."} for part in rel.split("/")):
        raise UnsafePath(f"{what} '{text}' would leave its folder (absolute, or an empty, '.' or '..' segment)")
    if any(len(os.fsencode(part)) > NAME_MAX for part in rel.split("/")):
        raise UnsafePath(f"{what} '{text}' has a segment longer than {NAME_MAX} bytes")
    return rel


def confine(root: str | Path, *parts: str, what: str = "path") -> Path:
    """Return ``root / parts`` once it is known to lie strictly inside ``root``, else raise :class:`UnsafePath`.

    Each part is checked lexically (:func:`check_relative`: it may hold ``/`` but no absolute path or ``..``), then
    the joined path is resolved — symbolic links followed — and must still lie under the resolved ``root``: a link
    already in the folder cannot carry a write elsewhere either. The returned path is the unresolved join (what the
    caller's messages show); it names the same file.

    Examples:
        >>> str(confine("/cache", "datasets", "0123abcd"))
        '/cache/datasets/0123abcd'
        >>> confine("/cache", "/etc", what="manifest hash")
        Traceback (most recent call last):
        ...
        distill.paths.UnsafePath: manifest hash '/etc' would leave its folder (absolute, or an empty, '.' or '..' segment)
    """  # noqa: E501
    if not parts:
        raise UnsafePath(f"{what}: no name given under '{root}'")
    for part in parts:
        check_relative(part, what)
    path = Path(root).joinpath(*parts)
    base = Path(root).resolve()
    resolved = path.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise UnsafePath(f"{what} '{'/'.join(parts)[:120]}' would be written outside '{root}' (through a link)")
    return path

"""Markdown for every generated table: the evaluate step's report, the model card, the components' reference, the docs.

One escaping and one table layout, so a report, ``components/README.md``, the docs site and the benchmarks' reports
render a cell the same way.
Text from a user or a docstring goes through :func:`cell` (or :func:`code`); numbers the product formats itself are
safe as they are.
"""

from __future__ import annotations

import json
import re
from typing import Any


def cell(text: Any) -> str:
    """Return ``text`` safe in a markdown table cell: one line; outside code spans no raw HTML, ``|``, ``_``, ``*``.

    Code spans are kept as written (a pipe inside one does not split the cell, and an entity there would show).
    """
    parts = re.split(r"(`[^`]+`)", " ".join(str(text).split()))
    for i in range(0, len(parts), 2):
        part = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = re.sub(r"([|_*])", r"\\\1", part)  # no cell split, no emphasis from __init__ or *
    return "".join(parts)


def code(text: Any) -> str:
    """Return ``text`` as inline code (a double delimiter when it holds a backtick)."""
    text = " ".join(str(text).split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """Return the lines of a markdown table: the header, the rule, one line per row (cells as given; empty: ``| |``)."""
    return [_line(header), "|" + "---|" * len(header), *(_line(r) for r in rows)]


def _line(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return a markdown table (:func:`table_lines` joined)."""
    return "\n".join(table_lines(header, rows))


def value_text(value: Any) -> str:
    """Return a default as the user types it: ``true``/``false``, JSON for containers, ``""`` for the empty text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, list | tuple | dict):
        return code(json.dumps(value))
    if value == "":
        return code('""')
    return code(value)


def from_rst(text: str) -> str:
    """Return a docstring-style text as markdown: ``:func:`~x.y``` and ````x```` become `` `x.y` `` and `` `x` ``."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)

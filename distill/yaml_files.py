"""Reading a user's YAML (a ``data.yaml``, a model ``.yaml``, a ``key=value`` word) with bounded cost.

YAML aliases let a 1 KB document stand for billions of nodes (the "billion laughs": each level lists the one above
nine times). PyYAML builds such a document as shared references in milliseconds, but whatever walks it afterwards —
Ultralytics' dataset check, a dump, a copy — takes minutes and gigabytes. So every user YAML is read here: the file
size is capped (:data:`MAX_BYTES`), and the document is composed first and refused, as one :class:`DistillError`
line, when its aliases add more than :data:`ALIAS_NODES` nodes to those written out, or refer to themselves — before
anything is constructed, and before Ultralytics reads the same file with its own loader. A document without aliases
passes whatever its shape: within the size cap it cannot hold more than :data:`MAX_NODES` nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import DistillError

#: The largest YAML file read (a data.yaml naming 100 000 classes is ~1.5 MB).
MAX_BYTES = 2 * 1024 * 1024
#: The most nodes a document may stand for, aliases expanded (each scalar, list and mapping is one): every node
#: written takes at least two characters (``1,``), so no alias-free document within :data:`MAX_BYTES` holds more.
MAX_NODES = MAX_BYTES // 2
#: The most nodes aliases may add to those written out (a merge key ``<<: *defaults`` or a repeated list adds a few).
ALIAS_NODES = 100_000
#: PyYAML's safe loader, in C where libyaml is there (as Ultralytics reads it): composing is ~5x faster.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path, what: str) -> Any:
    """Return the YAML document in the file ``path``; ``what`` names it in errors (e.g. ``"data 'x/data.yaml'"``).

    Raises:
        DistillError: The file is missing, over :data:`MAX_BYTES`, not UTF-8, not valid YAML, or its aliases add
            over :data:`ALIAS_NODES` nodes (or expand into themselves).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise DistillError(f"{what} not found") from None
    if size > MAX_BYTES:
        raise DistillError(f"{what} is {size} bytes: a YAML file over {MAX_BYTES // 2**20} MiB is refused")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DistillError(f"{what} is not valid YAML: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DistillError(f"{what} cannot be read: {e.strerror or e}") from None
    return parse_yaml(text, what)


def parse_yaml(text: str, what: str) -> Any:
    """Return the YAML document in ``text`` (one document, safe types only), bounded as :func:`read_yaml` is.

    Examples:
        >>> parse_yaml("{a: &x [1, 2], b: *x}", "example")
        {'a': [1, 2], 'b': [1, 2]}
    """
    if len(text) > MAX_BYTES:
        raise DistillError(
            f"{what} is {len(text)} characters: a YAML document over {MAX_BYTES // 2**20} MiB is refused"
        )
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise DistillError(f"{what} is not valid YAML: {_reason(e)}") from None
    except RecursionError:
        raise DistillError(f"{what} is nested too deeply to be a dataset or model description") from None
    finally:
        loader.dispose()


def _reason(error: yaml.YAMLError) -> str:
    """Return a YAML error as one line: what is wrong, and where (``... (line 2, column 1)``)."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if not problem:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _check_expansion(root: yaml.Node, what: str) -> None:
    """Refuse a composed document whose aliases add over :data:`ALIAS_NODES` nodes, or expand into themselves.

    Each node's expanded size is counted once (memoised by identity), so the check costs one visit per distinct node
    however large the expansion: a billion-laughs document is refused after a few dozen visits.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise DistillError(f"{what}: a YAML alias refers to the node that contains it (an endless document)")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise DistillError(f"{what}: its YAML aliases expand to more than {MAX_NODES} nodes; refused")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    if expanded - len(sizes) > ALIAS_NODES:  # len(sizes): the nodes written out
        raise DistillError(
            f"{what}: its YAML aliases expand {len(sizes)} nodes into {expanded} (more than {ALIAS_NODES} added); "
            "refused"
        )

"""The layers of ``distill/`` read top-down, with no circle and no import running back up.

Every import of a ``distill`` module — at the top of a file or inside a function, which runs just as surely — is
read from the source (``ast``) and must point to a module of the same layer or a lower one, and the imports between
modules must form no circle. A new module fails here until it is given its layer in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]

#: Top-down: the entry points, the pipelines, the KFP components, the pipeline steps, the engine (distillation,
#: pools, pseudo-labels), the data and registry side (datasets, S3, shards, the stack; the gate, export), then the
#: foundations every layer may use (errors, settings and their spec, paths, YAML, the Ultralytics seams, losses).
#: A package's name stands for all of its modules: the folders are the layers, and a module at the top of
#: ``distill`` is named on its own.
LAYERS: dict[str, int] = {
    f"distill.{name}" if name != "distill" else name: level
    for level, names in (
        (6, "__main__ cli"),
        (5, "pipelines"),
        (4, "components"),
        (3, "steps"),
        (2, "engine"),
        (1, "data registry stack"),
        (0, "distill errors config settings paths yaml_files adapter offline launch devices losses progress markdown"),
    )
    for name in names.split()
}


#: Top-level folders installed as sub-packages of ``distill`` (pyproject's ``package-dir``).
MAPPED = {"components": "distill.components", "pipelines": "distill.pipelines"}


def modules() -> dict[str, Path]:
    """Every module of the ``distill`` package, by dotted name (a package by its own name), mapped folders included."""
    out = {}
    for folder, package in {"distill": "distill", **MAPPED}.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = (*package.split("."), *path.relative_to(ROOT / folder).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The ``distill`` modules that the module ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target not in known and "." in target:  # a name taken from a module: the module
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def layer(name: str) -> int | None:
    """The declared layer of a module: its own entry, else its closest package's."""
    while name not in LAYERS and "." in name:
        name = name.rpartition(".")[0]
    return LAYERS.get(name)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer():
    assert [name for name in modules() if layer(name) is None] == []


def test_no_import_runs_back_up():
    back_up = sorted(
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in graph().items()
        for target in targets
        if layer(target) is not None and layer(source) is not None and layer(target) > layer(source)
    )
    assert back_up == []


def test_no_circle_between_modules():
    edges = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_the_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The check itself: a function-level relative import is found, resolved and its layer compared."""
    source = tmp_path / "pseudo_labels.py"
    source.write_text("def f():\n    from ..steps.unlabeled_pool import classify\n    from ..data import storage\n")
    known = {
        "distill.engine.pseudo_labels": source,
        "distill.steps.unlabeled_pool": source,
        "distill.data": source,
        "distill.data.storage": source,
    }
    found = imported("distill.engine.pseudo_labels", source, known)
    assert found == {"distill.steps.unlabeled_pool", "distill.data.storage"}
    assert layer("distill.steps.unlabeled_pool") > layer("distill.engine.pseudo_labels") > layer("distill.data.storage")


def test_every_package_is_installed():
    """pyproject lists the packages by name: a new sub-package missing there would be left out of wheel and image."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {v: k for k, v in setuptools["package-dir"].items()} == MAPPED
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found == set(setuptools["packages"])

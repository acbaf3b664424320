"""MkDocs hook: the reference pages, generated from the code at build time so the docs cannot drift from it.

A page asks for a generated block with a marker on a line of its own, ``<!-- reference:NAME -->`` (:data:`BLOCKS`):

- ``cli`` — every ``yolo-distill`` command and its arguments, walked from :func:`distill.cli.build_parser`;
- ``settings`` — every group of declared settings in :mod:`distill.settings` (each public :class:`Option` or tuple of
  them: ``KD``, ``GATE``, ...), then the options of each pipeline step (``STEP_OPTIONS``);
- ``pipeline`` — the pipeline's parameters, :func:`distill.pipelines.pipeline.pipeline_parameters`;
- ``components`` — each KFP component's inputs, outputs and settings mappings, from its component spec
  (:func:`distill.components.readme.render`, which also writes ``components/README.md``);
- ``seams`` / ``assumptions`` — what the engine relies on in Ultralytics (:mod:`distill.adapter`);
- ``charts`` — every benchmark report's chart in ``benchmarks/results/``.

The generators walk whatever the code declares (argparse actions, the ``Option`` tuples the settings module exposes),
never a list of names, so a new setting shows up by itself; ``tests/test_docs.py`` checks that every one does. An
unknown marker, or a pipeline parameter with no description anywhere, is a warning, which ``mkdocs build --strict``
(``make docs``, the tests) turns into a failed build.

The hook also adds files from outside ``docs/`` to the site, generated rather than copied by hand: the benchmark
charts (``benchmarks/results/*.png``, linked from the pages as ``benchmarks/results/<name>.png``) and the benchmarks'
lab notebook (``benchmarks/README.md``, served as ``benchmarks/notebook.md``).
"""

from __future__ import annotations

import argparse
import ast
import logging
import posixpath
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# One escaping for every generated table (distill.markdown); a setting's row is the components' reference's own.
from distill.components import readme
from distill.components.readme import meaning, option_row
from distill.markdown import cell, code, from_rst, table, value_text

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
NOTEBOOK = "benchmarks/notebook.md"
MARKER = re.compile(r"^<!-- reference:([a-z-]+) -->[ \t]*$", re.MULTILINE)

log = logging.getLogger("mkdocs.hooks.reference")

#: Headings for the settings groups of :mod:`distill.settings`, by attribute name; a group not listed here is shown
#: under its own name (the table is generated either way).
GROUP_TITLES = {
    "KD": "Distillation settings",
    "GATE": "Promotion gate",
    "UNLABELED": "Unlabelled pool",
    "TRAINING": "Training",
    "TRACKING": "Tracking",
    "RUN_ID": "Pipeline run",
    "PREFIX": "S3 prefix",
}

#: What the pipeline's own parameters mean: those that are no declared :class:`distill.settings.Option` (the KD
#: settings, the gate and the step options carry their help with their declaration, and the table takes it there).
PIPELINE_HELP = {
    "data_source": "the labelled dataset: a local folder or `.zip`, an `s3://` prefix or an `s3://...zip`",
    "sweep_configs": "the sweep variant's `{loss, layers}` pairs, one distill + evaluate each (`dsl.ParallelFor`)",
    "unlabeled_source": "unlabelled images (a folder, `.zip`, `s3://` prefix or `.zip`), read as they are when the run "
    "starts: prepare-data publishes the snapshot as a pool and distill trains on it; empty: none",
    "data_format": "`yolo`, `coco` or `voc`",
    "classes": "class names in index order, comma-separated (VOC; empty: the names found)",
    "teacher_model": "the teacher's model `.yaml` (trained by the pipeline) or weights URI",
    "teacher_weights": "a trained teacher's weights URI: skips teacher training (the scheduled-retraining case)",
    "student_model": "the student's model `.yaml` or weights URI",
    "teacher_epochs": "the teacher's training epochs",
    "student_epochs": "the baseline's and the distilled student's epochs",
    "train_args": 'any other Ultralytics train argument for the three training steps, e.g. `{"lr0": 0.02}`',
    "registry_name": "the registered model's name in the MLflow registry",
    "s3_prefix": "`s3://bucket/prefix` the steps write under (empty: the secret's `YOLO_DISTILL_S3_PREFIX`)",
    "accelerator": "the accelerator resource of the training steps",
    "gpus": "accelerators per training pod (Ultralytics DDP over them)",
    "nodes": "nodes per training step: more than 1 runs each training step as a Kubeflow Trainer TrainJob",
    "run_id": "the pipeline run id the steps file their outputs under (default: the KFP run id)",
}


# -- mkdocs events ---------------------------------------------------------------------------------------------------


def on_files(files, config):
    """Add the benchmark charts and the benchmarks' lab notebook to the site, from where they live in the repository."""
    from mkdocs.structure.files import File

    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{png.name}", abs_src_path=str(png)))
    notebook = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, NOTEBOOK, content=notebook))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each ``<!-- reference:NAME -->`` marker of a page with the block :data:`BLOCKS` generates for it."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            log.warning("%s: unknown reference block '%s' (known: %s)", page.file.src_uri, name, ", ".join(BLOCKS))
            return match.group(0)
        return BLOCKS[name](page.file.src_uri)

    return MARKER.sub(replace, markdown)


# -- the command line ------------------------------------------------------------------------------------------------


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), summary: str = ""
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """Yield ``(path, summary, parser)`` for every command that takes arguments of its own, depth first.

    Sub-commands are found from the parser's own sub-parser actions (``argparse`` keeps them in ``_actions``; the
    summary is the ``help=`` each was added with), so a new command or flag appears without touching this hook.
    """
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if any(own_arguments(parser)) or not subparsers:
        yield path, summary or (parser.description or ""), parser
    for action in subparsers:
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, child in action.choices.items():
            yield from commands(child, (*path, name), helps.get(name, ""))


def own_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Return a parser's arguments, without ``--help`` and its sub-command choosers."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and a.help != argparse.SUPPRESS
    ]


def argument_row(action: argparse.Action) -> list[str]:
    """Return the table row of one argument: how it is written, its default, its choices and its help."""
    if action.option_strings and action.nargs == 0:  # a switch: store_true, --x / --no-x
        written = " / ".join(code(s) for s in action.option_strings)
    elif action.option_strings:
        metavar = action.metavar or action.dest.upper()
        written = " / ".join(code(f"{s} {metavar}") for s in action.option_strings)
    else:
        name = action.metavar or action.dest
        written = code(f"{name} ..." if action.nargs in ("*", "+") else name)
    if action.required and action.nargs not in ("*", "?"):  # argparse marks a '*' positional required
        default = "required"
    elif action.default in (None, argparse.SUPPRESS) or (action.nargs in ("*", "+") and action.default == []):
        default = "—"
    else:
        default = value_text(action.default)
    return [written, default, meaning(action.help or "", action.choices)]


def cli_block(_page: str) -> str:
    """Return every command of ``yolo-distill`` with its arguments, from the parser the CLI itself runs."""
    from distill.cli import build_parser

    out = []
    for path, summary, parser in commands(build_parser(), ("yolo-distill",)):
        rows = [argument_row(a) for a in own_arguments(parser)]
        out.append(f"### `{' '.join(path)}`\n\n{cell(summary)}\n")
        out.append(table(["argument", "default", "meaning"], rows) if rows else "No arguments.")
        out.append("")
    return "\n".join(out)


# -- the settings spec -----------------------------------------------------------------------------------------------


def setting_groups() -> dict[str, tuple]:
    """Return every public group of declared settings in :mod:`distill.settings`, in the module's order.

    A group is a module attribute in capitals holding an :class:`~distill.settings.Option` or a tuple of them
    (``KD``, ``GATE``, ``UNLABELED``, ...); ``STEP_OPTIONS`` maps each step to the options it takes.
    """
    from distill import settings

    groups = {}
    for name, value in vars(settings).items():
        if name.startswith("_") or not name.isupper():
            continue
        if isinstance(value, settings.Option):
            groups[name] = (value,)
        elif isinstance(value, tuple) and value and all(isinstance(o, settings.Option) for o in value):
            groups[name] = value
    return groups


def doc_comments(path: Path) -> dict[str, str]:
    """Return the ``#:`` comment lines above each top-level assignment of a module (Sphinx's convention), by name."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        above, number = [], node.lineno - 2
        while number >= 0 and lines[number].lstrip().startswith("#:"):
            above.insert(0, lines[number].lstrip()[2:].strip())
            number -= 1
        for target in targets:
            if isinstance(target, ast.Name) and above:
                out[target.id] = " ".join(above)
    return out


def group_title(name: str) -> str:
    """Return the heading of a settings group: :data:`GROUP_TITLES`, else its name (``RUN_ID`` → ``Run id``)."""
    return GROUP_TITLES.get(name, name.replace("_", " ").capitalize())


def group_anchor(name: str) -> str:
    """Return the heading id of a settings group (``KD`` → ``settings-kd``)."""
    return "settings-" + name.lower().replace("_", "-")


def settings_block(_page: str) -> str:
    """Return a table per group of declared settings, then each step's options (groups it takes by reference)."""
    from distill import settings

    groups = setting_groups()
    comments = doc_comments(Path(settings.__file__))
    header = ["setting", "type", "default", "meaning"]
    out = []
    for name, options in groups.items():
        out.append(f"### {group_title(name)} {{#{group_anchor(name)}}}\n")
        about = from_rst(comments.get(name, ""))
        out.append(f"`distill.settings.{name}`" + (f": {cell(about)}" if about else "") + "\n")
        out.append(table(header, [option_row(o) for o in options]) + "\n")
    out.append("### Step options {#step-options}\n")
    out.append(
        "What `yolo-distill step NAME` takes (`distill.settings.STEP_OPTIONS`), the same options the pipeline hands "
        "each step; groups above are listed by name.\n"
    )
    for step, options in settings.STEP_OPTIONS.items():
        members = {id(o): name for name, group in groups.items() for o in group}
        taken = sorted({members[id(o)] for o in options if id(o) in members}, key=list(groups).index)
        own = [o for o in options if id(o) not in members]
        out.append(f"#### `yolo-distill step {step}` {{#step-{step}}}\n")
        if own:
            out.append(table(header, [option_row(o) for o in own]) + "\n")
        if taken:
            links = ", ".join(f"[{group_title(n)}](#{group_anchor(n)})" for n in taken)
            out.append(f"And every setting of: {links}.\n")
    return "\n".join(out)


# -- the pipeline ----------------------------------------------------------------------------------------------------


def parameter_help(name: str) -> str | None:
    """Return what a pipeline parameter means: from its declared :class:`Option`, else :data:`PIPELINE_HELP`."""
    from distill import settings

    if name in PIPELINE_HELP:
        return PIPELINE_HELP[name]
    declared = {o.name: o for group in setting_groups().values() for o in group}
    for options in settings.STEP_OPTIONS.values():
        declared.update({o.name: o for o in options if o.name not in declared})
    if name in declared:
        return declared[name].help
    return None


def parameter_default(default: Any) -> str:
    """Return a pipeline parameter's default as text: required ones and KFP placeholders named, not printed."""
    import inspect

    if default is inspect.Parameter.empty:
        return "required"
    if isinstance(default, str) and default.startswith("{{$"):
        return "the KFP run id"
    return value_text(default)


def pipeline_block(_page: str) -> str:
    """Return the pipeline's parameters (name, type, default, meaning), and what the sweep variant changes."""
    from distill.pipelines.pipeline import pipeline_parameters

    plain = pipeline_parameters(sweep=False)
    rows = []
    for name, kind, default in plain:
        about = parameter_help(name)
        if about is None:
            log.warning("pipeline parameter '%s' has no description: declare it as an Option or add it to %s", name,
                        "docs/hooks/reference.py PIPELINE_HELP")  # fmt: skip
            about = ""
        rows.append([code(name), code(getattr(kind, "__name__", kind)), parameter_default(default), cell(about)])
    out = [table(["parameter", "type", "default", "meaning"], rows), ""]
    sweep = pipeline_parameters(sweep=True)
    names, sweep_names = [n for n, _, _ in plain], [n for n, _, _ in sweep]
    added = [(n, d) for n, _, d in sweep if n not in names]
    dropped = [n for n in names if n not in sweep_names]
    if added or dropped:
        text = "The sweep variant (`pipeline compile --sweep`)"
        if added:
            text += " adds " + ", ".join(f"{code(n)} (default {parameter_default(d)})" for n, d in added)
        if dropped:
            text += (
                (" and" if added else "") + " takes " + ", ".join(code(n) for n in dropped) + " from each sweep entry"
            )
        out.append(text + ".\n")
    return "\n".join(out)


# -- the components --------------------------------------------------------------------------------------------------


def components_block(_page: str) -> str:
    """Return every KFP component's reference, as ``components/README.md`` has it (from each component's spec)."""
    return readme.render()


# -- Ultralytics -----------------------------------------------------------------------------------------------------


def owner_name(owner: Any) -> str:
    """Return a short dotted name for a class, function or module of Ultralytics."""
    qualname = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", str(owner))
    return qualname


def seams_block(_page: str) -> str:
    """Return every underscored Ultralytics name the engine relies on (:data:`distill.adapter.seams.SEAMS`)."""
    import distill

    distill.configure()  # before Ultralytics is first imported: offline, its own config dir
    from distill.adapter.seams import SEAMS

    rows = [[code(f"{owner_name(s.owner)}.{s.name}"), s.kind, cell(s.why), cell(s.site)] for s in SEAMS]
    return table(["Ultralytics name", "kind", "what for, and why no public API serves", "where we use it"], rows)


def assumptions_block(_page: str) -> str:
    """Return every Ultralytics behaviour relied on through public names (:data:`...assumptions.ASSUMPTIONS`)."""
    import distill

    distill.configure()
    from distill.adapter.assumptions import ASSUMPTIONS

    rows = [[code(a.name), code(owner_name(a.owner)), cell(a.why), cell(a.site)] for a in ASSUMPTIONS]
    return table(["assumption", "Ultralytics source", "what we rely on", "where"], rows)


# -- benchmark charts ------------------------------------------------------------------------------------------------


def charts_block(page: str) -> str:
    """Return a list of every benchmark report's chart, linked relative to ``page``."""
    here = posixpath.dirname(page)
    items = []
    for png in sorted(RESULTS.glob("*.png")):
        target = posixpath.relpath(f"benchmarks/results/{png.name}", here or ".")
        items.append(f"- [{png.stem}]({target})")
    return "\n".join(items) if items else "No charts yet."


BLOCKS: dict[str, Callable[[str], str]] = {
    "cli": cli_block,
    "settings": settings_block,
    "pipeline": pipeline_block,
    "components": components_block,
    "seams": seams_block,
    "assumptions": assumptions_block,
    "charts": charts_block,
}

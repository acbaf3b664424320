"""A reference per component, generated from its KFP component spec: ``components/README.md`` and a docs page.

Each component's description, inputs (type, default, meaning) and outputs are read from the spec KFP builds from the
function (:func:`distill.components.steps.build_components`: its signature and docstring), never written out again;
the keys of a mapping input that holds declared settings (``training``, ``kd``, ``gate``) come from the settings spec
(:mod:`distill.settings`: type, default, help). ``python -m components.readme`` (from the repository root) rewrites
``components/README.md``, and a test fails while the committed file differs; ``docs/hooks/reference.py`` puts the same
text in the docs' ``reference/components.md`` when the site is built.

Tables are written with :mod:`distill.markdown` (one escaping for every generated table); :func:`option_row`, a
declared setting as a row, is the docs hook's too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from distill.markdown import cell, code, from_rst, table, value_text

#: The committed reference this module writes.
README = Path(__file__).resolve().with_name("README.md")
#: How to regenerate it (the message of the test that compares it).
COMMAND = "python -m components.readme"
#: KFP's parameter types by the Python annotation the component functions use.
PYTHON_TYPES = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool", "Dict": "dict", "List": "list"}

# -- a declared setting as a table row -------------------------------------------------------------------------------


def strip_default(text: str) -> str:
    """Drop a trailing ``(default: ...)`` from a help text: the table has a default column."""
    head, sep, tail = text.rpartition(" (default: ")
    return head if sep and tail.endswith(")") and tail.count("(") < tail.count(")") else text


def meaning(help_text: str, choices) -> str:
    """Return a help text for a table cell, with the choices it allows (when it has a fixed set)."""
    text = cell(strip_default(help_text))
    if choices:
        text += ("; " if text else "") + "one of " + " ".join(code(c) for c in choices)
    return text


def option_row(option) -> list[str]:
    """Return the table row of one declared setting: name, type, default, and its help with its choices."""
    kind = option.kind.__name__ + (", optional" if option.optional else "")
    if option.required:
        default = "required"
    elif option.default is None:
        default = "— (the library chooses)" if option.optional else "—"
    else:
        default = value_text(option.default)
    return [code(option.name), cell(kind), default, meaning(option.help, option.choices)]


# -- the components --------------------------------------------------------------------------------------------------


def components() -> dict[str, Any]:
    """Return the components by function name, built as the pipeline builds them (the image does not show here)."""
    from .steps import build_components

    return vars(build_components("IMAGE"))


def setting_keys(component: str, name: str) -> tuple:
    """Return the declared settings (:class:`distill.settings.Option`) the mapping input ``name`` holds, if any.

    ``training`` holds the training options (evaluate's: those the models are validated with), ``kd`` the KD
    settings and ``gate`` the promotion gate's: each component types them back by that declaration.
    """
    from distill import settings

    groups = {"training": settings.TRAINING, "kd": settings.KD, "gate": settings.GATE}
    options = groups.get(name, ())
    if component == "evaluate" and name == "training":
        options = tuple(o for o in options if o.name in settings.EVALUATE_TRAINING)
    return options


def type_text(spec: Any) -> str:
    """Return an input's or output's type: the Python type of a parameter, the artifact class of an artifact."""
    kind = spec.type
    if kind.startswith("system."):  # system.Metrics@0.0.1
        artifact = code(kind.removeprefix("system.").split("@")[0]) + " artifact"
        return "list of " + artifact + "s" if getattr(spec, "is_artifact_list", False) else artifact
    return code(PYTHON_TYPES.get(kind, kind))


def input_rows(spec: Any, function: str) -> list[list[str]]:
    """Return a component's inputs as table rows: name, type, default (or ``required``), meaning."""
    rows = []
    for name, given in spec.inputs.items():
        default = value_text(given.default) if given.optional else "required"
        about = cell(from_rst(given.description or ""))
        if setting_keys(function, name):
            about += f" Keys: [below](#{keys_anchor(spec.name, name)})."
        rows.append([code(name), type_text(given), default, about])
    return rows


def keys_heading(component: str, name: str) -> str:
    """Return the heading of a settings mapping's keys (one per component and input: its anchor is unique)."""
    return f"`{name}` keys of `{component}`"


def keys_anchor(component: str, name: str) -> str:
    """Return the anchor GitHub and MkDocs both give :func:`keys_heading` (``training-keys-of-train``)."""
    return f"{name}-keys-of-{component}".lower()


def component_section(function: str, component: Any) -> str:
    """Return one component's reference: description, inputs, outputs, the keys of its settings mappings."""
    spec = component.component_spec
    description = cell(from_rst(spec.description or ""))  # one paragraph: KFP joins the docstring's lines
    out = [f"## `{spec.name}`", "", f"`distill.components.steps.{function}`: {description}", ""]
    out += [table(["input", "type", "default", "meaning"], input_rows(spec, function)), ""]
    outputs = [[code(n), type_text(o), cell(from_rst(o.description or ""))] for n, o in (spec.outputs or {}).items()]
    out += [table(["output", "type", "meaning"], outputs), ""] if outputs else []
    for name in spec.inputs:
        options = setting_keys(function, name)
        if options:
            out += [f"### {keys_heading(spec.name, name)}", ""]
            out += [table(["key", "type", "default", "meaning"], [option_row(o) for o in options]), ""]
    return "\n".join(out)


def render() -> str:
    """Return the reference of every component: a summary table, then one section per component (``##`` each)."""
    built = components()
    rows = []
    for component in built.values():
        spec = component.component_spec
        summary = (spec.description or "").split("\n")[0]
        rows.append([f"[{code(spec.name)}](#{spec.name})", cell(from_rst(summary))])
    out = [table(["component", "what it does"], rows), ""]
    out += [component_section(function, component) for function, component in built.items()]
    return "\n".join(out).rstrip() + "\n"


def readme_text() -> str:
    """Return ``components/README.md`` as :data:`COMMAND` writes it: a short introduction, then :func:`render`."""
    intro = f"""# Kubeflow Pipelines components

<!-- Generated by `{COMMAND}` from the components' KFP specs and distill/settings.py: do not edit. -->

One lightweight component per pipeline step, in `components/steps.py` (installed as `distill.components.steps`):
each is a thin call into `distill.steps`, bound to the project image by `build_components(image)`; the pipeline
(`pipelines/pipeline.py`) wires them. What follows is generated from each component's KFP spec (its signature and
docstring) and, for the settings mappings (`training`, `kd`, `gate`), from their one declaration in
`distill/settings.py`. Regenerate it with `{COMMAND}` from the repository root (a test fails
while it differs); the docs have the same reference, `docs/reference/components.md`.

"""
    return intro + render()


def main() -> int:
    """Write :data:`README` (the components' reference) and say where."""
    README.write_text(readme_text(), encoding="utf-8")
    print(f"wrote {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

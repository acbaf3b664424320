"""Write the dependency lock: every distribution of this environment as a plain ``name==version`` line.

Usage (from the repository root, in a ``make install`` environment)::

    .venv/bin/python images/lock.py > images/requirements.lock    # write
    .venv/bin/python images/lock.py --check                          # check the committed lock (exit 1 on problems)

Unlike ``pip freeze``, which records a package installed from a local wheel as ``name @ file:///...whl`` (a line that
installs only on the machine that had the file), this reads only each distribution's name and version from its
metadata, so it cannot emit a URL or a path. The project itself and the installer's own tools are left out.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

ROOT = Path(__file__).resolve().parent.parent
#: A plain pin: a PEP 508 name, ``==``, a version, optionally followed by ``--hash=algo:digest`` options.
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)(\s+--hash=\w+:[0-9a-f]+)*$"
)

#: Not pinned: the project (installed editable from the checkout) and the installer's own packages.
SKIP = {"yolo-distill", "pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    """Return the PEP 503 normalised form of a distribution name (``Foo_Bar`` → ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines() -> list[str]:
    """Return one ``name==version`` line per installed distribution, sorted by normalised name."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in SKIP:
            pins[canonical(name)] = f"{canonical(name)}=={dist.version}"
    return [pins[k] for k in sorted(pins)]


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """Return the project's dependencies and every optional group's (self-references like ``pkg[extra]`` left out)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        texts.extend(group)
    reqs = [Requirement(t) for t in texts]
    return [r for r in reqs if canonical(r.name) != canonical(project["name"])]


def lock_problems(text: str, requirements: list[Requirement]) -> list[str]:
    """Return one message per lock line that is not a plain pin, or pins a version ``requirements`` exclude.

    Blank lines and ``#`` comments are allowed; a required package missing from the lock is a problem too, since
    the lock is installed as a constraint and would then leave that package unpinned.
    """
    problems: list[str] = []
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if not match:
            problems.append(f"line {number}: '{line[:120]}' is not a plain name==version pin (no URL or path)")
            continue
        pins[canonical(match["name"])] = match["version"]
    for req in requirements:
        version = pins.get(canonical(req.name))
        if version is None:
            problems.append(f"{req.name}: required by pyproject.toml ({req}) but not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is excluded by pyproject.toml's '{req}'")
    return problems


def main(argv: list[str]) -> int:
    """Print the lock, or with ``--check`` the committed lock's problems (status 1 if any)."""
    if argv[:1] == ["--check"]:
        try:
            problems = lock_problems((ROOT / "images" / "requirements.lock").read_text(), project_requirements())
        except (OSError, InvalidRequirement) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    sys.stdout.write("\n".join(lock_lines()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

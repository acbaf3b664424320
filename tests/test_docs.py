"""The docs site: its reference is generated from the settings spec, it builds strictly, and a real browser renders it.

The reference pages are made at build time by ``docs/hooks/reference.py`` from the code (the CLI parser, the setting
declarations of :mod:`distill.settings`, the pipeline's parameters); the fast tests here check that every declared
setting, flag and parameter reaches them. ``mkdocs build --strict`` fails on a broken link, a missing page or anchor,
or a reference block the hook cannot make; headless Chromium (Debian's ``chromium``, driven over the DevTools protocol
on a pipe, with the standard library only) fails the site on a page error, a failed request or an image that does not
load. Where Chromium is not installed the browser test skips, saying so (``.ci/run`` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import http.server
import importlib
import importlib.util
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from distill import settings
from distill.cli import build_parser

HOOK = ROOT / "docs" / "hooks" / "reference.py"


@functools.cache
def hook():
    """The docs' reference hook, loaded from its file (``docs/`` is no package)."""
    spec = importlib.util.spec_from_file_location("docs_reference_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def declared_options() -> list[settings.Option]:
    """Every Option :mod:`distill.settings` exposes, however it groups them (found here without the hook's help)."""
    found: dict[int, settings.Option] = {}
    for value in vars(settings).values():
        items = value.values() if isinstance(value, dict) else [value]
        for item in items:
            for option in item if isinstance(item, tuple) else (item,):
                if isinstance(option, settings.Option):
                    found[id(option)] = option
    return list(found.values())


def table_names(markdown: str) -> set[str]:
    """The first-column names of every table row in ``markdown`` (`` `name` `` or `` `--flag X` ``)."""
    return set(re.findall(r"^\| `([^`]+)` \|", markdown, flags=re.MULTILINE))


def cli_sections(markdown: str) -> dict[str, str]:
    """The generated CLI reference split by command: ``{"yolo-distill step train": "...", ...}``."""
    parts = re.split(r"^### `([^`]+)`$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def flags_in(section: str) -> set[str]:
    """The option strings a CLI reference section lists (each row's first cell: `` `--x VALUE` / `--y` ``)."""
    rows = re.findall(r"^\| (`[^|]+?`(?: / `[^|]+?`)*) \|", section, flags=re.MULTILINE)
    return {word.split()[0] for row in rows for word in re.findall(r"`([^`]+)`", row)}


@pytest.mark.fast
def test_every_declared_setting_is_in_the_settings_reference():
    reference = hook().settings_block("reference/settings.md")
    names = table_names(reference)
    required = {o.name for o in (*settings.KD, *settings.GATE)}
    required |= {o.name for options in settings.STEP_OPTIONS.values() for o in options}
    required |= {o.name for o in declared_options()}
    assert required - names == set(), "settings missing from the generated reference"
    assert {o.name for o in settings.KD} <= names and len(settings.KD) > 20  # the real spec, not an empty one
    for step in settings.STEP_OPTIONS:
        assert f"#### `yolo-distill step {step}`" in reference


@pytest.mark.fast
def test_every_command_and_flag_is_in_the_cli_reference():
    sections = cli_sections(hook().cli_block("reference/cli.md"))

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")

    checked = 0
    for path, parser in walk(build_parser(), "yolo-distill"):
        flags = {s for a in parser._actions for s in a.option_strings if s not in {"-h", "--help"}}
        if not flags:
            continue
        assert path in sections, f"{path} missing from the CLI reference"
        assert flags - flags_in(sections[path]) == set(), f"{path}: flags missing from the CLI reference"
        checked += 1
    assert checked >= 10
    distill_flags = flags_in(sections["yolo-distill distill"])
    assert {o.flag for o in settings.KD} <= distill_flags  # every KD setting is a flag of the engine's distill
    for step, options in settings.STEP_OPTIONS.items():
        assert {o.flag for o in options} <= flags_in(sections[f"yolo-distill step {step}"]), step
    for step in ("evaluate", "register"):
        assert {o.flag for o in settings.GATE} <= flags_in(sections[f"yolo-distill step {step}"]), step


@pytest.mark.fast
def test_every_pipeline_parameter_is_in_the_pipeline_reference():
    from distill.pipelines.pipeline import pipeline_parameters

    reference = hook().pipeline_block("reference/pipeline.md")
    plain = [name for name, _, _ in pipeline_parameters(sweep=False)]
    assert set(plain) - table_names(reference) == set(), "pipeline parameters missing from the generated reference"
    for name, _, _ in pipeline_parameters(sweep=True):
        assert f"`{name}`" in reference, name
    assert {o.name for o in (*settings.KD, *settings.GATE)} <= set(plain)


def component_sections(markdown: str) -> dict[str, tuple[str, dict[str, set[str]]]]:
    """The generated components reference by component (``## `name` ``): its own tables' text and, by input, the key
    names of each settings mapping (``### `training` keys of `train` ``)."""
    parts = re.split(r"^## `([^`]+)`$", markdown, flags=re.MULTILINE)
    out = {}
    for name, text in zip(parts[1::2], parts[2::2], strict=True):
        own, *keys = re.split(r"^### ", text, flags=re.MULTILINE)
        out[name] = own, {re.match(r"`(\w+)` keys of", k).group(1): table_names(k) for k in keys}
    return out


@pytest.mark.fast
def test_every_component_input_and_output_is_in_the_components_reference():
    """Each component of the pipeline, each of its inputs and outputs, and the keys of its settings mappings."""
    from distill.components.steps import build_components

    sections = component_sections(hook().components_block("reference/components.md"))
    built = vars(build_components("registry.example/y:1"))
    assert set(sections) == {c.component_spec.name for c in built.values()} and len(built) >= 6
    for component in built.values():
        spec = component.component_spec
        own, keys = sections[spec.name]
        assert set(spec.inputs) | set(spec.outputs or {}) <= table_names(own), spec.name
        for name, given in spec.inputs.items():
            assert given.description, f"{spec.name}: input '{name}' has no Args text in its docstring"
            assert name not in {"training", "gate", "kd"} or keys.get(name), f"{spec.name}: keys of '{name}' missing"
    for name in ("evaluate", "register"):
        assert sections[name][1]["gate"] == {o.name for o in settings.GATE}, name
    assert sections["evaluate"][1]["training"] == set(settings.EVALUATE_TRAINING)
    assert sections["train"][1]["training"] == sections["distill"][1]["training"] == settings.TRAINING_NAMES
    assert sections["distill"][1]["kd"] == {o.name for o in settings.KD}


@pytest.mark.fast
def test_components_readme_is_the_generated_reference():
    from distill.components import readme

    committed = (ROOT / "components" / "README.md").read_text(encoding="utf-8")
    assert committed == readme.readme_text(), f"components/README.md is out of date: run `{readme.COMMAND}`"
    assert readme.render() in committed and readme.render() == hook().components_block("reference/components.md")


@pytest.mark.fast
def test_every_parameter_has_a_description_and_pages_ask_for_every_block():
    from distill.pipelines.pipeline import pipeline_parameters

    missing = [name for name, _, _ in pipeline_parameters(sweep=True) if not hook().parameter_help(name)]
    assert missing == [], "describe them as an Option or in docs/hooks/reference.py PIPELINE_HELP"
    asked = {m for page in (ROOT / "docs").rglob("*.md") for m in hook().MARKER.findall(page.read_text())}
    assert asked == set(hook().BLOCKS)


@pytest.mark.fast
def test_table_cells_cannot_break_a_table_or_inject_html():
    md = importlib.import_module("distill.markdown")  # one escaping for every generated table
    readme = importlib.import_module("distill.components.readme")
    assert hook().cell is md.cell and hook().option_row is readme.option_row
    assert importlib.import_module("distill.steps.evaluate").table_lines is md.table_lines  # the report's tables too
    assert md.cell("a | b\n<script>") == "a \\| b &lt;script&gt;"
    assert md.cell("under `runs/<run_id>/` & <x>") == "under `runs/<run_id>/` &amp; &lt;x&gt;"  # code spans as written
    assert md.code("a`b") == "`` a`b ``"
    assert readme.strip_default("MLflow experiment (default: yolo-distill)") == "MLflow experiment"
    assert readme.strip_default("per loss (pkd: 10) (default: chosen by the library)") == "per loss (pkd: 10)"
    assert md.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert md.value_text(True) == "`true`" and md.value_text("") == '`""`' and md.value_text(None) == "—"


@pytest.mark.fast
def test_readme_is_a_short_landing_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "the README is the landing page: move detail to docs/"
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local) and any(link.endswith(".png") for link in local)
    assert [link for link in local if not (ROOT / link).exists()] == []


# -- the built site ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as ``make docs`` builds it, strictly, into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_site_builds_strictly_with_generated_reference_and_charts(site):
    for page in (
        "index.html",
        "unlabelled/index.html",
        "reference/settings/index.html",
        "reference/components/index.html",
        "benchmarks/notebook/index.html",
    ):
        assert (site / page).is_file(), page
    settings_page = (site / "reference" / "settings" / "index.html").read_text()
    assert "logit_tau" in settings_page and "min_gain" in settings_page
    assert "data_source" in (site / "reference" / "pipeline" / "index.html").read_text()
    components_page = (site / "reference" / "components" / "index.html").read_text()
    assert 'id="gate-keys-of-register"' in components_page and "gate_level" in components_page
    charts = sorted(p.name for p in (ROOT / "benchmarks" / "results").glob("*.png"))
    assert charts and charts == sorted(p.name for p in (site / "benchmarks" / "results").glob("*.png"))
    assert not (site / "hooks").exists()  # the hook is code, not a page


# -- a real browser ----------------------------------------------------------------------------------------------------


def chromium_executable() -> str | None:
    """Chromium on the PATH (Debian's package installs ``chromium``), or ``None``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on loopback (as a host would: search and links need http, not file://)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    Chromium reads commands on fd 3 and writes replies and events on fd 4, each a JSON object ended by a NUL byte.
    """

    def __init__(self, executable: str, profile: Path):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # at 10 or above, so moving them onto 3 and 4 cannot clobber one with the other
        child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(replies_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_read)
        os.close(replies_write)
        flags = ["--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
                 "--disable-gpu", "--disable-extensions", "--disable-background-networking", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1280,900"]  # fmt: skip
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
        self._log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 (closed in close())
        # A small Python trampoline puts the pipe ends on 3 and 4 and execs Chromium (no preexec_fn in the fork).
        trampoline = "import os, sys; a, b = map(int, sys.argv[1:3]); os.dup2(a, 3); os.dup2(b, 4); os.close(a); "
        trampoline += "os.close(b); os.execvp(sys.argv[3], sys.argv[3:])"
        self.process = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(child_in), str(child_out), executable, *flags, "about:blank"],
            pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium exited (status {self.process.poll()}); see chromium.log")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """Send one command; return its result (events that arrive meanwhile are kept in :attr:`events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _pump(self, deadline: float, sessions: set[str]) -> None:
        """Receive one event, then adopt any worker a page of ``sessions`` started (see :meth:`load`)."""
        self.events.append(self._receive(deadline))
        for event in list(self.events):
            attached = event.get("method") == "Target.attachedToTarget" and event.get("sessionId") in sessions
            if attached and event["params"]["sessionId"] not in sessions:
                child = event["params"]["sessionId"]
                sessions.add(child)
                for domain in ("Runtime", "Log", "Network"):
                    with contextlib.suppress(RuntimeError):  # not every worker has every domain
                        self.send(f"{domain}.enable", session=child)
                self.send("Runtime.runIfWaitingForDebugger", session=child)

    def load(self, url: str, quiet: float = 0.5, timeout: float = 30) -> tuple[list[str], list[dict]]:
        """Open ``url`` in a new tab; return its errors and its images (``src``, ``complete``, ``width``).

        The page's workers (the search index runs in one) are attached paused and watched too. After the load event
        the page is given until no event arrives for ``quiet`` seconds: scripts may still fetch after load.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        sessions = {page}
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=page)
        self.send("Network.setCacheDisabled", {"cacheDisabled": True}, session=page)  # each page fetches all it needs
        auto = {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True}
        self.send("Target.setAutoAttach", auto, session=page)
        navigation = self.send("Page.navigate", {"url": url}, session=page)
        errors = [f"navigation: {navigation['errorText']}"] if navigation.get("errorText") else []
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == page for e in self.events):
            self._pump(deadline, sessions)
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < deadline:
                self._pump(min(deadline, time.monotonic() + quiet), sessions)
        images = self.send(
            "Runtime.evaluate",
            {
                "expression": "Array.from(document.images).map(i => "
                "({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth}))",
                "returnByValue": True,
            },
            session=page,
        )["result"]["value"]
        self.send("Target.closeTarget", {"targetId": target})
        return errors + page_errors([e for e in self.events if e.get("sessionId") in sessions]), images

    def close(self) -> None:
        """Close the browser (politely, then by force) and the pipes."""
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._replies):
            os.close(fd)
        self._log.close()


def page_errors(events: list[dict]) -> list[str]:
    """Return one line per error among a page's DevTools events: exceptions, console errors, failed requests."""
    urls = {
        e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    }
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in {"error", "assert"}:
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".rstrip())
        elif method == "Network.loadingFailed":
            out.append(f"request failed: {urls.get(params['requestId'], '?')} ({params['errorText']})")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            out.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Chromium]:
    """Headless Chromium, or a skip that says how to get it."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed: the docs' browser check needs it (Debian: apt-get install chromium)")
    chromium = Chromium(executable, tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def test_browser_sees_no_page_error_and_every_image_on_the_start_and_pool_pages(site, browser, tmp_path):
    # The check itself first: a page with a missing image, a console error and an exception must fail it.
    (tmp_path / "bad.html").write_text(
        '<img src="missing.png"><img src="ok.png"><script>console.error("boom"); null.x;</script>'
    )
    shutil.copy(next((ROOT / "benchmarks" / "results").glob("*.png")), tmp_path / "ok.png")
    with serve(tmp_path) as base:
        errors, images = browser.load(base + "bad.html")
    assert any("boom" in e for e in errors) and any(e.startswith("exception:") for e in errors), errors
    assert any("missing.png" in e for e in errors), errors
    assert [i["width"] > 0 for i in images] == [False, True], images

    with serve(site) as base:
        for page in ("", "unlabelled/"):
            errors, images = browser.load(base + page)
            assert errors == [], f"{page or 'index'}: {errors}"
            assert images, f"{page or 'index'}: no image at all (the charts)"
            broken = [i["src"] for i in images if not i["complete"] or i["width"] == 0]
            assert broken == [], f"{page or 'index'}: images that did not load: {broken}"

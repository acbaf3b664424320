"""Keep Ultralytics offline and self-contained — explicitly, through :func:`configure`; importing changes nothing.

Ultralytics reaches the network in a few places that have nothing to do with training: analytics and update checks
(off when ``YOLO_OFFLINE`` is set), a font download on every dataset check (skipped when ``Arial.ttf`` already sits in
its config directory) and third-party logger integrations enabled in its persisted settings (its MLflow callback, for
one, would write a file store of its own). :func:`configure` settles all three, turns MLflow's own usage telemetry off
(``MLFLOW_DISABLE_TELEMETRY``: on by default, it posts to the internet and writes ``~/.config/mlflow``, which a pod
with a read-only root cannot), and switches on Ultralytics'
restricted checkpoint loading (``ULTRALYTICS_SAFE_LOAD``: torch's ``weights_only`` unpickler with an allowlist of the
torch and Ultralytics model classes a checkpoint needs). A ``.pt`` is a pickle, and the default loader runs whatever
callables it names: a hostile teacher file would run its code before any error. ``YOLO_DISTILL_TRUST_CHECKPOINTS=1``
opts out, for trusted legacy files the allowlist refuses.

Ultralytics reads ``YOLO_OFFLINE``, ``YOLO_CONFIG_DIR`` and ``ULTRALYTICS_SAFE_LOAD`` once, when it is first imported,
so :func:`configure` must run before that in every process. The entry points call it: the CLI (commands that run
Ultralytics), the Python API (:func:`distill.train` / :func:`distill.distill`, and the first use of those names
from the package), the Kubeflow components, the benchmarks and the tests. Processes they start (Ultralytics' DDP
ranks, kfp.local tasks) inherit the environment and the persisted settings.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

#: Ultralytics' integration switches, all turned off: yolo-distill logs to MLflow itself, explicitly.
_SETTINGS_OFF = ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb")
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
#: The environment Ultralytics reads at import; :func:`configure` sets each one.
ENV_KEYS = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_SAFE_LOAD")
TRUST_ENV = "YOLO_DISTILL_TRUST_CHECKPOINTS"

_lock = threading.Lock()
_user_dir: Path | None = None  # set by the first configure(): Ultralytics' user config directory


def trusts_checkpoints() -> bool:
    """Whether the user opted out of restricted checkpoint loading (``YOLO_DISTILL_TRUST_CHECKPOINTS=1``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}


def default_config_dir() -> Path:
    """Return the writable folder used as ``YOLO_CONFIG_DIR`` when the user has not chosen one."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "yolo-distill"


def configure() -> Path:
    """Configure Ultralytics once per process: offline, a config dir of its own, a local font, integrations off.

    Sets ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` (default :func:`default_config_dir`) unless the user set them,
    and ``ULTRALYTICS_SAFE_LOAD`` (see the module docstring); then imports Ultralytics, switches its logger
    integrations off in its persisted settings and places matplotlib's DejaVu Sans as its plotting fonts. Call it
    before anything imports Ultralytics: Ultralytics reads that environment once, at import. Called later, it still
    switches the integrations off, places the fonts where that Ultralytics looks and warns about the rest.

    Idempotent and thread-safe: the first call does the work (about a second: it imports Ultralytics and torch),
    later calls only return the folder. Importing :mod:`distill` never calls it.

    Returns:
        (Path): Ultralytics' user config directory (``$YOLO_CONFIG_DIR/Ultralytics`` unless it was not writable).

    Examples:
        >>> import distill
        >>> distill.configure().name  # doctest: +SKIP
        'Ultralytics'
    """
    global _user_dir
    if _user_dir is not None:
        return _user_dir
    with _lock:
        if _user_dir is None:
            late = "ultralytics" in sys.modules
            seen = {k: os.environ.get(k) for k in ENV_KEYS}
            _set_environment(late)
            from ultralytics.utils import SETTINGS, USER_CONFIG_DIR  # reads the environment just set

            if late:
                _warn_late(seen, USER_CONFIG_DIR)
            _settings_off(SETTINGS)
            _place_fonts(Path(USER_CONFIG_DIR))
            _user_dir = Path(USER_CONFIG_DIR)
    return _user_dir


def _set_environment(late: bool) -> None:
    """Set what Ultralytics reads at import, keeping the user's own ``YOLO_OFFLINE`` / ``YOLO_CONFIG_DIR``.

    ``late``: Ultralytics is already imported with its config dir fixed; ``YOLO_CONFIG_DIR`` is then left alone, so
    processes started from here (DDP ranks) use the same folder as this one.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read by MLflow when it first logs, not at import
    if not late:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))
    # The opt-out wins over an inherited ULTRALYTICS_SAFE_LOAD=1.
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "0" if trusts_checkpoints() else os.environ.get("ULTRALYTICS_SAFE_LOAD", "1")


def _warn_late(seen: dict[str, str | None], user_dir: Path) -> None:
    """Warn that Ultralytics was imported first, naming the settings it fixed from an environment we would change."""
    missed = [k for k in ENV_KEYS if k != "YOLO_CONFIG_DIR" and seen[k] != os.environ.get(k)]
    if seen["YOLO_CONFIG_DIR"] is None:
        missed.append(f"YOLO_CONFIG_DIR (it uses {user_dir})")
    if missed:
        warnings.warn(
            "distill.configure() ran after Ultralytics was imported, which already read its environment without "
            f"{', '.join(missed)}; call distill.configure() before importing ultralytics",
            RuntimeWarning,
            stacklevel=3,
        )


def _settings_off(settings: Any) -> None:
    """Switch off Ultralytics' logger integrations in its settings (persisted; written only if one was on)."""
    off = {k: False for k in _SETTINGS_OFF if k in settings and settings[k] is not False}
    if off:
        settings.update(off)


def _place_fonts(user_dir: Path) -> None:
    """Copy matplotlib's DejaVu Sans in as Ultralytics' plotting fonts, so ``check_font`` never downloads."""
    missing = [name for name in _FONTS if not (user_dir / name).exists()]
    if not missing:
        return
    import matplotlib  # a dependency of ultralytics; ships DejaVu Sans

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    user_dir.mkdir(parents=True, exist_ok=True)
    for name in missing:
        tmp = user_dir / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source, tmp)
        tmp.replace(user_dir / name)  # atomic: concurrent processes never see a half-written font

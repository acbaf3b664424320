"""Keep Ultralytics offline and self-contained, so a user never has to configure it.

Ultralytics reaches the network in a few places that have nothing to do with training: analytics and update checks
(off when ``YOLO_OFFLINE`` is set), a font download on every dataset check (skipped when ``Arial.ttf`` already sits in
its config directory) and third-party logger integrations enabled in its global settings (its MLflow callback, for
one, would write a file store of its own). :func:`configure` settles the first two *before* Ultralytics is imported
(``import distill`` calls it); :func:`configure_settings` the third, from the modules that build trainers.

:func:`configure` also switches on Ultralytics' restricted checkpoint loading (``ULTRALYTICS_SAFE_LOAD``: torch's
``weights_only`` unpickler with an allowlist of the torch and Ultralytics model classes a checkpoint needs). A ``.pt``
is a pickle, and the default loader runs whatever callables it names: a hostile teacher file would run its code
before any error. ``YOLO_DISTILL_TRUST_CHECKPOINTS=1`` opts out, for trusted legacy files the allowlist refuses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Ultralytics' integration switches, all turned off: yolo-distill logs to MLflow itself, explicitly.
_SETTINGS_OFF = ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb")
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
TRUST_ENV = "YOLO_DISTILL_TRUST_CHECKPOINTS"


def trusts_checkpoints() -> bool:
    """Whether the user opted out of restricted checkpoint loading (``YOLO_DISTILL_TRUST_CHECKPOINTS=1``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}


def default_config_dir() -> Path:
    """Return the writable folder used as ``YOLO_CONFIG_DIR`` when the user has not chosen one."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "yolo-distill"


def configure() -> Path:
    """Set the offline environment and place a local font; cheap, so ``import distill`` (and ``--help``) stays fast.

    Existing ``YOLO_OFFLINE`` / ``YOLO_CONFIG_DIR`` values are respected. Safe to call repeatedly. Ultralytics'
    integration switches live in its settings object, which only exists once Ultralytics is imported: the modules
    that build trainers call :func:`configure_settings` after importing it.

    Returns:
        (Path): Ultralytics' user config directory (``$YOLO_CONFIG_DIR/Ultralytics``).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))
    # Read when Ultralytics is imported; the opt-out wins over an inherited ULTRALYTICS_SAFE_LOAD=1.
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "0" if trusts_checkpoints() else os.environ.get("ULTRALYTICS_SAFE_LOAD", "1")
    user_dir = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    user_dir.mkdir(parents=True, exist_ok=True)
    _place_fonts(user_dir)
    return user_dir


def configure_settings() -> None:
    """Switch off Ultralytics' logger integrations before any trainer registers its callbacks (safe to repeat).

    The environment is already set: ``import distill`` ran :func:`configure` before any of its modules loaded.
    """
    from ultralytics.utils import SETTINGS  # after the environment is set: it is read at import

    off = {k: False for k in _SETTINGS_OFF if k in SETTINGS and SETTINGS[k] is not False}
    if off:
        SETTINGS.update(off)


def _place_fonts(user_dir: Path) -> None:
    """Copy matplotlib's DejaVu Sans in as Ultralytics' plotting fonts, so ``check_font`` never downloads."""
    missing = [name for name in _FONTS if not (user_dir / name).exists()]
    if not missing:
        return
    import matplotlib  # a dependency of ultralytics; ships DejaVu Sans

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in missing:
        tmp = user_dir / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source, tmp)
        tmp.replace(user_dir / name)  # atomic: concurrent processes never see a half-written font

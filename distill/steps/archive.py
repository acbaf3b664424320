"""Safe extraction of dataset archives: nothing may land outside the target folder.

Refused: absolute paths, ``..`` segments that escape the folder, and links (symlink entries in zip files), each with
an error naming the entry.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import DistillError


def safe_extract_zip(archive: str | Path, target: str | Path) -> Path:
    """Extract ``archive`` into ``target`` after checking every entry; return ``target``."""
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DistillError(f"'{archive}' is not a valid zip archive") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            path = PurePosixPath(name.replace("\\", "/"))
            if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise DistillError(f"archive '{archive}': entry '{name}' has an absolute path; refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DistillError(f"archive '{archive}': entry '{name}' is a link; refused")
            dest = (target / path).resolve()
            if not dest.is_relative_to(target):
                raise DistillError(f"archive '{archive}': entry '{name}' would land outside the target folder; refused")
        zf.extractall(target)
    return target

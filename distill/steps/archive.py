"""Safe extraction of dataset archives: nothing may land outside the target folder.

Refused: absolute paths, ``..`` segments that escape the folder, and links (symlink entries in zip files), each with
an error naming the entry.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import DistillError


def safe_extract_zip(archive: str | Path, target: str | Path, name: str | None = None) -> Path:
    """Extract ``archive`` into ``target`` after checking every entry; return ``target``.

    ``name`` is how errors name the archive (the ``s3://`` URI it was downloaded from), default its path.
    """
    target = Path(target).resolve()
    label = name or str(archive)
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DistillError(f"'{label}' is not a valid zip archive") from None
    with zf:
        for info in zf.infolist():
            entry = info.filename
            path = PurePosixPath(entry.replace("\\", "/"))
            if path.is_absolute() or entry.startswith(("/", "\\")) or (len(entry) > 1 and entry[1] == ":"):
                raise DistillError(f"archive '{label}': entry '{entry}' has an absolute path; refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DistillError(f"archive '{label}': entry '{entry}' is a link; refused")
            dest = (target / path).resolve()
            if not dest.is_relative_to(target):
                raise DistillError(f"archive '{label}': entry '{entry}' would land outside the target folder; refused")
        zf.extractall(target)
    return target

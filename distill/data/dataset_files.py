"""A local dataset's files as Ultralytics resolves them: the yaml's splits and the images each split names.

One place for what the engine's input check (:func:`distill.engine.api.train` / :func:`distill.engine.api.distill`), the
evaluate and register steps (latency and export samples), the unlabelled-pool dataset (:mod:`distill.engine.pool_data`)
and the benchmarks all need: Ultralytics' own resolution of a ``data.yaml`` (``check_det_dataset``, absolute split
paths, names as a dict) and the image files of a split entry — a folder (searched recursively for Ultralytics'
``IMG_FORMATS``), a ``.txt`` list of image paths (``./`` relative to the list, as Ultralytics reads it), or a list of
either.

The checks prepare-data runs on a YOLO source are here too, so that the engine refuses what prepare-data refuses, in
the same words, before anything is written: :func:`split_files` (a split names folders of images or ``.txt`` lists
of them, and holds at least one image) and :func:`verify_split` (Ultralytics' own per-image verifier, which its
loader would otherwise run at training time and answer with a traceback or silently dropped labels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DistillError, plain_message, shown
from ..yaml_files import read_yaml

#: How a split path is placed: ``place(text, None)`` for a split entry, ``place(text, list_file)`` for a line of a
#: ``.txt`` list; it returns the absolute path, or refuses one (an archive's path leading outside it).
Place = Callable[[str, Path | None], Path]


def resolve_dataset(data: str | Path) -> dict[str, Any]:
    """Return Ultralytics' resolution of a dataset yaml (absolute split paths, names as a dict); errors as one line.

    The file is read with the bounded loader first (:func:`distill.yaml_files.read_yaml`): Ultralytics' own loader
    would expand an alias bomb for minutes.
    """
    from ultralytics.data.utils import check_det_dataset

    read_yaml(data, f"data '{data}'")
    try:
        return check_det_dataset(str(data), autodownload=False)
    except (FileNotFoundError, SyntaxError, KeyError, ValueError, TypeError) as e:  # TypeError: a key of a wrong type
        raise DistillError(f"data '{data}': {plain_message(e)}") from None


def check_dataset(data: str | Path) -> dict[str, Any]:
    """Check a local dataset yaml as prepare-data checks a YOLO source; return Ultralytics' resolution of it.

    Its train and val splits must name folders of images or ``.txt`` lists of them and hold images
    (:func:`split_files`), and every image and label must pass Ultralytics' verifier (:func:`verify_split`) — so a
    run that would fail in Ultralytics' loader, or train with labels it drops, is refused before anything is written.
    """
    from ultralytics.data.utils import img2label_paths

    spec = resolve_dataset(data)
    what = f"data '{data}'"
    for split in ("train", "val"):
        images = split_files(spec.get(split), split, what)
        labels = [Path(p) for p in img2label_paths([str(i) for i in images])]
        memo = _verified_memo(images, labels, spec)
        if memo.is_file():
            continue
        verify_split(list(zip(images, labels, strict=True)), spec, split, what)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.touch()
    return spec


def _verified_memo(images: list[Path], labels: list[Path], spec: dict[str, Any]) -> Path:
    """Return the marker of a split verified before with these very files (paths, sizes, times) and label space.

    Verifying opens every image (~1 ms each here): a 100k-image set would pay it on every run. A split whose files
    are unchanged since it passed is not verified again; the marker lives in yolo-distill's own cache folder, never
    beside the user's data.
    """
    import hashlib

    from ..offline import default_config_dir

    digest = hashlib.sha256(repr((len(spec["names"]), spec.get("kpt_shape"))).encode())
    for path in (*images, *labels):
        try:
            st = path.stat()
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0-\n".encode())
    return default_config_dir() / "verified" / digest.hexdigest()[:32]


def ultralytics_place(text: str, list_file: Path | None) -> Path:
    """Place a split path as Ultralytics reads it: as written, list lines starting ``./`` relative to the list."""
    if list_file is not None and text.startswith("./"):
        return list_file.parent / text[2:]
    return Path(text)


def split_files(
    entry: Any, split: str, what: str, place: Place = ultralytics_place, show: Callable[[Path], str] = str
) -> list[Path]:
    """Return the images a split entry names: folders (searched recursively) and ``.txt`` lists, in that order.

    ``what`` names the dataset in errors; ``place`` turns the entry's paths and the lists' lines into paths
    (default: as Ultralytics does; the YOLO importer resolves them inside the source, :mod:`.steps.import_yolo`);
    ``show`` names a path in errors (the importer: as the user knows it, not as extracted). Lines of a list without
    an image suffix are skipped, as Ultralytics skips them.

    Raises:
        DistillError: A path that is missing or is neither a folder nor a ``.txt`` list (``train: /etc/passwd``),
            or a split that holds no image at all — each naming the split and the path.
    """
    from ultralytics.data.utils import IMG_FORMATS

    items = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for item in items:
        if not isinstance(item, str | Path) or not str(item).strip():
            raise DistillError(f"{what}: the {split} split entry {shown(item, 40)} must be a path")
        path = place(str(item), None)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS)
        elif path.is_file() and path.suffix.lower() == ".txt":
            lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
            named = [line.strip() for line in lines if line.strip()]
            files += [place(line, path) for line in named if line.rpartition(".")[-1].lower() in IMG_FORMATS]
        elif path.exists():
            raise DistillError(
                f"{what}: the {split} split '{show(path)}' is neither a folder of images nor a .txt list of them"
            )
        else:
            raise DistillError(f"{what}: the {split} split '{show(path)}' not found")
    if not files:
        listed = ", ".join(show(place(str(item), None)) for item in items)
        raise DistillError(f"{what}: the {split} split '{listed}' holds no images")
    return files


def verify_split(
    pairs: list[tuple[Path, Path]],
    spec: dict[str, Any],
    split: str,
    what: str = "",
    origin: Callable[[Path, Path], str] | None = None,
) -> dict[Path, str]:
    """Check each ``(image, label file)`` of a split with Ultralytics' own verifier; return the unreadable images.

    An image Ultralytics cannot read is returned with the reason (it would skip it with a warning; prepare-data drops
    it). A label it would refuse — a class beyond ``spec``'s names, coordinates outside the image, the wrong number of
    columns for the task — is one error naming the label file (``origin(image, label)``: as the user knows it),
    because Ultralytics would drop that image's labels and train on it as if it held no objects, or fail when none is
    left. Run on a thread pool, as Ultralytics runs it.

    Raises:
        DistillError: A refused label, or a split whose every image is unreadable (``what`` prefixes the message).
    """
    from multiprocessing.pool import ThreadPool

    from ultralytics.data.utils import check_image, verify_image_label
    from ultralytics.utils import NUM_THREADS

    kpt = spec.get("kpt_shape") or [0, 0]
    prefix = f"{what}: " if what else ""
    jobs = [(str(i), str(lb), "", bool(spec.get("kpt_shape")), len(spec["names"]), *kpt, False) for i, lb in pairs]
    unreadable: dict[Path, str] = {}
    with ThreadPool(max(1, min(NUM_THREADS, len(jobs)))) as pool:
        for (image, label), checked in zip(pairs, pool.imap(verify_image_label, jobs), strict=True):
            if checked[0] is not None:
                continue
            try:  # refused: the image itself, or its labels?
                check_image(str(image))
            except Exception as e:  # PIL's errors, Ultralytics' size/format assertions, a missing file
                unreadable[image] = str(e)
                continue
            reason = str(checked[-1]).split("ignoring corrupt image/label: ")[-1]  # Ultralytics' reason
            if "inhomogeneous" in reason:  # numpy's words for rows of different lengths
                reason = "its rows have different numbers of columns"
            named = origin(image, label) if origin else str(label)
            raise DistillError(f"{prefix}labels of image '{image.name}' from '{named}': {reason}")
    if len(unreadable) == len(pairs):
        raise DistillError(f"{prefix}split '{split}' has no readable images ({len(unreadable)} unreadable)")
    return unreadable


def split_images(entry: str | Path | list | None) -> list[str]:
    """Return the absolute image paths of a split entry (folder, ``.txt`` list, or a list of either), sorted."""
    from ultralytics.data.utils import IMG_FORMATS

    if not entry:
        return []
    files: list[str] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = Path(str(item))
        if path.is_dir():
            files += [str(p.resolve()) for p in path.rglob("*") if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS]
        elif path.is_file():
            for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                line = line.strip()
                if line:
                    files.append(str((path.parent / line[2:]).resolve() if line.startswith("./") else Path(line)))
    return sorted(files)

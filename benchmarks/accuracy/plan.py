"""The datasets an invocation trains on and the jobs it runs: one teacher, every student over every seed.

Datasets are imported (BCCD, a YOLO folder) or made (synthetic sets) once under the work folder, and split into a
labelled part and a pool with ``--label-fraction``; every job's folder name carries what makes it another run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.accuracy.options import BCCD_URL, PSEUDO_SETTINGS, Profile
from distill.config import DEFAULTS


def import_bccd(source: Path, workdir: Path) -> tuple[Path, str]:
    """Import BCCD (Pascal VOC) with the prepare-data step's importer, once; return ``data.yaml`` and its hash."""
    from distill.steps.prepare_data import import_dataset

    folder = workdir / "bccd"
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        if not source.is_dir():
            raise SystemExit(f"BCCD not found at '{source}': git clone {BCCD_URL} and pass its folder with --data-root")
        manifest = import_dataset(str(source), folder, "voc")
        manifest_file.write_text(json.dumps(manifest, indent=2) + "\n")
    manifest = json.loads(manifest_file.read_text())
    return folder / "data.yaml", manifest["hash"]


#: Synthetic sets for segment and pose (no real one ships): train / val / test images at the profile's image size.
SYNTH_IMAGES = (300, 60, 60)


def work_folder(workdir: Path, profile: Profile, task: str) -> Path:
    """Return the folder of an invocation's runs under ``--workdir``: named by image size, batch and student model.

    Runs are cached by their settings, not the profile's name, so profiles that share these share every run they both
    ask for (``screen`` and ``cpu``); ``--latency-only`` finds a report's runs here.
    """
    student = Path(task_model(profile.student, task)).stem
    return (workdir / f"accuracy-{profile.imgsz}px-b{profile.batch}-{student}").resolve()


def task_model(yaml_name: str, task: str) -> str:
    """Return the task's variant of a detect model yaml: ``yolov8n.yaml`` → ``yolov8n-seg.yaml`` / ``-pose``."""
    suffix = {"detect": "", "segment": "-seg", "pose": "-pose"}[task]
    return yaml_name.replace(".yaml", f"{suffix}.yaml")


def synth_dataset(task: str, size: int, workdir: Path, images: tuple[int, int, int] = SYNTH_IMAGES) -> tuple[Path, str]:
    """Write (once) the synthetic set for ``task`` with ``yolo-distill synth``'s generator; return yaml and hash."""
    import hashlib

    from distill.data.synthetic import generate

    train, val, test = images
    folder = workdir / f"synth-{task}-{size}-{train}-{val}-{test}"
    if not (folder / "data.yaml").is_file():
        generate(folder, task, images=train, val=val, test=test, size=size, seed=0)
    digest = hashlib.sha256(f"{task}-{size}-{train}-{val}-{test}-seed0".encode()).hexdigest()[:16]
    return folder / "data.yaml", digest


def benchmark_dataset(args: argparse.Namespace, profile: Profile, workdir: Path) -> tuple[Path, str]:
    """Return the ``data.yaml`` and content hash of the set to train on (made once under ``workdir``).

    The profile's synthetic set if it names one, else BCCD for detect and a synthetic set for segment and pose.
    """
    if args.synthetic:
        images = tuple(int(v) for v in args.synthetic.split(","))
        return synth_dataset(args.task, profile.imgsz, workdir, images)  # type: ignore[arg-type]
    if profile.synthetic:
        return synth_dataset(args.task, profile.imgsz, workdir, profile.synthetic)
    if (args.data / "data.yaml").is_file():  # a YOLO dataset of the task (e.g. tiger-pose for pose)
        return yolo_dataset(args.data)
    if args.task == "detect":
        return import_bccd(args.data, workdir)
    return synth_dataset(args.task, profile.imgsz, workdir)


@contextlib.contextmanager
def work_lock(workdir: Path) -> Iterator[None]:
    """Hold the work folder's lock while the datasets are made (imports and splits write shared folders)."""
    import fcntl

    with open(workdir / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def yolo_dataset(folder: Path) -> tuple[Path, str]:
    """Return a YOLO dataset folder's ``data.yaml`` and a content hash of its files (it names the runs' folders)."""
    from distill.data import storage
    from distill.data.image_files import content_hash

    files = {str(p.relative_to(folder)): storage.sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
             and p.suffix != ".cache"}  # fmt: skip
    return folder / "data.yaml", content_hash(files)


def dataset_name(args: argparse.Namespace, synthetic: Any) -> str:
    """Return the report's name of the set: BCCD, a YOLO dataset's folder name, or the synthetic set."""
    if args.synthetic or synthetic or ((args.task != "detect") and not (args.data / "data.yaml").is_file()):
        return f"synthetic shapes ({args.task}, yolo-distill synth)"
    return args.data.name if (args.data / "data.yaml").is_file() else "BCCD"


def score_split(data: Path) -> str:
    """Return the split runs are scored on: ``test`` when the dataset has one, else ``val``.

    ``val`` is also where best.pt is picked: the same for every row (comparable), but optimistic.
    """
    from distill.data.dataset_files import resolve_dataset

    return "test" if resolve_dataset(data).get("test") else "val"


@dataclass(frozen=True)
class Datasets:
    """The datasets of one invocation: what the students train on and, with ``--label-fraction``, the full set."""

    data: Path  # the students' data.yaml (the labelled part with --label-fraction)
    data_hash: str  # names the runs' folders
    full_data: Path  # every label (the ceiling's, and the teacher's with --teacher-labels all)
    full_hash: str
    pool: Path | None  # the unlabelled pool (the rest of the training images), with --label-fraction


def prepare_datasets(args: argparse.Namespace, profile: Profile, workdir: Path) -> Datasets:
    """Import (or make) the benchmark's dataset once and, with ``--label-fraction``, its labelled part and pool."""
    with work_lock(workdir):  # invocations side by side share the work folder: one imports, the others wait
        data, data_hash = benchmark_dataset(args, profile, workdir)
        if not args.label_fraction:
            return Datasets(data, data_hash, data, data_hash, None)
        from benchmarks.label_split import label_split

        part, pool, part_hash = label_split(data, data_hash, args.label_fraction, workdir)
        return Datasets(part, part_hash, data, data_hash, pool)


def plan_jobs(
    args: argparse.Namespace,
    profile: Profile,
    sets: Datasets,
    students: dict[str, Any],
    seeds: tuple[int, ...],
    epochs: int,
    teacher_tag: str,
    workdir: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the teacher's job and every student's, seed-major (an early stop still leaves every student a seed).

    A job's folder name carries what makes it another run: the student, epochs, the teacher's tag for students that
    learn from it (``-t<epochs>``, ``-tall`` for a teacher trained on every label), the seed and the data's hash.
    """
    student_yaml, teacher_yaml = task_model(profile.student, args.task), task_model(profile.teacher, args.task)
    base = dict(data=str(sets.data), imgsz=profile.imgsz, batch=profile.batch, device=args.device,
                workers=args.workers)  # fmt: skip
    if args.cache:
        base["cache"] = "ram"  # only when asked: runs without the key stay the runs they were
    if score_split(sets.data) != "test":
        base["score_split"] = "val"
    teacher_job = dict(
        base, name="teacher", spec=None, model=teacher_yaml, epochs=profile.teacher_epochs, seed=0, teacher=None,
        dir=str(workdir / f"teacher-{Path(teacher_yaml).stem}-e{profile.teacher_epochs}-{sets.data_hash}"),
    )  # fmt: skip
    if args.label_fraction and args.teacher_labels == "all":  # the teacher knows every label; the students do not
        teacher_job.update(
            full_data=str(sets.full_data), spec="all-labels",
            dir=str(workdir / f"teacher-{Path(teacher_yaml).stem}-e{profile.teacher_epochs}-{sets.full_hash}"),
        )  # fmt: skip
        teacher_tag += "-tall"
    student_jobs = []
    for seed in seeds:
        for name, spec in students.items():
            run_epochs = spec.get("epochs", epochs) if isinstance(spec, dict) else epochs  # a variant's own epochs
            spec = {k: v for k, v in spec.items() if k != "epochs"} if isinstance(spec, dict) else spec
            pseudo = pseudo_settings(spec)
            if pseudo is not None:  # label-then-train: its pseudo-labels' settings are part of the run (its cache key)
                spec = "pseudo"
            uses_pool = spec == "pseudo" or (isinstance(spec, dict) and bool(spec.get("unlabeled")))
            extra: dict[str, Any] = (
                {"full_data": str(sets.full_data)} if spec == "all-labels"
                else {"pool": str(sets.pool), **(pseudo or {})} if uses_pool else {}
            )  # fmt: skip
            tag = name.replace("+", "-") + f"-e{run_epochs}" + (teacher_tag if spec not in (None, "all-labels") else "")
            student_jobs.append(
                dict(base, name=name, spec=spec, model=student_yaml, epochs=run_epochs, seed=seed, teacher=None,
                     **extra, dir=str(workdir / f"{tag}-s{seed}-{sets.data_hash}"))
            )  # fmt: skip
    return teacher_job, student_jobs


def pseudo_settings(spec: Any) -> dict[str, Any] | None:
    """Return a label-then-train student's pseudo-label settings (the shipped defaults' unless it names others).

    ``None`` for every other student. ``label-then-train`` (spec ``"pseudo"``) uses today's defaults; a
    ``label_then_train`` variant overrides :data:`PSEUDO_SETTINGS` — the control for a pool variant that changes
    them (``pool-r1:unlabeled=true,unlabeled_ratio=1`` against ``ltt-r1:label_then_train=true,unlabeled_ratio=1``).
    """
    if spec == "pseudo":
        return {k: DEFAULTS[k] for k in PSEUDO_SETTINGS}
    if isinstance(spec, dict) and spec.get("label_then_train"):
        return {k: spec.get(k, DEFAULTS[k]) for k in PSEUDO_SETTINGS}
    return None

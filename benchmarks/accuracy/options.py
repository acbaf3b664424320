"""What an invocation can ask for: the profiles, the students and variants, and the command line that picks them.

The lowest module of the package (the others import from it, it from none of them): where the repository is
(``ROOT``), where BCCD is looked for, and every name the command line accepts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import report as reports

ROOT = Path(__file__).resolve().parent.parent.parent  # benchmarks/accuracy/options.py -> the repository
#: Where the benchmark looks for BCCD unless told (``--data-root``): not shipped (364 images); clone
#: https://github.com/Shenggan/BCCD_Dataset there, or point ``--data-root`` at a copy.
BCCD = ROOT / "benchmarks" / "data" / "bccd"
BCCD_URL = "https://github.com/Shenggan/BCCD_Dataset"


@dataclass(frozen=True)
class Profile:
    """How long and how large every run of one benchmark profile is."""

    imgsz: int
    batch: int
    teacher: str
    teacher_epochs: int
    epochs: int
    seeds: tuple[int, ...]
    student: str = "yolov8n.yaml"
    synthetic: tuple[int, int, int] | None = None  # train/val/test images of a synthetic set, even for detect


#: ``screen`` and ``cpu`` share their settings (and so their cached runs): ``screen`` is the one-seed pass that picks
#: the candidates, ``cpu`` the five-seed table that decides the defaults (why 160 px, 30 epochs: benchmarks/README.md).
PROFILES = {
    "quick": Profile(imgsz=128, batch=16, teacher="yolov8s.yaml", teacher_epochs=3, epochs=2, seeds=(0,)),
    "screen": Profile(imgsz=160, batch=16, teacher="yolov8s.yaml", teacher_epochs=60, epochs=30, seeds=(0,)),
    "cpu": Profile(imgsz=160, batch=16, teacher="yolov8s.yaml", teacher_epochs=60, epochs=30, seeds=(0, 1, 2, 3, 4)),
    "full": Profile(imgsz=640, batch=16, teacher="yolov8s.yaml", teacher_epochs=150, epochs=100, seeds=(0, 1, 2)),
    # Synthetic shapes at 128 px, teacher 30 epochs, students 20; make demo's regime (scripts/demo.sh) is this profile
    # with --epochs 40 --teacher-epochs 60 (benchmarks/README.md).
    "demo": Profile(
        imgsz=128,
        batch=16,
        teacher="yolov8s.yaml",
        teacher_epochs=30,
        epochs=20,
        seeds=(0, 1, 2),
        synthetic=(96, 64, 64),
    ),
    # A real keypoint set (``--task pose --data-root ../shared/data/tiger-pose``: 12 keypoints, 210/53 images) in the
    # regime where KD once lowered keypoint mAP (issue 21): 256 px, students 40 epochs.
    "keypoints": Profile(imgsz=256, batch=16, teacher="yolov8s.yaml", teacher_epochs=60, epochs=40, seeds=(0, 1, 2)),
}


#: Every student the benchmark knows: ``None`` = plain training, ``"native"`` = Ultralytics' ``distill_model=``,
#: a dict = our :class:`~distill.DistillConfig` fields over today's defaults; the students measured with KD throughout
#: say ``distill_off_epochs: 0``, so they stay the runs the tables report after the default changed. ``screen`` trains
#: them all (one seed); the other profiles train :data:`DECIDING` unless ``--students`` says otherwise.
STUDENTS: dict[str, Any] = {
    "baseline": None,
    "default": {},  # the shipped defaults (config.DEFAULTS) as they are when the benchmark runs
    "cwd": {"loss": "cwd", "logit": False, "distill_off_epochs": 0},
    "cwd+logit": {"loss": "cwd", "logit": True, "distill_off_epochs": 0},
    "mgd": {"loss": "mgd", "logit": False, "distill_off_epochs": 0},
    "mgd+logit": {"loss": "mgd", "logit": True, "distill_off_epochs": 0},
    "mimic": {"loss": "mimic", "logit": False, "distill_off_epochs": 0},
    "mimic+logit": {"loss": "mimic", "logit": True, "distill_off_epochs": 0},  # KD throughout: the default until 11-29
    "online-cwd": {"loss": "cwd", "logit": False, "online": True, "distill_off_epochs": 0},
    "pkd+logit": {"loss": "pkd", "logit": True, "distill_off_epochs": 0},
    "pkd+kl": {"loss": "pkd", "logit": True, "logit_loss": "kl", "distill_off_epochs": 0},
    "ncwd+kl-off": {"loss": "ncwd", "logit": True, "logit_loss": "kl", "distill_off_epochs": "close_mosaic"},
    "mimic+kl": {"loss": "mimic", "logit": True, "logit_loss": "kl", "distill_off_epochs": 0},
    "mimic-off": {"loss": "mimic", "logit": True, "distill_off_epochs": "close_mosaic"},  # KD off when mosaic closes
    "kl": {"loss": "none", "logit": True, "logit_loss": "kl", "distill_off_epochs": 0},
    "ultralytics-kd": "native",
    # With --label-fraction (issue 21): the rest of the training images as an unlabelled pool.
    "pool": {"unlabeled": True},  # ours: the default KD on labelled + teacher-pseudo-labelled pool images
    "label-then-train": "pseudo",  # plain training on labelled + the teacher's pseudo-labels (autodistill's way)
    "ceiling": "all-labels",  # plain training with every training image labelled
}
#: The settings of the teacher's pseudo-labels on the pool: a label-then-train row uses the shipped defaults' unless a
#: ``--variant name:label_then_train=true,...`` names others (the control for a pool variant that changes them).
PSEUDO_SETTINGS = ("pseudo_conf", "unlabeled_ratio")
#: Students that only mean something with an unlabelled pool (``--label-fraction``).
POOL_STUDENTS = ("pool", "label-then-train", "ceiling")
#: The rows of a ``--label-fraction`` table (issue 21) unless ``--students`` says otherwise.
POOL_TABLE = ("baseline", "default", "pool", "label-then-train", "ceiling")


#: The students of the deciding (five-seed) table: the baseline, the shipped default, Ultralytics' KD, the previous
#: default (``mimic+logit``, KD throughout) and the two best candidates of the screening (benchmarks/README.md).
DECIDING = ("baseline", "default", "ultralytics-kd", "mimic+logit", "ncwd+kl-off", "mimic+kl")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``name:key=value,...`` into a student spec (values as JSON where they parse, else strings).

    ``unlabeled=true`` makes a pool student (ours, KD on the pool too); ``label_then_train=true`` a label-then-train
    student whose pseudo-labels use the given :data:`PSEUDO_SETTINGS` (no KD settings: it trains plain).
    ``epochs=N`` trains that student N epochs instead of the run's: the equal-compute control of a costlier variant
    (label-then-train given the wall time of a KD variant, spent as epochs).
    """
    name, _, body = text.partition(":")
    if not name or not body:
        raise SystemExit(f"--variant '{text}': expected name:key=value[,key=value...]")
    spec: dict[str, Any] = {}
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant '{text}': '{item}' is not key=value")
        try:
            spec[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            spec[key.strip()] = value.strip()
    if "logit" in spec:
        spec["logit"] = bool(spec["logit"])
    from distill import DistillConfig, DistillError

    if "unlabeled" in spec:  # a pool student (--label-fraction): train on the unlabelled pool too
        spec["unlabeled"] = bool(spec["unlabeled"])
    if "label_then_train" in spec:  # plain training on labelled + pseudo-labels made with these pool settings
        spec["label_then_train"] = bool(spec["label_then_train"])
        other = sorted(set(spec) - {"label_then_train", "epochs", *PSEUDO_SETTINGS})
        if spec["label_then_train"] and other:
            raise SystemExit(f"--variant '{text}': label_then_train takes only {', '.join(PSEUDO_SETTINGS)}, "
                             f"not {', '.join(other)}")  # fmt: skip
    if "epochs" in spec and (isinstance(spec["epochs"], bool) or not isinstance(spec["epochs"], int)
                             or spec["epochs"] < 1):  # fmt: skip
        raise SystemExit(f"--variant '{text}': epochs must be a whole number >= 1, got {spec['epochs']!r}")
    try:
        DistillConfig(teacher="t.pt", **{k: v for k, v in spec.items()
                                         if k not in ("unlabeled", "label_then_train", "epochs")})  # fmt: skip
    except (DistillError, TypeError) as e:
        raise SystemExit(f"--variant '{text}': {e}") from None
    return name, spec


def arg_parser() -> argparse.ArgumentParser:
    """Return the benchmark's command line (the worker's ``--worker`` and the report options included)."""
    usage = sys.modules[__package__].__doc__  # the package's docstring: its first paragraph says what this measures
    ap = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=usage.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument(
        "--data-root",
        "--data",
        dest="data",
        type=Path,
        default=BCCD,
        help=f"BCCD folder, Pascal VOC (default: benchmarks/data/bccd; get it from {BCCD_URL})",
    )
    ap.add_argument(
        "--task",
        choices=("detect", "segment", "pose"),
        default="detect",
        help="detect: BCCD; segment / pose: a synthetic set made here (yolo-distill synth)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=None, help="runs side by side (default: CPU cores on cpu, 1 on GPU)")
    ap.add_argument(
        "--students",
        default=None,
        help="comma-separated subset of: " + ", ".join(STUDENTS) + " (default: all with --profile screen, "
        "else " + ",".join(DECIDING) + ")",
    )
    ap.add_argument("--variant", action="append", default=[], help="extra student name:key=value,... (our KD)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    ap.add_argument("--epochs", type=int, default=None, help="student epochs (default: the profile's)")
    ap.add_argument(
        "--teacher-epochs", type=int, default=None, help="teacher epochs (default: the profile's; students keyed by it)"
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="an earlier report: its runs with the same settings are taken over instead of trained again",
    )
    ap.add_argument("--tag", default="", help="report name suffix (accuracy-<profile>-<tag>-<date>.json)")
    ap.add_argument(
        "--label-fraction",
        type=float,
        default=None,
        help="keep the labels on this fixed share of the training images, give the rest as an unlabelled pool "
        "(teacher and students train on the labelled part; default students: " + ",".join(POOL_TABLE) + ")",
    )
    ap.add_argument(
        "--teacher-labels",
        choices=("part", "all"),
        default="part",
        help="with --label-fraction: the teacher trains on the labelled part (default) or on every label (a user "
        "whose teacher is stronger than their labels; its students are other runs)",
    )
    ap.add_argument("--synthetic", default=None, help="TRAIN,VAL,TEST images of the synthetic set (default: profile's)")
    ap.add_argument(
        "--workers", type=int, default=0, help="dataloader workers per run (Ultralytics forces 0 on CPU; GPU runs)"
    )
    ap.add_argument(
        "--cache",
        action="store_true",
        help="Ultralytics' cache=ram: decode every image once per run (GPU runs, where decoding is the bottleneck; "
        "the runs are keyed by it)",
    )
    ap.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: the report of the runs already finished in the work folder (e.g. after a time limit)",
    )
    ap.add_argument(
        "--no-latency",
        action="store_true",
        help="skip the latency section (inference time per image of the teacher, each row and an ONNX export; "
        "measured after training, on --device)",
    )
    ap.add_argument(
        "--latency-only",
        type=Path,
        default=None,
        metavar="REPORT",
        help="train nothing: add the latency section to REPORT (its runs looked for under --workdir, weights absent: "
        "their architecture) and draw its figures; written to --results if given, else over REPORT",
    )
    reports.add_report_args(ap)
    return ap


def profile_settings(args: argparse.Namespace) -> tuple[Profile, tuple[int, ...], int, str]:
    """Return the profile with the command line's overrides: profile, seeds, student epochs and the teacher tag.

    The tag (``-t<epochs>``, else empty) goes into the students' folder names when ``--teacher-epochs`` differs from
    the profile's: students of another teacher are other runs.
    """
    profile = PROFILES[args.profile]
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else profile.seeds
    epochs = args.epochs or profile.epochs
    if args.teacher_epochs and args.teacher_epochs != profile.teacher_epochs:
        profile = replace(profile, teacher_epochs=args.teacher_epochs)
        teacher_tag = f"-t{args.teacher_epochs}"  # students of another teacher are other runs
    else:
        teacher_tag = ""
    return profile, seeds, epochs, teacher_tag


def chosen_students(args: argparse.Namespace) -> dict[str, Any]:
    """Return the students to train, name → spec: ``--students`` (else the profile's set) and every ``--variant``."""
    students: dict[str, Any] = {}
    default = POOL_TABLE if args.label_fraction else STUDENTS if args.profile == "screen" else DECIDING
    chosen = args.students or ",".join(n for n in default if args.label_fraction or n not in POOL_STUDENTS)
    for name in [s.strip() for s in chosen.split(",") if s.strip()]:
        if name not in STUDENTS:
            raise SystemExit(f"unknown student '{name}': choose from {', '.join(STUDENTS)}")
        if name in POOL_STUDENTS and not args.label_fraction:
            raise SystemExit(f"student '{name}' needs --label-fraction (an unlabelled pool)")
        students[name] = STUDENTS[name]
    for text in args.variant:
        name, spec = parse_variant(text)
        pool = next((f"{k}=true" for k in ("unlabeled", "label_then_train") if spec.get(k)), None)
        if pool and not args.label_fraction:
            raise SystemExit(f"--variant '{text}': {pool} needs --label-fraction (an unlabelled pool)")
        students[name] = spec
    return students

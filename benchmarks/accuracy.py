"""Accuracy benchmark: which student comes out best — baseline, our KD variants, or Ultralytics' own KD — by seed.

One teacher (trained once per setting and cached), then every student from scratch with the same epochs, image size,
batch and seeds, each in its own process (Ultralytics trains on one CPU thread, so ``--jobs`` runs side by side).
For every seed the baseline and each KD student start from that seed, so the comparison is paired: the report gives
per seed scores, the mean paired gain over the baseline with its 95% t-interval, and wins out of seeds. Every student
is scored on the held-out *test* split with the evaluate step's own ``measure`` (best.pt picked on val, as training
does). Detect runs on BCCD (``--data-root``); segment and pose (``--task``) on synthetic sets made here.

Usage::

    python -m benchmarks.accuracy --profile quick            # smoke, ≲ 10 min on 2 CPU cores
    python -m benchmarks.accuracy --profile screen           # every student, one seed: picks the candidates
    python -m benchmarks.accuracy                            # --profile cpu: the deciding five-seed table
    python -m benchmarks.accuracy --profile demo             # make demo's regime, three seeds
    python -m benchmarks.accuracy --task pose --students baseline,default  # a synthetic pose table
    python -m benchmarks.accuracy --profile full --device 0  # longer runs, GPU
    python -m benchmarks.accuracy --profile screen --variant cwd-w3:loss=cwd,logit=0,feat_weight=3  # a tuning try
    python -m benchmarks.accuracy --label-fraction 0.25 --students baseline \
        --variant pool-r1:unlabeled=true,unlabeled_ratio=1 \
        --variant label-then-train-ratio1:label_then_train=true,unlabeled_ratio=1  # a pool setting and its control

Finished runs are kept under ``--workdir`` and skipped when the same run is asked for again, so an interrupted
benchmark picks up where it stopped; ``--reuse REPORT`` takes over the runs of a committed report (another machine,
an earlier session). The report goes to ``benchmarks/results/accuracy-<profile>-<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import paired
from benchmarks import report as reports
from distill.config import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
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


# -- one run, in its own process ------------------------------------------------------------------------------------
def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model (teacher, baseline, ours, or Ultralytics KD) and score its best.pt on the test split."""
    import distill
    from distill.steps.evaluate import measure

    out = Path(job["dir"]) / "train"
    common = dict(
        epochs=job["epochs"], imgsz=job["imgsz"], batch=job["batch"], device=job["device"], seed=job["seed"],
        out=out, plots=False, workers=job["workers"], cache=job.get("cache", False),
    )  # fmt: skip
    start = time.perf_counter()
    spec = job["spec"]
    if spec is None:
        run = distill.train(job["data"], job["model"], **common)
    elif spec == "native":
        run = distill.train(job["data"], job["model"], distill_model=job["teacher"], **common)
    elif spec == "all-labels":
        run = distill.train(job["full_data"], job["model"], **common)
    elif spec == "pseudo":
        from distill.pool_data import with_pool

        defaults = distill.DistillConfig(teacher=job["teacher"])  # the pseudo-labels ours would use, when not given
        conf, ratio = job.get("pseudo_conf", defaults.pseudo_conf), job.get("unlabeled_ratio", defaults.unlabeled_ratio)
        mixed = with_pool(job["data"], job["teacher"], job["pool"], out.parent / "pool", conf=conf, ratio=ratio,
                          imgsz=job["imgsz"], device=job["device"])  # fmt: skip
        run = distill.train(mixed.data, job["model"], **common)
    else:
        kd = {k: v for k, v in spec.items() if k != "unlabeled"}
        pool = job["pool"] if spec.get("unlabeled") else None
        config = distill.DistillConfig(teacher=job["teacher"], **kd)
        if pool and config.pool_rounds > 1:
            reuse_first_round(job, config, {k: v for k, v in common.items() if k != "out"}, out)
        run = distill.distill(job["data"], job["model"], config, unlabeled=pool, **common)
    train_s = time.perf_counter() - start
    split = job.get("score_split", "test")
    scored = measure(str(run.best), Path(job["data"]), split, job["imgsz"], job["batch"], job["device"], 1)
    return {
        "job": job,
        "best": str(run.best),
        "train_s": round(train_s, 1),
        "val": {k: round(v, 5) for k, v in run.metrics.items() if k.startswith("metrics/mAP")},
        "test": scored["metrics"],
        "params": scored["params"],
    }


def reuse_first_round(job: dict[str, Any], config: Any, run: dict[str, Any], out: Path) -> None:
    """Let a ``pool_rounds`` job start from the one-round run of the same settings, when that one finished.

    Round 1 of a multi-round run *is* that run (same teacher, data, seed and config; the round count changes
    nothing in it), so its ``best.pt`` is recorded as round 1's result where :func:`distill.distill` looks for a
    finished round (``<out>-round1/round.json``, for the inputs :func:`distill.api.round_inputs` names), instead of
    training it again.
    """
    from distill.api import round_inputs
    from distill.rounds import round_config

    done = out.with_name(f"{out.name}-round1") / "round.json"
    first = same_run({**job, "spec": {**job["spec"], "pool_rounds": 1}})
    if done.is_file() or first is None:
        return
    teacher = str(Path(config.teacher).resolve())  # as distill.distill resolves it before its rounds
    asked = round_inputs(round_config(config, 1, teacher), job["data"], job["model"], job["pool"], run)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"round": 1, "best": first["best"], "metrics": first["val"], "asked": asked,
                                "same_as": first.get("same_as")}, indent=2))  # fmt: skip


def _worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    result = run_one(job)
    (Path(job["dir"]) / "result.json").write_text(json.dumps(result, indent=2) + "\n")


# -- orchestration --------------------------------------------------------------------------------------------------
def launch(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh Python process (log in its folder) unless the same job already finished.

    The job's folder is locked while it runs, so two benchmark invocations sharing a work folder (say, more baseline
    seeds started while the first invocation still trains the teacher) never train the same run twice: the second
    waits, then takes the finished result.
    """
    import fcntl

    folder = Path(job["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "result.json"
        finished = same_run(job)
        if finished is not None:
            return finished
        aside = set_aside(folder)
        if aside is not None:
            print(f"  {folder.name}: a finished run of other settings moved to {aside.name}", flush=True)
        code = reports.run_worker("benchmarks.accuracy", job, folder / "job.json", folder / "log.txt")
        if code != 0 or not done.is_file():
            tail = (folder / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
            where = f"{job['name']} (seed {job['seed']}) failed, see {folder / 'log.txt'}"
            raise RuntimeError(where + ":\n" + "\n".join(tail))
        return json.loads(done.read_text())


def same_run(job: dict[str, Any]) -> dict[str, Any] | None:
    """Return the finished run that *is* ``job`` — in its own folder, or under another student's name — else ``None``.

    Same settings (data, model, teacher, epochs, seed, ...) and — for KD students — the same KD configuration as its
    trainer really ran it (compared resolved, not as written: ``{}`` and the defaults spelled out are one run), so
    training ``job`` would repeat it step for step (runs are deterministic on CPU). Its own folder is looked at
    first; then the others, which is what keeps a table cheap when the shipped defaults change: ``default`` then
    means what another student (say ``mimic-off``) already trained, and the earlier default's runs stay in their
    folder. A run taken from another folder carries that folder's config, KD share and val curve and its name
    (``same_as``).
    """
    here = Path(job["dir"])
    trains = trained_as(job)
    settings = {k: v for k, v in trains.items() if k not in {"name", "dir", "spec"}}
    config = resolved_config(job)
    others = (done.parent for done in sorted(here.parent.glob("*/result.json")) if done.parent != here)
    for folder in (here, *others):
        done = folder / "result.json"
        if not done.is_file():
            continue
        previous = json.loads(done.read_text())
        other = trained_as(previous.get("job", {}))
        if {k: v for k, v in other.items() if k not in {"name", "dir", "spec"}} != settings:
            continue
        if (other.get("spec") == trains["spec"]) if config is None else (ran_config(folder) == config):
            if folder == here:
                return {**previous, "job": job, "cached": True}
            csv = folder / "train" / "results.csv"
            return {**previous, "job": job, "cached": True, "same_as": folder.name, "config": ran_config(folder),
                    "kd_share": kd_share(csv), "val_curve": val_curve(csv)}  # fmt: skip
    return None


def trained_as(job: dict[str, Any]) -> dict[str, Any]:
    """Return ``job`` as the training it runs: an ``all-labels`` job is plain training on the full set.

    A teacher or ceiling given every label (``spec`` ``all-labels``, ``full_data``) is scored on the labelled part's
    val and test splits, which are the full set's (:func:`benchmarks.label_split.label_split`): the same run as a
    plain one on the full set with the same settings, so either is taken for the other.
    """
    if job.get("spec") != "all-labels":
        return job
    plain = {k: v for k, v in job.items() if k != "full_data"}
    return {**plain, "spec": None, "data": job["full_data"]}


def set_aside(folder: Path) -> Path | None:
    """Move a finished run of other settings out of ``folder`` (to ``<folder>~<n>``) before another run trains there.

    A folder is named for what makes a run, but not for everything (a shipped default that changed keeps the
    student's name): training into it would overwrite the weights its ``result.json`` still vouches for. Set aside,
    the run keeps its result and stays reusable (:func:`same_run` looks in every folder).
    """
    if not (folder / "result.json").is_file():
        return None
    n = 1
    while folder.with_name(f"{folder.name}~{n}").exists():
        n += 1
    aside = folder.with_name(f"{folder.name}~{n}")
    aside.mkdir()
    for entry in folder.iterdir():
        if entry.name != ".lock":  # held by this process while it runs the job
            entry.rename(aside / entry.name)
    return aside


def finished_result(job: dict[str, Any]) -> dict[str, Any] | None:
    """Return a job's cached result without running it (``None`` if it has not finished)."""
    done = Path(job["dir"]) / "result.json"
    return json.loads(done.read_text()) if done.is_file() else None


def resolved_config(job: dict[str, Any], task: str | None = None) -> dict[str, Any] | None:
    """Return the full KD configuration a student job asks for (spec over today's defaults), else None.

    Resolved for the task as the trainer resolves it (``DistillConfig.for_task``); ``task`` defaults to the one the
    job's student model names (``yolov8n-pose.yaml`` → pose).
    """
    if not isinstance(job["spec"], dict):
        return None
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    from distill import DistillConfig

    kd = {k: v for k, v in job["spec"].items() if k != "unlabeled"}
    config = DistillConfig(teacher=job["teacher"] or "teacher.pt", **kd)
    config = config.for_task(task or guess_model_task(yaml_model_load(job["model"]))).to_dict()
    config.pop("teacher")
    return config


def ran_config(folder: Path) -> dict[str, Any] | None:
    """Return the KD configuration a finished run really used, from the ``distill.json`` its trainer wrote."""
    plan = folder / "train" / "distill.json"
    if not plan.is_file():
        return None
    return completed_config(json.loads(plan.read_text())["config"])


def completed_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a run's recorded KD config with settings added since it ran at their defaults, ``teacher`` left out.

    (A run from before ``pseudo_conf`` existed ran as the default does: without a pool the setting does nothing. A
    run from before ``logit_conf_weight`` existed ran without it, on every task; since it exists every run records
    the value its task resolved to.)
    """
    from distill.config import DEFAULTS
    from distill.rounds import ROUND

    ran = {**DEFAULTS, "logit_conf_weight": False, "extra": {}, **config}
    ran["extra"] = {k: v for k, v in ran["extra"].items() if k != ROUND}  # which round the last one was: the run's
    return {k: v for k, v in ran.items() if k != "teacher"}


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


METRIC = "metrics/mAP50-95(B)"
#: The task's own metric (masks, keypoints), reported beside the boxes'.
TASK_METRIC = {"detect": METRIC, "segment": "metrics/mAP50-95(M)", "pose": "metrics/mAP50-95(P)"}
#: Synthetic sets for segment and pose (no real one ships): train / val / test images at the profile's image size.
SYNTH_IMAGES = (300, 60, 60)


def task_model(yaml_name: str, task: str) -> str:
    """Return the task's variant of a detect model yaml: ``yolov8n.yaml`` → ``yolov8n-seg.yaml`` / ``-pose``."""
    suffix = {"detect": "", "segment": "-seg", "pose": "-pose"}[task]
    return yaml_name.replace(".yaml", f"{suffix}.yaml")


def synth_dataset(task: str, size: int, workdir: Path, images: tuple[int, int, int] = SYNTH_IMAGES) -> tuple[Path, str]:
    """Write (once) the synthetic set for ``task`` with ``yolo-distill synth``'s generator; return yaml and hash."""
    import hashlib

    from distill.synthetic import generate

    train, val, test = images
    folder = workdir / f"synth-{task}-{size}-{train}-{val}-{test}"
    if not (folder / "data.yaml").is_file():
        generate(folder, task, images=train, val=val, test=test, size=size, seed=0)
    digest = hashlib.sha256(f"{task}-{size}-{train}-{val}-{test}-seed0".encode()).hexdigest()[:16]
    return folder / "data.yaml", digest


def relative(path: str | Path | None, workdir: Path | None = None) -> str | None:
    """Return ``path`` without this machine's folders: relative to the repository, else ``<workdir>/...``.

    Reports are committed and read on other machines, so they name no absolute path of the machine that wrote them.
    """
    if path is None:
        return None
    path = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (workdir, "<workdir>/")):
        if base is not None and path.is_relative_to(base.resolve()):
            return prefix + str(path.relative_to(base.resolve()))
    return path.name


def job_key(job: dict[str, Any]) -> dict[str, Any]:
    """Return what makes two runs the same run on any machine: every job setting but local paths and workers.

    The data's content hash is part of the run folder's name, so it is kept (as that name).
    """
    key = {k: v for k, v in job.items() if k not in {"dir", "data", "teacher", "workers", "pool", "full_data"}}
    return {**key, "run": Path(job["dir"]).name}


def run_config(result: dict[str, Any]) -> dict[str, Any] | None:
    """Return the KD configuration a finished run used (recorded when reused, else from its ``distill.json``)."""
    return result["config"] if "config" in result else ran_config(Path(result["job"]["dir"]))


def run_kd_share(result: dict[str, Any]) -> dict[str, float] | None:
    """Return a finished run's KD share of the loss (recorded when reused, else from its ``results.csv``)."""
    if "kd_share" in result:
        return result["kd_share"]
    return kd_share(Path(result["job"]["dir"]) / "train" / "results.csv")


def run_val_curve(result: dict[str, Any]) -> list[float] | None:
    """Return a finished run's per-epoch val curve (recorded when reused, else from its ``results.csv``)."""
    if "val_curve" in result:
        return result["val_curve"]
    return val_curve(Path(result["job"]["dir"]) / "train" / "results.csv")


def run_record(result: dict[str, Any], workdir: Path | None = None) -> dict[str, Any]:
    """One run as the report lists it: student name, seed, scores and where it ran (repository-relative paths).

    The record also carries what :func:`reusable_runs` needs to take the run over in a later invocation on another
    machine (``job``, ``config``, ``kd_share``), so a table can be finished across sessions without the work folder.
    """
    job = result["job"]
    return {
        "name": job["name"],
        "seed": job["seed"],
        "test": result["test"],
        "val": result["val"],
        "train_s": result["train_s"],
        "spec": job["spec"],
        "epochs": job["epochs"],
        "imgsz": job["imgsz"],
        "dir": relative(job["dir"], workdir),
        "teacher": relative(job.get("teacher"), workdir),
        "cached": bool(result.get("cached")),
        "reused_from": result.get("reused_from"),
        "same_as": result.get("same_as"),
        "job": job_key(job),
        "config": run_config(result),
        "kd_share": run_kd_share(result),
        "val_curve": run_val_curve(result),
    }


def reusable_runs(paths: list[Path]) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any] | None]:
    """Load the runs (and the teacher) of earlier reports, keyed by (student, seed), for ``--reuse``."""
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    teacher = None
    for path in paths:
        report = json.loads(path.read_text())
        for record in report.get("runs", []):
            if "job" in record:
                runs[(record["name"], record["seed"])] = {**record, "reused_from": relative(path)}
        teacher = teacher or report.get("teacher")
    return runs, teacher


def reuse(job: dict[str, Any], runs: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any] | None:
    """Return an earlier report's result for ``job`` when it is the same run with today's resolved KD config.

    KD students are compared by their resolved config, not their spec as written (as :func:`same_run` does).
    """
    record = runs.get((job["name"], job["seed"]))
    if record is None:
        return None
    key, recorded = job_key(job), record["job"]
    if {k: v for k, v in recorded.items() if k != "spec"} != {k: v for k, v in key.items() if k != "spec"}:
        return None
    same = (
        completed_config(record["config"]) == resolved_config(job)
        if isinstance(job["spec"], dict)
        else recorded["spec"] == job["spec"]
    )
    if not same:
        return None
    return {
        "job": job,
        "test": record["test"],
        "val": record["val"],
        "train_s": record["train_s"],
        "config": record["config"],
        "kd_share": record["kd_share"],
        "val_curve": record.get("val_curve"),
        "reused_from": record["reused_from"],
        "cached": True,
    }


TASK_LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "train/seg_loss", "train/pose_loss",
               "train/kobj_loss")  # fmt: skip


def results_rows(results_csv: Path) -> list[dict[str, str]]:
    """Rows of an Ultralytics ``results.csv`` with its padded column names stripped (none if the file is missing)."""
    if not results_csv.is_file():
        return []
    import csv

    with results_csv.open() as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


def kd_share(results_csv: Path) -> dict[str, float] | None:
    """Share of the KD terms in the training loss at the first and the last epoch (the loss-scale check).

    KD columns are every ``train/*_loss`` that is not a task loss (ours: ``cwd_loss``, ``logit_loss``, ...;
    Ultralytics' KD: ``dis_loss``); the online teacher's own loss is left out. ``None`` for plain training.
    """
    rows = results_rows(results_csv)
    if not rows:
        return None
    kd_cols = [k for k in rows[0] if k.startswith("train/") and k.endswith("_loss") and k not in TASK_LOSSES
               and k != "train/teacher_loss"]  # fmt: skip
    if not kd_cols:
        return None
    task_cols = [k for k in rows[0] if k in TASK_LOSSES]

    def share(row: dict[str, str]) -> float:
        kd = sum(float(row[k]) for k in kd_cols)
        total = kd + sum(float(row[k]) for k in task_cols)
        return round(kd / total, 4) if total else 0.0

    return {"first_epoch": share(rows[0]), "last_epoch": share(rows[-1])}


def val_curve(results_csv: Path, metric: str = METRIC) -> list[float] | None:
    """Return the val ``metric`` after every epoch (what Ultralytics' per-epoch validation logged), ``None`` if not run.

    Paired over seeds (:func:`benchmarks.paired.curve_gains`) it shows *when* a student is ahead of its baseline —
    on BCCD the KD students lead in the middle of training and the baseline catches up in the last epochs.
    """
    rows = results_rows(results_csv)
    if not rows or metric not in rows[0]:
        return None
    return [round(float(row[metric]), 5) for row in rows]


def phases(epochs: int, close_mosaic: int = 10) -> list[tuple[int, int]]:
    """Epoch spans (1-based, inclusive) the report compares on val: after warm-up with mosaic, then mosaic closed.

    The first third of a run (warm-up, nothing detected yet) is left out; ``close_mosaic`` is Ultralytics' default,
    which the benchmark does not change. A run too short for a mosaic stage gets one span, after its first third.

    Examples:
        >>> phases(30), phases(40), phases(9)
        ([(11, 20), (21, 30)], [(14, 30), (31, 40)], [(4, 9)])
    """
    start = epochs // 3 + 1
    closed = epochs - close_mosaic
    return [(start, closed), (closed + 1, epochs)] if closed >= start else [(start, epochs)]


def summarise(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of test mAP over seeds for one student."""
    m95 = [r["test"]["metrics/mAP50-95(B)"] for r in results]
    m50 = [r["test"]["metrics/mAP50(B)"] for r in results]

    def std(values: list[float]) -> float:
        return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0

    return {
        "name": name,
        "spec": results[0]["job"]["spec"],
        "config": run_config(results[0]),
        "seeds": [r["job"]["seed"] for r in results],
        "map50_95": m95,
        "map50_95_mean": round(statistics.fmean(m95), 4),
        "map50_95_std": std(m95),
        "map50": m50,
        "map50_mean": round(statistics.fmean(m50), 4),
        "map50_std": std(m50),
        "train_s_mean": round(statistics.fmean(r["train_s"] for r in results), 1),
        "kd_share_of_loss": run_kd_share(results[0]),
    }


def markdown(report: dict[str, Any]) -> str:
    """Return the README table: one row per student, best mean first, gain over the baseline."""
    base = next((s["map50_95_mean"] for s in report["students"] if s["name"] == "baseline"), None)
    rows = [
        "| student | mAP50-95 (test) | mAP50 (test) | vs baseline | KD share of loss (last epoch) | train s / run |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(report["students"], key=lambda s: -s["map50_95_mean"]):
        share = "" if not s.get("kd_share_of_loss") else f"{s['kd_share_of_loss']['last_epoch']:.0%}"
        gain = "" if base is None or s["name"] == "baseline" else f"{s['map50_95_mean'] - base:+.4f}"
        rows.append(
            f"| {s['name']} | {s['map50_95_mean']:.4f} ± {s['map50_95_std']:.4f} | "
            f"{s['map50_mean']:.4f} ± {s['map50_std']:.4f} | {gain} | {share} | {s['train_s_mean']:.0f} |"
        )
    return "\n".join(rows)


def arg_parser() -> argparse.ArgumentParser:
    """Return the benchmark's command line (the worker's ``--worker`` and the report options included)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0])
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
    from distill import storage
    from distill.image_files import content_hash

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
    from distill.dataset_files import resolve_dataset

    return "test" if resolve_dataset(data).get("test") else "val"


def train_all(
    teacher_job: dict[str, Any], student_jobs: list[dict[str, Any]], reuse_reports: list[Path], jobs: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Train (or take over) every student, ``jobs`` at a time; return their results and the teacher's.

    A run of a ``--reuse`` report that is the same run is taken over. The teacher trains only when a distilled
    student still needs it; baselines start at once, beside it, and distilled students wait for its weights.
    """
    reusable, reused_teacher = reusable_runs(reuse_reports)

    def run(job: dict[str, Any], teacher: Future | None) -> dict[str, Any]:
        result = reuse(job, reusable)
        if result is None:
            if job["spec"] not in (None, "all-labels"):  # students that need the teacher wait for it
                job = dict(job, teacher=teacher.result()["best"])
            result = launch(job)
        print(
            f"  {job['name']:<16} seed {job['seed']}: test mAP50-95 {result['test']['metrics/mAP50-95(B)']:.4f} "
            f"mAP50 {result['test']['metrics/mAP50(B)']:.4f} ({result['train_s']:.0f} s)",
            flush=True,
        )
        return result

    plain = (None, "all-labels")
    needs_teacher = any(job["spec"] not in plain and reuse(job, reusable) is None for job in student_jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        teacher_future = pool.submit(run, teacher_job, None) if needs_teacher else None
        order = sorted(student_jobs, key=lambda j: j["spec"] not in (None, "all-labels"))  # plain runs first
        futures = [pool.submit(run, job, teacher_future) for job in order]
        finished = [f.result() for f in futures]
        teacher = teacher_future.result() if teacher_future else finished_result(teacher_job) or reused_teacher
    return finished, teacher


def finished_runs(
    teacher_job: dict[str, Any], student_jobs: list[dict[str, Any]], reuse_reports: list[Path]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Return the runs of ``student_jobs`` that already finished (or an earlier report has) and the teacher's.

    Nothing is trained: the report of a table stopped part-way (a time limit, a lease ending). A student run is
    matched as :func:`train_all` would match it, with the teacher's weights as its teacher.
    """
    reusable, reused_teacher = reusable_runs(reuse_reports)
    teacher = finished_result(teacher_job) or reused_teacher
    finished = []
    for job in student_jobs:
        if job["spec"] not in (None, "all-labels") and teacher is not None and "best" in teacher:
            job = dict(job, teacher=teacher["best"])
        result = reuse(job, reusable) or same_run(job)
        if result is not None:
            finished.append(result)
    print(f"{len(finished)} of {len(student_jobs)} student runs finished", flush=True)
    return finished, teacher


def build_report(
    args: argparse.Namespace,
    settings: dict[str, Any],
    data_hash: str,
    teacher: dict[str, Any] | None,
    finished: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """Return the report: settings, dataset, machine, teacher, per-student summaries, paired gains and every run.

    ``settings`` are the profile's with the seeds, epochs and jobs this invocation used; ``started`` is when it
    began (``wall_s``).
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in finished:
        by_name.setdefault(r["job"]["name"], []).append(r)
    runs = [run_record(r, args.workdir.resolve()) for r in finished]
    synthetic = settings["synthetic"]
    return {
        "benchmark": "accuracy",
        "profile": args.profile,
        "settings": settings,
        "task": args.task,
        "dataset": {
            "name": dataset_name(args, synthetic),
            "hash": data_hash,
            "score_split": finished[0]["job"].get("score_split", "test") if finished else "test",
            "select_split": "val",
        },
        "machine": reports.machine(args.device),
        "teacher": {
            "model": task_model(settings["teacher"], args.task),
            "epochs": settings["teacher_epochs"],
            "test": teacher["test"],
            "val": teacher["val"],
            "train_s": teacher["train_s"],
        }
        if teacher
        else None,  # fmt: skip
        "default": "default" if "default" in by_name else None,
        "default_config": resolved_config({"spec": {}, "teacher": None}, task=args.task),
        "students": [summarise(name, results) for name, results in by_name.items()],
        **paired_gains(runs, list(by_name), args.task, settings["epochs"]),
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),  # this invocation's; runs taken from cache add nothing
        "runs_from_cache": sum(bool(r.get("cached")) for r in finished),
        "train_s_total": round((teacher["train_s"] if teacher else 0) + sum(r["train_s"] for r in finished), 1),
    }


def paired_gains(runs: list[dict[str, Any]], names: list[str], task: str, epochs: int) -> dict[str, Any]:
    """Return the report's paired comparisons with the baseline (all empty without a baseline).

    ``paired``: test gains per metric (boxes', and the task's own); ``paired_val_by_epoch``: val gains after every
    epoch; ``paired_val_by_phase``: mean val gains over each of :func:`phases`.
    """
    if "baseline" not in names:
        return {"paired": {}, "paired_val_by_epoch": {}, "paired_val_by_phase": {}}
    return {
        "paired": {
            metric: {
                "level": 0.95,
                "vs_baseline": paired.paired_table(runs, names, metric),
                **({"pool_vs": pool_comparisons(runs, names, metric)} if any(pool_rows(runs, names)) else {}),
            }
            for metric in dict.fromkeys((METRIC, TASK_METRIC[task]))
        },  # fmt: skip
        "paired_val_by_epoch": paired.curve_gains(runs, names),
        "paired_val_by_phase": {
            f"{first}-{last}": paired.span_gains(runs, names, first, last) for first, last in phases(epochs)
        },
    }


def pool_rows(runs: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Return the students of ``names`` that trained on the unlabelled pool (their spec says ``unlabeled``)."""
    specs = {r["name"]: r["spec"] for r in runs}
    return [n for n in names if isinstance(specs.get(n), dict) and specs[n].get("unlabeled")]


def pool_comparisons(runs: list[dict[str, Any]], names: list[str], metric: str) -> dict[str, dict[str, Any]]:
    """Return each pool student's paired gains over the rows issue 21's target names besides the baseline.

    Those are today's default on the labelled part, label-then-train (the same pseudo-labels without KD; and each
    ``label_then_train`` variant, with other pseudo-label settings) and the ceiling (every image labelled; a gap,
    negative when the pool does not reach it).
    """
    specs = {r["name"]: r["spec"] for r in runs}
    pseudo = [n for n in names if specs.get(n) == "pseudo"]  # label-then-train, and its variants (other settings)
    rivals = [n for n in ("default", *pseudo, "ceiling") if n in names]
    score = {n: paired.by_seed(runs, n, metric) for n in names}
    return {
        f"{name} vs {rival}": paired.paired_gain(score[name], score[rival])
        for name in pool_rows(runs, names)
        for rival in rivals
    }


def report_tables(report: dict[str, Any]) -> str:
    """Return the printed report: the students' table, then the paired gains on test, on val by phase and by epoch."""
    runs, names = report["runs"], [s["name"] for s in report["students"]]
    table = markdown(report)
    for metric in report["paired"]:
        table += f"\n\nPaired gains over the baseline (test {metric.removeprefix('metrics/')}, points):\n\n"
        table += paired.markdown(runs, names, metric, default=report["default"])
        for pair, p in report["paired"][metric].get("pool_vs", {}).items():
            if p["n"]:
                ci = f" (95% CI {p['ci'][0] * 100:+.2f} … {p['ci'][1] * 100:+.2f})" if p["ci"] else ""
                table += f"\n- {pair}: {p['mean'] * 100:+.2f}{ci}, {p['wins']}/{p['n']} wins"
    for span, gains in report["paired_val_by_phase"].items():
        table += f"\n\nPaired gain on val, mean mAP50-95 over epochs {span} (points):\n\n"
        table += "\n".join(
            f"- {name}: {g['mean'] * 100:+.2f}"
            + (f" (95% CI {g['ci'][0] * 100:+.2f} … {g['ci'][1] * 100:+.2f})" if g["ci"] else "")
            + f", {g['wins']}/{g['n']} seeds ahead"
            for name, g in gains.items()
            if g["n"]
        )
    if report["paired_val_by_epoch"]:
        table += "\n\nMean paired gain on val (mAP50-95 after each epoch, points):\n\n"
        table += paired.curve_markdown(report["paired_val_by_epoch"])
    return table


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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train the teacher and every student (in parallel), write and print the report."""
    args = arg_parser().parse_args(argv)
    import distill

    distill.configure()  # offline Ultralytics, before it loads (here and in the workers)
    if args.worker:
        _worker(args.worker)
        return 0

    profile, seeds, epochs, teacher_tag = profile_settings(args)
    students = chosen_students(args)
    jobs = args.jobs or (os.cpu_count() or 1 if args.device == "cpu" else 1)
    # Runs are cached by their settings, not the profile's name, so screen and cpu share every run they both ask for.
    student_yaml, teacher_yaml = task_model(profile.student, args.task), task_model(profile.teacher, args.task)
    workdir = (args.workdir / f"accuracy-{profile.imgsz}px-b{profile.batch}-{Path(student_yaml).stem}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    sets = prepare_datasets(args, profile, workdir)
    teacher_job, student_jobs = plan_jobs(args, profile, sets, students, seeds, epochs, teacher_tag, workdir)
    print(
        f"teacher {teacher_yaml} ({profile.teacher_epochs} epochs at {profile.imgsz}px), then "
        f"{len(student_jobs)} student runs ({len(students)} students x seeds {list(seeds)}), {jobs} at a time",
        flush=True,
    )
    if args.finished_only:
        finished, teacher = finished_runs(teacher_job, student_jobs, args.reuse)
    else:
        finished, teacher = train_all(teacher_job, student_jobs, args.reuse, jobs)
    settings = {**asdict(profile), "seeds": list(seeds), "epochs": epochs, "jobs": jobs,
                "label_fraction": args.label_fraction, "teacher_labels": args.teacher_labels,
                "workers": args.workers, "cache": "ram" if args.cache else False}  # fmt: skip
    report = build_report(args, settings, sets.data_hash, teacher, finished, started)
    print(report_tables(report))
    reports.publish(args, "-".join(filter(None, ("accuracy", args.profile, args.tag))), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which finished run *is* a job: in its work folder, under another student's name, or in an earlier report.

Runs are compared by their settings and, for KD students, by the KD configuration resolved as the trainer resolves
it, so a run is never trained twice (``--reuse`` takes over a committed report's runs, on any machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.accuracy.metrics import kd_share, val_curve
from benchmarks.accuracy.options import ROOT


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
        if (other.get("spec") == trains["spec"]) if config is None else (ran_config(folder, pooled(job)) == config):
            if folder == here:
                return {**previous, "job": job, "cached": True}
            csv = folder / "train" / "results.csv"
            return {**previous, "job": job, "cached": True, "same_as": folder.name,
                    "config": ran_config(folder, pooled(job)), "kd_share": kd_share(csv),
                    "val_curve": val_curve(csv)}  # fmt: skip
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

    Resolved as the run resolves it, for its pool and task (``DistillConfig.for_pool``: a detect pool row without
    ``pool_kd`` is label-then-train); ``task`` defaults to the one the job's student model names
    (``yolov8n-pose.yaml`` → pose).
    """
    if not isinstance(job["spec"], dict):
        return None
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    from distill import DistillConfig

    kd = {k: v for k, v in job["spec"].items() if k != "unlabeled"}
    config = DistillConfig(teacher=job["teacher"] or "teacher.pt", **kd)
    task = task or guess_model_task(yaml_model_load(job["model"]))
    config = config.for_pool(bool(job["spec"].get("unlabeled")), task).to_dict()
    config.pop("teacher")
    return config


def ran_config(folder: Path, pool: bool = False) -> dict[str, Any] | None:
    """Return the KD configuration a finished run really used, from its ``distill.json`` (``pool``: it had one)."""
    plan = folder / "train" / "distill.json"
    if not plan.is_file():
        return None
    return completed_config(json.loads(plan.read_text())["config"], pool)


def pooled(job: dict[str, Any]) -> bool:
    """Whether a student job trains with the unlabelled pool."""
    return isinstance(job.get("spec"), dict) and bool(job["spec"].get("unlabeled"))


def completed_config(config: dict[str, Any], pool: bool = False) -> dict[str, Any]:
    """Return a run's recorded KD config with settings added since it ran at their defaults, ``teacher`` left out.

    (A run from before ``pseudo_conf`` existed ran as the default does: without a pool the setting does nothing. A
    run from before ``logit_conf_weight`` existed ran without it, on every task; since it exists every run records
    the value its task resolved to. A run from before ``pool_kd`` existed ran its configured KD terms on a pool
    (``pool_kd`` true unless it had none: label-then-train); without a pool the setting is recorded as ``None``.)
    """
    from distill.config import DEFAULTS
    from distill.engine.rounds import ROUND

    ran = {**DEFAULTS, "logit_conf_weight": False, "extra": {}, **config}
    if "pool_kd" not in config:
        ran["pool_kd"] = (ran["loss"] != "none" or bool(ran["logit"])) if pool else None
    ran["extra"] = {k: v for k, v in ran["extra"].items() if k != ROUND}  # which round the last one was: the run's
    return {k: v for k, v in ran.items() if k != "teacher"}


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
        completed_config(record["config"], pooled(recorded)) == resolved_config(job)
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

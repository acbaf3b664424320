"""Running the jobs: one run per fresh Python process (the ``--worker``), the teacher and students side by side.

:func:`launch` starts ``python -m benchmarks.accuracy --worker JOB`` (through :func:`benchmarks.report.run_worker`)
unless the same run already finished; :func:`train_all` trains what is missing, :func:`finished_runs` nothing.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import report as reports
from benchmarks.accuracy.cache import finished_result, reusable_runs, reuse, same_run, set_aside


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
        from distill.engine.pool_data import with_pool

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
    finished round (``<out>-round1/round.json``, for the inputs :func:`distill.engine.api.round_inputs` names), instead
    of training it again.
    """
    from distill.engine.api import round_inputs
    from distill.engine.rounds import round_config

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

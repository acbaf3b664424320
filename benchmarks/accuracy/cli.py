"""The command line's entry point: plan the runs, train (or take over) what is missing, write the report.

Kept apart from ``__main__`` so that importing :func:`main` (``from benchmarks.accuracy import main``) runs nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import report as reports
from benchmarks.accuracy.latency import latency_only, latency_section
from benchmarks.accuracy.latency import markdown as latency_markdown
from benchmarks.accuracy.options import arg_parser, chosen_students, profile_settings
from benchmarks.accuracy.plan import plan_jobs, prepare_datasets, task_model, work_folder
from benchmarks.accuracy.run import _worker, finished_runs, train_all
from benchmarks.accuracy.tables import build_report, report_tables


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train the teacher and every student (in parallel), write and print the report."""
    args = reports.start(arg_parser(), argv, _worker)
    if args is None:
        return 0
    if args.latency_only:
        return latency_only_main(args)

    profile, seeds, epochs, teacher_tag = profile_settings(args)
    students = chosen_students(args)
    jobs = args.jobs or (os.cpu_count() or 1 if args.device == "cpu" else 1)
    teacher_yaml = task_model(profile.teacher, args.task)
    workdir = work_folder(args.workdir, profile, args.task)  # runs cached by their settings (screen and cpu share)
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
    if args.synthetic:  # the set the runs trained on, not the profile's (reports before 2026-12-07 recorded that)
        settings["synthetic"] = [int(v) for v in args.synthetic.split(",")]
    report = build_report(args, settings, sets.data_hash, teacher, finished, started)
    print(report_tables(report))
    if not args.no_latency:
        add_latency(report, sets.data, Path(teacher_job["dir"]), args, workdir)
    name = "-".join(filter(None, ("accuracy", args.profile, args.tag)))
    reports.publish(args, name, report)
    if not args.no_report:
        render_figure((args.results or reports.RESULTS) / f"{name}-{dt.date.today().isoformat()}.json")
    return 0


def add_latency(report: dict[str, Any], data: Path, teacher_dir: Path, args: argparse.Namespace, workdir: Path) -> None:
    """Add the latency section to a report just built (timed on ``--device``); a failure is one warning line."""
    try:
        report["latency"] = latency_section(report, data, teacher_dir, args.workdir.resolve(), args.device,
                                            workdir / "latency")  # fmt: skip
        print(latency_markdown(report["latency"]), flush=True)
    except Exception as e:  # timing must never lose a benchmark's report
        print(f"warning: no latency section: {type(e).__name__}: {e}", flush=True)


def latency_only_main(args: argparse.Namespace) -> int:
    """``--latency-only REPORT``: add the latency section to a report without training, and draw its figures."""
    report = latency_only(args)
    print(latency_markdown(report["latency"]), flush=True)
    if args.no_report:
        return 0
    path = args.results / args.latency_only.name if args.results else args.latency_only
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {path}")
    render_figure(path)
    return 0


def render_figure(report_path: Path) -> None:
    """Draw the report just written as PNGs beside it; a failure is one warning line (the report is what counts).

    ``<report>.png`` is the scores by seed; a report with a latency section also gets ``<report>-pareto.png``.
    """
    try:
        # Imported here: `python -m benchmarks.accuracy.figure` would otherwise find it imported by the package.
        from benchmarks.accuracy import figure

        print(f"figure: {figure.render(report_path)}")
        pareto = figure.render_pareto(report_path)
        if pareto is not None:
            print(f"figure: {pareto}")
    except Exception as e:  # a plot must never lose a benchmark's report
        print(f"warning: no figure for {report_path}: {type(e).__name__}: {e}", flush=True)

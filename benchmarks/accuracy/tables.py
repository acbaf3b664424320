"""The report of an invocation: per-student summaries, paired gains over the baseline, the printed tables.

Every run is recorded with repository-relative paths and what a later ``--reuse`` needs to take it over; the
paired comparisons come from :mod:`benchmarks.paired`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import paired
from benchmarks import report as reports
from benchmarks.accuracy.cache import job_key, pooled, ran_config, relative, resolved_config
from benchmarks.accuracy.metrics import METRIC, TASK_METRIC, kd_share, phases, val_curve
from benchmarks.accuracy.plan import dataset_name, task_model
from distill import markdown as md


def run_config(result: dict[str, Any]) -> dict[str, Any] | None:
    """Return the KD configuration a finished run used (recorded when reused, else from its ``distill.json``)."""
    return result["config"] if "config" in result else ran_config(Path(result["job"]["dir"]), pooled(result["job"]))


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
    rows = []
    for s in sorted(report["students"], key=lambda s: -s["map50_95_mean"]):
        share = "" if not s.get("kd_share_of_loss") else f"{s['kd_share_of_loss']['last_epoch']:.0%}"
        gain = "" if base is None or s["name"] == "baseline" else f"{s['map50_95_mean'] - base:+.4f}"
        maps = f"{s['map50_95_mean']:.4f} ± {s['map50_95_std']:.4f}", f"{s['map50_mean']:.4f} ± {s['map50_std']:.4f}"
        rows.append([s["name"], *maps, gain, share, f"{s['train_s_mean']:.0f}"])
    header = ["student", "mAP50-95 (test)", "mAP50 (test)", "vs baseline", "KD share of loss (last epoch)",
              "train s / run"]  # fmt: skip
    return md.table(header, rows)


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

"""Score a synthetic-set accuracy report's runs again on a larger test split (is a gain the test set's noise?).

A 64-image test split moves a score by a point or two on its own. Synthetic sets draw their test images after train
and val, so a set generated with more test images has the *same* train and val images (the trained runs stay valid)
and a test split whose first images are the old one's. This re-validates every run's ``best.pt`` (and the teacher's)
on it with the evaluate step's own ``measure`` and writes the paired table again::

    python -m benchmarks.rescore benchmarks/results/accuracy-demo-t60-2026-11-28.json --test-images 512

Runs are found in the work folder the report names (``<workdir>/...``, default ``benchmarks/.work``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import paired
from benchmarks import report as reports
from benchmarks.accuracy import METRIC, ROOT, TASK_METRIC, synth_dataset


def main(argv: list[str] | None = None) -> int:
    """Re-validate a report's runs on a larger synthetic test split and print and write the paired table."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rescore", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="an accuracy report of a synthetic-set profile (demo, segment, pose)")
    ap.add_argument("--test-images", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".work")
    reports.add_report_args(ap)
    args = ap.parse_args(argv)

    import distill

    distill.configure()  # offline Ultralytics, before it loads
    from distill.steps.evaluate import measure

    original = json.loads(args.report.read_text())
    settings, task = original["settings"], original.get("task", "detect")
    synthetic = settings.get("synthetic")
    if not synthetic:
        raise SystemExit(f"{args.report}: not a synthetic-set report (BCCD has no larger test split)")
    train, val, _ = synthetic
    first = Path(original["runs"][0]["dir"].replace("<workdir>", str(args.workdir)))
    data, data_hash = synth_dataset(task, settings["imgsz"], first.parent, (train, val, args.test_images))

    def score(run_dir: str) -> dict[str, float]:
        best = Path(run_dir.replace("<workdir>", str(args.workdir))) / "train" / "weights" / "best.pt"
        if not best.is_file():
            raise SystemExit(f"{best} not found: rescore needs the report's work folder (--workdir)")
        return measure(str(best), data, "test", settings["imgsz"], settings["batch"], "cpu", 1)["metrics"]

    runs = [{**run, "test": score(run["dir"])} for run in original["runs"]]
    teacher_dir = next((r["teacher"] for r in original["runs"] if r.get("teacher")), None)
    teacher = score(str(Path(teacher_dir).parent.parent.parent)) if teacher_dir else None
    names = list(dict.fromkeys(r["name"] for r in runs))
    metrics = list(dict.fromkeys((METRIC, TASK_METRIC[task])))
    out: dict[str, Any] = {
        "benchmark": "accuracy-rescore",
        "from": args.report.name,  # a report in benchmarks/results
        "test_images": args.test_images,
        "dataset_hash": data_hash,
        "task": task,
        "teacher_test": teacher,
        "machine": reports.machine("cpu"),
        "paired": {m: {"level": 0.95, "vs_baseline": paired.paired_table(runs, names, m)} for m in metrics},
        "runs": runs,
    }
    for metric in metrics:
        what = f"test {metric.removeprefix('metrics/')}, {args.test_images} images"
        print(f"\nPaired gains over the baseline ({what}):\n")
        print(paired.markdown(runs, names, metric, default=original.get("default")))
    name = args.report.stem.rsplit("-", 3)[0] + f"-test{args.test_images}"
    reports.publish(args, name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

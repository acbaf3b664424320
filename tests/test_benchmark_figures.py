"""The accuracy report's picture (issue 40): a PNG beside the JSON, on the task's metric, older reports included."""

import json
import math
import shutil

import pytest
from conftest import ROOT
from PIL import Image

from benchmarks.accuracy import figure

RESULTS = ROOT / "benchmarks" / "results"
DETECT = RESULTS / "accuracy-cpu-f25-2026-11-30.json"
POSE = RESULTS / "accuracy-demo-pose-2026-11-29.json"


def _is_png(path, size=(900, 450)):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size


@pytest.mark.fast
@pytest.mark.parametrize("report", [DETECT, POSE], ids=["detect", "pose"])
def test_render_writes_a_png_beside_the_report(tmp_path, report):
    copy = tmp_path / report.name
    shutil.copy(report, copy)
    png = figure.render(copy)
    assert png == tmp_path / report.name.replace(".json", ".png")
    _is_png(png)


@pytest.mark.fast
def test_pose_report_is_drawn_on_the_keypoint_metric():
    report = json.loads(POSE.read_text())
    metric = figure.report_metric(report)
    assert metric == "metrics/mAP50-95(P)"
    rows = dict(figure.rows(report, metric))
    assert list(rows) == [s["name"] for s in report["students"]]  # the report's order
    base = [r["test"][metric] for r in report["runs"] if r["name"] == "baseline"]
    assert rows["baseline"] == base and rows["baseline"] != report["students"][0]["map50_95"]  # not the boxes'
    assert figure.teacher_score(report, metric) == report["teacher"]["test"][metric]


@pytest.mark.fast
def test_a_row_without_numbers_and_an_old_report_still_render(tmp_path):
    report = json.loads(DETECT.read_text())
    report.pop("task")
    report.pop("settings")
    report["runs"] = [r for r in report["runs"] if r["name"] != "pool"]
    for s in report["students"]:
        if s["name"] == "pool":
            s.pop("map50_95")  # no runs, no per-seed scores: the row is left out
    path = tmp_path / "accuracy-old.json"
    path.write_text(json.dumps(report))
    assert "pool" not in dict(figure.rows(report, figure.report_metric(report)))
    _is_png(figure.render(path))
    empty = tmp_path / "accuracy-empty.json"
    empty.write_text(json.dumps({"benchmark": "accuracy", "students": [{"name": "baseline"}], "teacher": None}))
    _is_png(figure.render(empty))


@pytest.mark.fast
def test_ci_is_the_t_interval_over_seeds():
    mean, half = figure.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)  # t(0.975, 2) = 4.303
    assert half == pytest.approx(2.484, abs=1e-3)
    assert figure.mean_ci([0.3]) == (0.3, None)


@pytest.mark.fast
def test_the_benchmark_warns_in_one_line_when_its_figure_fails(tmp_path, capsys):
    from benchmarks.accuracy.cli import render_figure

    render_figure(tmp_path / "accuracy-missing.json")  # no exception: the report is what counts
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("warning: no figure for ")
    shutil.copy(DETECT, tmp_path / DETECT.name)
    render_figure(tmp_path / DETECT.name)
    assert capsys.readouterr().out.startswith("figure: ") and (tmp_path / DETECT.name).with_suffix(".png").is_file()

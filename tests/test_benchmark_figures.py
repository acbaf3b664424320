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


# The Pareto chart (issue 40): test mAP against inference time per image, from a report's latency section.

M = "metrics/mAP50-95(B)"


def _timed(name, kind, ms, mean, ci=None, **extra):
    return {"name": name, "kind": kind, "format": "onnx" if kind == "onnx" else "pt", "weights": "trained",
            "ms_per_image": ms, "inference_ms": ms * 0.8, "threads": 1, "device": "cpu",
            "map": {"mean": mean, "ci95": ci, "n": 1 if ci is None else 3, "source": "s"}, **extra}  # fmt: skip


def _with_latency(models):
    report = json.loads(DETECT.read_text())
    machine = {"device": "cpu", "cpu": "Test CPU", "cores": 2, "gpu": None}
    report["latency"] = {"device": "cpu", "machine": machine, "imgsz": 160, "split": "test", "metric": M,
                         "models": models}  # fmt: skip
    return report


#: The teacher is slowest and best; "slow" is slower and worse than "fast" (dominated); the three students of one
#: architecture share one time; the ONNX export is fastest but scores below the fast students.
PARETO_MODELS = [
    _timed("teacher", "teacher", 20.0, 0.42),
    _timed("baseline", "student", 8.0, 0.30, 0.01),
    _timed("fast", "student", 8.0, 0.33, 0.01),
    _timed("twin", "student", 8.0, 0.325, 0.01),
    _timed("slow", "student", 9.0, 0.32, 0.01),
    _timed("fast (ONNX)", "onnx", 5.0, 0.329, scored=True),
]


@pytest.mark.fast
def test_pareto_front_keeps_only_models_nothing_beats_on_both():
    front = figure.pareto_front([(m["ms_per_image"], m["map"]["mean"]) for m in PARETO_MODELS])
    on = {m["name"] for m, f in zip(PARETO_MODELS, front, strict=True) if f}
    assert on == {"fast (ONNX)", "fast", "teacher"}  # slow: fast is faster and better; twin, baseline: same time, worse
    assert figure.pareto_front([(1.0, 5.0), (1.0, 5.0)]) == [True, True]  # ties dominate nothing
    assert figure.pareto_front([(1.0, 5.0), (2.0, 5.0)]) == [True, False]  # as good, slower: dominated


@pytest.mark.fast
def test_pareto_chart_is_drawn_beside_the_report_with_its_front_and_clear_labels(tmp_path):
    from matplotlib.text import Text

    path = tmp_path / "accuracy-x.json"
    path.write_text(json.dumps(_with_latency(PARETO_MODELS)))
    png = figure.render_pareto(path)
    assert png == tmp_path / "accuracy-x-pareto.png"
    _is_png(png, size=(900, 560))
    fig = figure.pareto_figure(json.loads(path.read_text()), path.stem)
    (ax,) = fig.axes
    (front,) = [line for line in ax.get_lines() if line.get_label().startswith("Pareto front")]
    xs, ys = front.get_xdata()[:-1], front.get_ydata()[:-1]  # the last corner runs off the axes
    corners = {(round(x, 6), round(y, 6)) for x, y in zip(xs, ys, strict=True)}
    assert corners == {(5.0, 32.9), (8.0, 33.0), (20.0, 42.0)}  # step line through the front, in points
    assert ax.get_xlim()[0] == 0 and "ms" in ax.get_xlabel() and "CPU: Test CPU" in ax.get_xlabel()
    assert "batch 1, 160 px" in ax.get_xlabel() and ax.get_ylabel() == "test mAP50-95 (points)"
    renderer = fig.canvas.get_renderer()
    labels = {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}
    assert set(labels) == {m["name"] for m in PARETO_MODELS}  # one label per model
    boxes = list(labels.values())
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])  # three students at one x
    area = ax.get_window_extent(renderer)
    assert all(area.contains(b.x0, b.y0) and area.contains(b.x1, b.y1) for b in boxes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("Pareto front") for t in legend) and "teacher (one run)" in legend


@pytest.mark.fast
def test_an_unscored_export_is_drawn_hollow_and_left_off_the_front(tmp_path):
    models = [*PARETO_MODELS[:-1], _timed("fast (ONNX)", "onnx", 5.0, 0.33, scored=False, weights="architecture only")]
    points = figure.pareto_points(_with_latency(models))
    onnx = next(p for p in points if p["kind"] == "onnx")
    assert onnx["borrowed"] and onnx["architecture"]
    front = dict(zip([p["name"] for p in points], figure.chart_front(points), strict=True))
    assert not front["fast (ONNX)"] and front["fast"]  # it would dominate "fast" at the score it borrows
    fig = figure.pareto_figure(_with_latency(models), "accuracy-x")
    assert figure.UNSCORED in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "*" in fig.texts[0].get_text()  # the title's note: the starred model was timed as its architecture


@pytest.mark.fast
def test_a_report_without_latency_gets_no_pareto_chart_and_a_failed_model_is_left_out(tmp_path, capsys):
    from benchmarks.accuracy.cli import render_figure

    shutil.copy(DETECT, tmp_path / DETECT.name)
    assert figure.render_pareto(tmp_path / DETECT.name) is None
    assert not list(tmp_path.glob("*-pareto.png"))
    failed = {"name": "fast (ONNX)", "kind": "onnx", "format": "onnx", "error": "RunFailure: does not match"}
    assert [p["name"] for p in figure.pareto_points(_with_latency([*PARETO_MODELS[:-1], failed]))][-1] == "slow"
    path = tmp_path / "accuracy-y.json"
    path.write_text(json.dumps(_with_latency(PARETO_MODELS)))
    render_figure(path)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"figure: {tmp_path / 'accuracy-y.png'}", f"figure: {tmp_path / 'accuracy-y-pareto.png'}"]


def test_latency_only_times_a_reports_models_and_draws_its_pareto_chart(tmp_path, capsys):
    """A real measurement (tiny synthetic set, 64 px): a run whose weights are here is timed on them, the others as
    their architecture (one measurement per yaml); the best row's ONNX export is verified, timed and scored."""
    from benchmarks import accuracy
    from benchmarks.accuracy import latency

    settings = {"imgsz": 64, "batch": 4, "teacher": "yolov8s.yaml", "teacher_epochs": 1, "epochs": 1,
                "seeds": [0, 1], "student": "yolov8n.yaml", "synthetic": [8, 4, 4], "label_fraction": None}  # fmt: skip
    work = tmp_path / "work"
    folder = accuracy.work_folder(work, accuracy.report_profile({"settings": settings}), "detect")
    data, digest = accuracy.synth_dataset("detect", 64, folder, (8, 4, 4))
    here = folder / f"default-e1-s1-{digest}"  # seed 1 of "default" finished here; nothing else did
    latency.architecture_weights("yolov8n.yaml", data, here / "train" / "weights" / "best.pt")
    (here / "result.json").write_text(json.dumps({"best": "/elsewhere/best.pt"}))
    runs = [{"name": n, "seed": s, "dir": f"<workdir>/{folder.name}/{n}-e1-s{s}-{digest}", "test": {M: v}, "train_s": 1}
            for n, s, v in [("baseline", 0, 0.1), ("baseline", 1, 0.2), ("default", 0, 0.3), ("default", 1, 0.4),
                            ("cwd", 0, 0.2), ("cwd", 1, 0.2)]]  # fmt: skip
    report = {"benchmark": "accuracy", "profile": "quick", "settings": settings, "task": "detect",
              "dataset": {"name": "synthetic", "hash": digest, "score_split": "test"}, "machine": {"device": "cpu"},
              "teacher": {"model": "yolov8s.yaml", "test": {M: 0.5}}, "default": "default",
              "students": [{"name": n} for n in ("baseline", "default", "cwd")], "runs": runs}  # fmt: skip
    path = tmp_path / "accuracy-quick-2026-01-01.json"
    path.write_text(json.dumps(report))
    assert accuracy.main(["--latency-only", str(path), "--workdir", str(work), "--results", str(tmp_path / "out"),
                          "--synthetic", "8,4,4"]) == 0  # fmt: skip
    written = json.loads((tmp_path / "out" / path.name).read_text())
    assert {k: v for k, v in written.items() if k != "latency"} == report  # the report as it was, plus its section
    section = written["latency"]
    assert (section["device"], section["imgsz"], section["batch"], section["images"]) == ("cpu", 64, 1, 4)
    models = {m["name"]: m for m in section["models"]}
    assert list(models) == ["teacher", "baseline", "default", "cwd", "default (ONNX)"]
    for m in models.values():
        assert m["ms_per_image"] >= m["inference_ms"] > 0 and m["preprocess_ms"] > 0 and m["postprocess_ms"] > 0
    assert models["default"]["weights"] == "trained" and models["default"]["seed"] == 1
    assert models["default"]["path"] == f"<workdir>/{folder.name}/{here.name}/train/weights/best.pt"
    assert models["teacher"]["weights"] == models["baseline"]["weights"] == "architecture only"
    assert models["teacher"]["model"] == "yolov8s.yaml" and models["baseline"]["model"] == "yolov8n.yaml"
    assert models["baseline"]["ms_per_image"] == models["cwd"]["ms_per_image"]  # one architecture, one measurement
    assert models["default"]["map"] == {"mean": 0.35, "ci95": pytest.approx(0.6353, abs=1e-3), "n": 2,
                                        "source": "mean over seeds, .pt"}  # fmt: skip
    onnx = models["default (ONNX)"]
    assert onnx["format"] == "onnx" and onnx["scored"] and onnx["dynamic"] and onnx["opset"] >= 11
    assert onnx["providers"] == ["CPUExecutionProvider"] and onnx["path"].endswith(".onnx")
    assert 0 <= onnx["map"]["mean"] <= 1 and onnx["map"]["source"].startswith("ONNX")
    _is_png(tmp_path / "out" / path.name.replace(".json", "-pareto.png"), size=(900, 560))
    _is_png(tmp_path / "out" / path.name.replace(".json", ".png"))
    assert "| default (ONNX) | onnx | trained |" in capsys.readouterr().out

"""A registered version served for real: exported and verified on register, then ``mlflow models serve`` over HTTP.

For each task (detect, segment, pose) a version is registered from a real evaluation, the champion is served by a
real model server process on loopback, and requests carrying base64 images are answered like the ``.pt`` answers
in-process — with PyTorch and with the ONNX export. Bad requests get a 4xx with a clear message and the server keeps
serving. The server is safe to expose: it reads no file of its own (``/etc/passwd``, a missing file and a real image on
the server get one identical refusal), refuses an ``imgsz`` of 100 000 px, too many images and a decompression-bomb PNG
at once, and no 4xx body carries a stack trace. In-process, a loader that opts in still predicts on local paths.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from conftest import free_port

from distill.registry.export import Tolerance, compare, export_verified
from distill.steps import tracking
from distill.steps.evaluate import evaluate, split_images
from distill.steps.register import register

#: The served models are trained for 60 epochs on 32 synthetic images: confidences reach 0.1-0.5, so a threshold of
#: 0.05 leaves detections to compare.
CONF = 0.05
TIGHT = Tolerance(conf=CONF, conf_tol=0.02)
MODELS = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml"}
#: The served model's one answer to any ``image`` that is not base64 (it never looks at the server's files).
NOT_BASE64 = "row 0: 'image' must be base64-encoded image bytes"


@pytest.fixture(scope="session")
def shape_models(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per task, a small model that actually detects: synthetic shapes (32 train, 8 val, 64 px), 60 epochs."""
    import distill
    from distill.data.synthetic import generate

    root = tmp_path_factory.mktemp("shape-models")
    out = {}
    for task, yaml_name in MODELS.items():
        data = generate(root / f"data-{task}", task, images=32, val=8, size=64, seed=0)
        run = distill.train(data, yaml_name, epochs=60, imgsz=64, batch=8, device="cpu", workers=0, plots=False,
                            val=False, mosaic=0.0, warmup_epochs=1, out=root / f"run-{task}")  # fmt: skip
        out[task] = {"data": data, "weights": run.last}
    return out


def _matches(reference: list[dict], other: list[dict], tol: Tolerance) -> list[str]:
    """Problems matching served rows ``reference`` (clear of the threshold) to ``other``: class, box IoU, confidence."""
    problems = []
    for row in (r for r in reference if r["confidence"] >= tol.conf + tol.conf_tol):
        box = [row[k] for k in ("x1", "y1", "x2", "y2")]
        best = 0.0
        for cand in (c for c in other if c["image"] == row["image"] and c["class_id"] == row["class_id"]):
            if abs(cand["confidence"] - row["confidence"]) <= tol.conf_tol:
                best = max(best, _iou(box, [cand[k] for k in ("x1", "y1", "x2", "y2")]))
        if best < tol.min_iou:
            problems.append(
                f"image {row['image']} class {row['class_id']} conf {row['confidence']:.3f}: IoU {best:.2f}"
            )
    return problems


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _refusal(status: int, answer: dict, *needles: str) -> str:
    """Assert a short 400 without a stack trace whose reason names ``needles``; return the reason.

    MLflow's scoring server frames the model's message as ``Failed to predict data '<the request's data, as pandas
    prints it, cells cut at 50 characters>'. \nError: <message>``; the reason is the part after the last ``Error: ``.
    """
    assert status == 400, (status, answer)
    body = json.dumps(answer)
    assert "stack_trace" not in answer and "Traceback" not in body and len(body) < 2000, body[:3000]
    reason = answer.get("message", "").rsplit("Error: ", 1)[-1]
    assert "\n" not in reason and len(reason) < 200 and all(n in reason for n in needles), reason
    return reason


@functools.cache
def _bomb_png(side: int) -> bytes:
    """A valid ``side`` x ``side`` black greyscale PNG: a few hundred KB that decode to ``side``² pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, deflate = bytes(side + 1), zlib.compressobj(9)  # each row: filter byte 0, then the pixels
    pixels = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module", params=["detect", "segment", "pose"])
def registered(request, stack_env, shape_models):
    """A version of ``task``'s shape model registered from a real evaluation (the model against itself)."""
    task = request.param
    weights = str(shape_models[task]["weights"])
    data = str(shape_models[task]["data"])
    evaluation = evaluate(data, weights, weights, weights, run_id=f"serve-{task}", imgsz=64, batch=4, device="cpu",
                          latency_images=2)  # fmt: skip
    result = register(weights, evaluation["metrics"], f"serve-{task}", run_id=f"serve-{task}")
    return {"task": task, "weights": weights, "data": data, "result": result, "evaluation": evaluation["metrics"]}


@pytest.fixture(scope="module")
def server(registered, stack_env, tmp_path_factory):
    """``mlflow models serve`` of ``models:/serve-<task>@champion`` on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": stack_env["MLFLOW_TRACKING_URI"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip  (uvicorn)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/serve-{registered['task']}@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"model server did not start: {log.read_text()[-3000:]}")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_registered_version_carries_a_verified_onnx_export_and_a_model_card(registered, tmp_path):
    import mlflow
    import onnx

    client = tracking.client()
    version = client.get_model_version(f"serve-{registered['task']}", registered["result"]["version"])
    assert version.tags["export_verified"] == "true" and version.tags["export_formats"] == "onnx"
    assert int(version.tags["onnx_opset"]) >= 11 and version.tags["onnx_imgsz"] == "64"
    assert "| teacher |" in version.description and "| distilled |" in version.description
    assert "ONNX opset" in version.description and registered["task"] in version.description
    assert "The distilled student trained on 32 labelled images." in version.description  # no pool in this run
    assert "Charts (this version's run, `evaluation/`)" in version.description
    charts = {a.path for a in client.list_artifacts(version.run_id, "evaluation")}
    assert {f"evaluation/{c}" for c in ("per_class.png", "learning_curves.png", "gate.png")} <= charts
    files = {a.path for a in client.list_artifacts(version.run_id, "model/artifacts")}
    assert {"model/artifacts/model.pt", "model/artifacts/model.onnx"} <= files
    uri = version.tags["onnx_artifact"]
    assert uri == f"models:/serve-{registered['task']}/{version.version}/artifacts/model.onnx"
    onnx.checker.check_model(onnx.load(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))))


def test_served_predictions_match_the_pt_for_both_backends(registered, server):
    from ultralytics import YOLO

    task = registered["task"]
    images = split_images(Path(registered["data"]), "val")[:2]
    expected = YOLO(registered["weights"]).predict([str(i) for i in images], imgsz=64, conf=CONF, verbose=False)
    body = {"dataframe_split": {"columns": ["image"], "data": [[_b64(i)] for i in images]},
            "params": {"conf": CONF, "imgsz": 64}}  # fmt: skip
    status, answer = _post(f"{server}/invocations", body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == sum(len(r.boxes) for r in expected) > 0
    extra = {"detect": None, "segment": "polygon", "pose": "keypoints"}[task]
    for index, result in enumerate(expected):
        mine = [r for r in rows if r["image"] == index]
        for row, conf, xyxy in zip(mine, result.boxes.conf.tolist(), result.boxes.xyxy.tolist(), strict=True):
            assert row["confidence"] == pytest.approx(conf, abs=1e-5)
            assert [row[k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(xyxy, abs=0.05)
            if extra:
                assert len(json.loads(row[extra])) > 0
    status, onnx = _post(f"{server}/invocations", {**body, "params": {**body["params"], "backend": "onnx"}})
    assert status == 200, onnx
    clear = [r for r in rows if r["confidence"] >= CONF + TIGHT.conf_tol]
    assert clear and not _matches(rows, onnx["predictions"], TIGHT) and not _matches(onnx["predictions"], rows, TIGHT)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("image", "this is not base64!", NOT_BASE64),
        ("image", base64.b64encode(b"plain text, not an image").decode(), "base64 but not a JPEG/PNG"),
        ("image", base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 40).decode(), "base64 but not a JPEG/PNG"),
        ("picture", "abc", "image"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(registered, server, column, value, message):
    status, answer = _post(f"{server}/invocations", {"dataframe_split": {"columns": [column], "data": [[value]]}})
    _refusal(status, answer, message)
    image = split_images(Path(registered["data"]), "val")[0]
    good = {"dataframe_split": {"columns": ["image"], "data": [[_b64(image)]]}}
    status, answer = _post(f"{server}/invocations", good)
    assert status == 200, answer


def test_the_server_reads_none_of_its_own_files(registered, server):
    """A path is refused with one message whether it names a secret, nothing, an image or the model's own weights."""
    image = split_images(Path(registered["data"]), "val")[0]
    paths = ["/etc/passwd", "/no/such/file.jpg", str(image), registered["weights"]]
    reasons = set()
    for path in paths:
        status, answer = _post(f"{server}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[path]]}})
        reasons.add(_refusal(status, answer, NOT_BASE64))
    assert reasons == {NOT_BASE64}


@pytest.mark.parametrize(
    ("rows", "params", "needles"),
    [
        (1, {"imgsz": 100_000}, ["params.imgsz", "[32, 2048]", "100000"]),
        (1, {"imgsz": 8}, ["params.imgsz", "got 8"]),
        (1, {"conf": 5.0}, ["params.conf", "[0, 1]"]),
        (65, {}, ["65 images", "more than 64"]),
    ],
    ids=["imgsz-100000", "imgsz-8", "conf-5", "65-images"],
)
def test_requests_beyond_the_bounds_get_a_fast_400(registered, server, rows, params, needles):
    """Checked before any inference: answered in seconds even where inference would take minutes or all memory."""
    image = _b64(split_images(Path(registered["data"]), "val")[0])
    body = {"dataframe_split": {"columns": ["image"], "data": [[image]] * rows}, "params": params}
    start = time.monotonic()
    status, answer = _post(f"{server}/invocations", body)
    assert time.monotonic() - start < 5, answer
    _refusal(status, answer, *needles)


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_a_decompression_bomb_is_refused_from_its_header(registered, server, side):
    """A ~0.1-0.4 MB PNG of 100 or 400 megapixels (above PIL's own bomb limit) is refused without being decoded."""
    start = time.monotonic()
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(_bomb_png(side)).decode()]]}}
    status, answer = _post(f"{server}/invocations", body)
    assert time.monotonic() - start < 5, answer
    _refusal(status, answer, "pixels", "more than 50000000")
    good = _b64(split_images(Path(registered["data"]), "val")[0])
    assert _post(f"{server}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[good]]}})[0] == 200


@pytest.mark.parametrize("registered", ["detect"], indirect=True)  # one task is enough: the path is the same
def test_local_batch_use_opts_in_to_paths(registered, monkeypatch):
    """In-process, ``model_config={"allow_paths": True}`` predicts on local paths; bounds and short errors hold."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri = "models:/serve-detect@champion"
    images = split_images(Path(registered["data"]), "val")[:3]
    paths = pd.DataFrame({"image": [str(i) for i in images[:2]]})
    with pytest.raises(MlflowException, match=NOT_BASE64):
        mlflow.pyfunc.load_model(uri).predict(paths, params={"conf": CONF, "imgsz": 64})
    monkeypatch.setenv("YOLO_DISTILL_MAX_IMAGES", "2")
    local = mlflow.pyfunc.load_model(uri, model_config={"allow_paths": True})
    by_path = local.predict(paths, params={"conf": CONF, "imgsz": 64})
    by_bytes = local.predict(pd.DataFrame({"image": [_b64(i) for i in images[:2]]}), params={"conf": CONF, "imgsz": 64})
    assert len(by_path) > 0 and by_path.equals(by_bytes)
    with pytest.raises(MlflowException, match=r"3 images in one request, more than 2 \(YOLO_DISTILL_MAX_IMAGES\)"):
        local.predict(pd.DataFrame({"image": [str(i) for i in images]}))
    local.unwrap_python_model().models = {"torch": object()}  # a fault inside inference: a 500, its traceback logged
    with pytest.raises(MlflowException) as fault:
        local.predict(paths)
    assert fault.value.get_http_status_code() == 500 and "stack_trace" not in fault.value.serialize_as_json()
    assert fault.value.message == "prediction failed (AttributeError); the server log has the details"


@pytest.mark.parametrize("task", ["detect", "pose"])
def test_export_verification_catches_a_mismatch(shape_models, tmp_path, task, capsys):
    """The comparison is real: the export verifies, another model's predictions do not pass as this one's."""
    from ultralytics import YOLO

    weights, data = shape_models[task]["weights"], Path(shape_models[task]["data"])
    images = split_images(data, "val")
    capsys.readouterr()
    records = export_verified(weights, images, 64, tmp_path, tolerance=TIGHT)
    assert records[0].verification.ok and records[0].verification.matched >= 3, records[0].to_dict()
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("export: ", "verify"))]
    n, check = len(images), records[0].verification
    assert said[:2] == ["export: ONNX (imgsz 64, dynamic) ...", said[1]], said  # what happens, then its time
    assert re.fullmatch(r"export: ONNX \(imgsz 64, dynamic\) done in \d[^(]* \(model\.onnx, [0-9.]+ MB\)", said[1])
    assert said[2:4] == [f"verify: ONNX vs PyTorch on {n} images ...", said[3]], said
    assert re.fullmatch(rf"verify ONNX: {n}/{n} images \([0-9.]+ images/s\)", said[3])  # the count, off a terminal
    matched = rf"\({check.matched}/{check.detections} detections matched\)"
    assert re.fullmatch(rf"verify: ONNX vs PyTorch on {n} images done in \d[^(]* {matched}", said[4]), said
    assert len(said) == 5, said
    mine = YOLO(str(weights)).predict([str(i) for i in images], imgsz=64, conf=CONF, verbose=False)
    other_task = "segment" if task == "detect" else "detect"
    other = YOLO(str(shape_models[other_task]["weights"])).predict([str(i) for i in images], imgsz=64, conf=CONF,
                                                                    verbose=False)  # fmt: skip
    assert not compare(mine, other, TIGHT).ok


def test_export_formats_are_checked_before_any_work():
    from distill import DistillError
    from distill.registry.export import check_packages, parse_formats

    assert parse_formats("torchscript") == ("onnx", "torchscript")
    with pytest.raises(DistillError, match="unknown export format 'tflite'"):
        parse_formats("onnx,tflite")
    missing = [f for f in ("openvino",) if __import__("importlib").util.find_spec(f) is None]
    if missing:  # not a dependency: refused with the pip line instead of an install at run time
        with pytest.raises(DistillError, match="export format 'openvino' needs openvino: pip install openvino"):
            check_packages(("openvino",))


@pytest.mark.parametrize("registered", ["detect"], indirect=True)  # one task is enough: the path is the same
def test_an_export_that_fails_verification_registers_nothing(registered, monkeypatch, capsys):
    from distill.errors import RunFailure
    from distill.registry import export

    def mismatch(*args, **kwargs):
        return export.Verification(images=1, detections=1, problems=["image 0: box IoU 0.100, confidence 0.300"])

    monkeypatch.setattr(export, "compare", mismatch)
    with pytest.raises(RunFailure, match="onnx export of .* does not match PyTorch: image 0: box IoU 0.100"):
        register(registered["weights"], registered["evaluation"], "never-exported", run_id="bad-export")
    said = capsys.readouterr().err  # the failure is timed; what went wrong is the error's own line (the CLI's)
    assert re.search(r"^verify: ONNX vs PyTorch on \d+ images failed after \d.*$", said, re.M), said[-2000:]
    assert tracking.client().search_registered_models("name = 'never-exported'") == []

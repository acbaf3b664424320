"""The MLflow pyfunc model of a registered version: serves the ``.pt`` (or its verified ONNX export) over HTTP.

Logged as "model from code", so it is self-contained: it needs Ultralytics (and ONNX Runtime for ``backend=onnx``),
never yolo-distill. Input: a DataFrame with a column ``image`` holding **base64-encoded image bytes** (what a JSON
request to a model server carries; the line breaks MIME encoders add are ignored). Params: ``conf`` (0.25, in
[0, 1]), ``imgsz`` (the size the model was evaluated at; an integer in [32, ``YOLO_DISTILL_MAX_IMGSZ``]), ``backend``
(``torch`` or ``onnx``) and, in-process only, ``device``.

Output: one row per detection — ``image`` (input row), ``class_id``, ``class_name``, ``confidence``, ``x1``, ``y1``,
``x2``, ``y2`` (pixels) — plus, for segment models, ``polygon`` (JSON ``[[x, y], ...]`` in pixels) and, for pose
models, ``keypoints`` (JSON ``[[x, y, visibility], ...]``).

Safe to expose:

- **Bytes only.** Local file paths are refused unless the loader opts in with the model config key ``allow_paths``
  (local batch use: ``mlflow.pyfunc.load_model(uri, model_config={"allow_paths": True})``; a server operator could set
  it with ``MLFLOW_PYFUNC_INFERENCE_CONFIG``, a client never can). Without it the file system is never consulted: any
  value that is not base64 gets one message (:data:`NOT_BASE64`), so ``/etc/passwd``, a missing file and the model's
  own weights are indistinguishable.
- **Bounded before any inference** (:data:`LIMITS`; a server operator may change each with its environment variable,
  read when the model loads): images per request (64), ``imgsz`` (32..2048; the evaluated size is always allowed),
  encoded bytes per image (16 MiB) and width x height (50 MP), read from the image's header before it is decoded —
  a PNG of a few hundred KB can declare gigapixels. Encodings: :data:`IMAGE_FORMATS`.
- **Short errors.** A bad request raises an ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` and a one-line
  message naming the value and the bound: a model server answers 400, without a ``stack_trace`` — MLflow's scoring
  server adds one only to exceptions of other types, so :meth:`YoloModel.predict` raises no other type: an unexpected
  failure is logged with its traceback on the server and answered 500 with one line. (MLflow frames the message as
  ``Failed to predict data '<the request's data, as pandas prints it>'. Error: <message>``. CSV and Parquet bodies
  that MLflow itself cannot parse, before the model runs, still get its stack trace: expose JSON only.)
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import numbers
import os
import struct
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

BOX_COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
TASK_COLUMNS = {"detect": [], "segment": ["polygon"], "pose": ["keypoints"]}
BACKENDS = ("torch", "onnx")
#: Request bounds: name -> (environment variable that overrides it, default). The defaults fit 8K frames (33 MP)
#: and 1920 px inference; a decoded image of the maximum size takes 150 MB.
LIMITS = {
    "max_images": ("YOLO_DISTILL_MAX_IMAGES", 64),
    "max_imgsz": ("YOLO_DISTILL_MAX_IMGSZ", 2048),
    "max_pixels": ("YOLO_DISTILL_MAX_PIXELS", 50_000_000),
    "max_image_bytes": ("YOLO_DISTILL_MAX_IMAGE_BYTES", 16 * 2**20),
}
MIN_IMGSZ = 32
#: Encodings accepted: read by both Pillow (the header check) and OpenCV (the decoder).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
PARAMS = ("conf", "imgsz", "backend", "device")
#: The one answer to any value that is not base64 while paths are off (it never depends on the file system).
NOT_BASE64 = "'image' must be base64-encoded image bytes"
#: Characters base64 text may carry besides its alphabet (line breaks, spaces): removed before decoding.
BASE64_WHITESPACE = " \t\n\r\v\f"
_NO_WHITESPACE = str.maketrans("", "", BASE64_WHITESPACE)

_logger = logging.getLogger(__name__)


def bad_request(message: str) -> MlflowException:
    """Return an error a model server answers with 400 (MLflow's ``INVALID_PARAMETER_VALUE``), without a traceback."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def read_limits(environ: dict[str, str]) -> dict[str, int]:
    """Return :data:`LIMITS` with the overrides found in ``environ``; a value that is not a positive integer fails."""
    limits = {}
    for name, (variable, default) in LIMITS.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            limits[name] = default
        elif raw.isdigit() and int(raw) > 0:
            limits[name] = int(raw)
        else:
            raise MlflowException(f"{variable} must be a positive integer, got {raw!r}", error_code=INTERNAL_ERROR)
    return limits


def image_bytes(value: Any, row: int, limits: dict[str, int], allow_paths: bool) -> bytes:
    """Return the encoded bytes of one ``image`` value: its base64 decoded, or, only with ``allow_paths``, a file read.

    The length is checked before decoding. With paths off the file system is never touched, so ``/etc/passwd``, a
    missing file and this model's own weights all get :data:`NOT_BASE64`.
    """
    most = limits["max_image_bytes"]
    if not isinstance(value, str | bytes) or not value:
        raise bad_request(f"row {row}: {NOT_BASE64}, got {type(value).__name__}")
    if allow_paths and isinstance(value, str) and len(value) < 4096 and Path(value).is_file():
        size = Path(value).stat().st_size
        if size > most:
            raise bad_request(f"row {row}: file of {size} bytes, more than {most} (YOLO_DISTILL_MAX_IMAGE_BYTES)")
        return Path(value).read_bytes()
    encoded = without_whitespace(value)
    if not encoded:
        raise bad_request(f"row {row}: {NOT_BASE64}, got only whitespace")
    if len(encoded) > 4 * (most // 3 + 1):
        raise bad_request(f"row {row}: {len(encoded)} base64 characters, more than {most} bytes once decoded "
                          f"(YOLO_DISTILL_MAX_IMAGE_BYTES)")  # fmt: skip
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"row {row}: 'image' is neither base64 nor an existing local path" if allow_paths
                          else f"row {row}: {NOT_BASE64}") from None  # fmt: skip


def without_whitespace(value: str | bytes) -> str | bytes:
    r"""Return base64 text without the ASCII whitespace encoders put in it (MIME and PEM break lines every 76/64).

    ``base64.encodebytes``, ``openssl base64`` and mail clients add line breaks; ``b64decode(validate=True)`` refuses
    them as outside the alphabet. Only whitespace is removed, so every other character is still checked.

    Examples:
        >>> without_whitespace("aGVs\r\nbG8=\n"), without_whitespace(b"aGVs bG8=")
        ('aGVsbG8=', b'aGVsbG8=')
    """
    if isinstance(value, bytes):
        return value.translate(None, BASE64_WHITESPACE.encode())
    return value.translate(_NO_WHITESPACE)


def image_size(raw: bytes) -> tuple[int, int] | None:
    """Return the width and height the header of ``raw`` declares, or ``None`` if it is none of :data:`IMAGE_FORMATS`.

    Pillow's format plugins are called directly: they parse the header and decode nothing. ``Image.open`` is avoided
    because Ultralytics patches it to try installing a HEIF plugin whenever Pillow cannot identify the bytes.
    """
    from PIL import Image

    Image.init()
    for name in IMAGE_FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))  # a format this Pillow was built without: skipped
        if factory is None or (accept is not None and not accept(raw[:16])):
            continue
        try:
            with factory(io.BytesIO(raw), "") as image:
                return image.size
        except (SyntaxError, OSError, ValueError, TypeError, IndexError, struct.error):
            continue
    return None


def check_header(raw: bytes, row: int, max_pixels: int) -> None:
    """Refuse bytes that are not an image, or whose header declares more than ``max_pixels``, without decoding them."""
    size = image_size(raw)
    if size is None:
        raise bad_request(f"row {row}: 'image' is base64 but not a {'/'.join(IMAGE_FORMATS)} image ({len(raw)} bytes)")
    width, height = size
    if width * height > max_pixels:
        raise bad_request(f"row {row}: image of {width}x{height} = {width * height} pixels, more than {max_pixels} "
                          f"(YOLO_DISTILL_MAX_PIXELS)")  # fmt: skip


def decode(raw: bytes, row: int):
    """Return the BGR array of image bytes whose header passed :func:`check_header`."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise bad_request(f"row {row}: 'image' is base64 but not an image OpenCV can decode ({len(raw)} bytes)")
    return image


def shown(value: Any, width: int = 20) -> str:
    """Return ``repr(value)`` cut to ``width`` characters with its closing quote kept.

    The twin of ``distill.errors.shown``: this module imports nothing of yolo-distill (see above).
    """
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]}...{text[-1]}"


def request_options(params: dict[str, Any], default_imgsz: int, max_imgsz: int) -> tuple[str, dict[str, Any]]:
    """Return the backend and Ultralytics predict options of a request's params, each checked against its bound."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise bad_request(f"unknown params {unknown}: use {', '.join(PARAMS)}")
    conf = 0.25 if params.get("conf") is None else params["conf"]
    if isinstance(conf, bool) or not isinstance(conf, numbers.Real) or not 0 <= conf <= 1:
        raise bad_request(f"params.conf must be a number in [0, 1], got {shown(conf)}")
    imgsz = default_imgsz if params.get("imgsz") is None else params["imgsz"]
    if isinstance(imgsz, bool) or not isinstance(imgsz, numbers.Integral) or not MIN_IMGSZ <= imgsz <= max_imgsz:
        raise bad_request(f"params.imgsz must be an integer in [{MIN_IMGSZ}, {max_imgsz}] "
                          f"(YOLO_DISTILL_MAX_IMGSZ), got {shown(imgsz)}")  # fmt: skip
    backend = str(params.get("backend") or "torch")
    if backend not in BACKENDS:
        raise bad_request(f"params.backend {shown(backend)} must be one of {', '.join(BACKENDS)}")
    options = {"conf": float(conf), "imgsz": int(imgsz), "verbose": False}
    if params.get("device") is not None:
        options["device"] = params["device"]
    return backend, options


def detection_rows(result: Any, index: int, extra: list[str]) -> list[list[Any]]:
    """Return the output rows of one Ultralytics result (see the module docstring for the columns)."""
    boxes = result.boxes
    if boxes is None:
        return []
    rows = []
    for k, (cls, conf, xyxy) in enumerate(
        zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True)
    ):
        row = [index, int(cls), result.names[int(cls)], float(conf), *map(float, xyxy)]
        if "polygon" in extra:
            row.append(json.dumps([[round(float(x), 1), round(float(y), 1)] for x, y in result.masks.xy[k]]))
        if "keypoints" in extra:
            kpts = result.keypoints
            xy = kpts.xy[k].tolist()
            visible = kpts.conf[k].tolist() if kpts.conf is not None else [1.0] * len(xy)
            points = [[round(x, 1), round(y, 1), round(v, 3)] for (x, y), v in zip(xy, visible, strict=True)]
            row.append(json.dumps(points))
        rows.append(row)
    return rows


class YoloModel(PythonModel):
    """Pyfunc wrapper: Ultralytics inference on the registered weights (artifacts ``weights`` and ``onnx``)."""

    def load_context(self, context: Any) -> None:
        """Remember the artifacts, config and limits; models load on first use (the ONNX one only when asked for)."""
        os.environ.setdefault("YOLO_OFFLINE", "1")
        self.artifacts = dict(context.artifacts)
        self.config = dict(getattr(context, "model_config", None) or {})
        self.allow_paths = self.config.get("allow_paths") is True
        self.limits = read_limits(dict(os.environ))
        self.default_imgsz = int(self.config.get("imgsz", 640))
        self.max_imgsz = max(self.limits["max_imgsz"], self.default_imgsz)  # the evaluated size is always allowed
        self.models: dict[str, Any] = {}

    def _model(self, backend: str):
        from ultralytics import YOLO

        if backend not in self.models:
            if backend == "onnx" and "onnx" not in self.artifacts:
                raise bad_request("this version carries no ONNX export: use backend=torch")
            path = self.artifacts["weights" if backend == "torch" else "onnx"]
            self.models[backend] = YOLO(path, task=self.config.get("task"))
        return self.models[backend]

    def predict(self, context, model_input, params=None):  # untyped: MLflow would turn hints into a schema
        """Return a DataFrame with one row per detection (see the module docstring for columns, params and bounds).

        Raises only ``MlflowException``: a bad request's one-line 400, or a 500 whose traceback goes to the log only.
        """
        try:
            return self._predict(model_input, dict(params or {}))
        except MlflowException:
            raise
        except Exception as error:
            _logger.exception("prediction failed")
            raise MlflowException(f"prediction failed ({type(error).__name__}); the server log has the details",
                                  error_code=INTERNAL_ERROR) from None  # fmt: skip

    def _predict(self, model_input: Any, params: dict[str, Any]) -> pd.DataFrame:
        """Check the whole request against the bounds (count, params, bytes, headers), then decode and predict."""
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise bad_request(f"the input needs a column 'image', got {shown(list(model_input.columns), 80)}")
            images = model_input["image"].tolist()
        elif isinstance(model_input, list | tuple):
            images = list(model_input)
        else:
            images = [model_input]
        if len(images) > self.limits["max_images"]:
            raise bad_request(f"{len(images)} images in one request, more than {self.limits['max_images']} "
                              f"(YOLO_DISTILL_MAX_IMAGES)")  # fmt: skip
        backend, options = request_options(params, self.default_imgsz, self.max_imgsz)
        raws = [image_bytes(value, row, self.limits, self.allow_paths) for row, value in enumerate(images)]
        for row, raw in enumerate(raws):
            check_header(raw, row, self.limits["max_pixels"])
        model = self._model(backend)
        extra = TASK_COLUMNS.get(self.config.get("task") or model.task, [])
        rows = []
        for index, raw in enumerate(raws):
            rows += detection_rows(model.predict(decode(raw, index), **options)[0], index, extra)
        return pd.DataFrame(rows, columns=BOX_COLUMNS + extra)


mlflow.models.set_model(YoloModel())

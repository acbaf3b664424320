"""The MLflow pyfunc model of a registered version: serves the ``.pt`` (or its verified ONNX export) over HTTP.

Logged as "model from code", so it is self-contained: it needs Ultralytics (and ONNX Runtime for ``backend=onnx``),
never yolo-distill. Input: a DataFrame with a column ``image`` holding **base64-encoded image bytes** (what a JSON
request to a model server carries) or, for batch use in-process, a local file path. Params: ``conf`` (0.25),
``imgsz`` (the size the model was evaluated at), ``backend`` (``torch`` or ``onnx``), ``device``.

Output: one row per detection — ``image`` (input row), ``class_id``, ``class_name``, ``confidence``, ``x1``, ``y1``,
``x2``, ``y2`` (pixels) — plus, for segment models, ``polygon`` (JSON ``[[x, y], ...]`` in pixels) and, for pose
models, ``keypoints`` (JSON ``[[x, y, visibility], ...]``). A value that is neither an existing path nor base64 of an
image is refused with an ``INVALID_PARAMETER_VALUE`` error, which a model server answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

BOX_COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
TASK_COLUMNS = {"detect": [], "segment": ["polygon"], "pose": ["keypoints"]}
BACKENDS = ("torch", "onnx")


def bad_request(message: str) -> MlflowException:
    """Return an error a model server answers with 400 (MLflow's ``INVALID_PARAMETER_VALUE``)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def decode_image(value: Any, row: int):
    """Return an image the predictor accepts: a path as is, base64 bytes decoded to a BGR array."""
    import cv2
    import numpy as np

    if not isinstance(value, str | bytes) or not value:
        raise bad_request(f"row {row}: 'image' must be base64-encoded image bytes (or a local path), got {value!r:.40}")
    if isinstance(value, str) and len(value) < 4096 and Path(value).is_file():
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"row {row}: 'image' is neither base64 nor an existing local path") from None
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise bad_request(f"row {row}: 'image' is base64 but not an image OpenCV can decode ({len(raw)} bytes)")
    return image


class YoloModel(PythonModel):
    """Pyfunc wrapper: Ultralytics inference on the registered weights (artifacts ``weights`` and ``onnx``)."""

    def load_context(self, context: Any) -> None:
        """Remember the artifacts; models load on first use (the ONNX one only when asked for)."""
        os.environ.setdefault("YOLO_OFFLINE", "1")
        self.artifacts = dict(context.artifacts)
        self.config = dict(getattr(context, "model_config", None) or {})
        self.models: dict[str, Any] = {}

    def _model(self, backend: str):
        from ultralytics import YOLO

        if backend not in BACKENDS:
            raise bad_request(f"params.backend '{backend}' must be one of {', '.join(BACKENDS)}")
        if backend not in self.models:
            if backend == "onnx" and "onnx" not in self.artifacts:
                raise bad_request("this version carries no ONNX export: use backend=torch")
            path = self.artifacts["weights" if backend == "torch" else "onnx"]
            self.models[backend] = YOLO(path, task=self.config.get("task"))
        return self.models[backend]

    def predict(self, context, model_input, params=None):  # untyped: MLflow would turn hints into a schema
        """Return a DataFrame with one row per detection (see the module docstring for columns and params)."""
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise bad_request(f"the input needs a column 'image', got {list(model_input.columns)}")
            images = model_input["image"].tolist()
        elif isinstance(model_input, list | tuple):
            images = list(model_input)
        else:
            images = [model_input]
        params = dict(params or {})
        model = self._model(str(params.pop("backend", None) or "torch"))
        options = {"conf": 0.25, "imgsz": self.config.get("imgsz", 640), "verbose": False}
        options.update({k: v for k, v in params.items() if v is not None})
        task = self.config.get("task") or model.task
        extra = TASK_COLUMNS.get(task, [])
        rows = []
        for index, value in enumerate(images):
            result = model.predict(decode_image(value, index), **options)[0]
            boxes = result.boxes
            if boxes is None:
                continue
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
        return pd.DataFrame(rows, columns=BOX_COLUMNS + extra)


mlflow.models.set_model(YoloModel())

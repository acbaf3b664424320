"""The MLflow pyfunc model that wraps a YOLO ``.pt`` (logged as "model from code": needs only Ultralytics to load).

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(pd.DataFrame({"image": [path, ...]}),
params={"conf": 0.25, "imgsz": 640})`` returns one row per detection: ``image`` (input row), ``class_id``,
``class_name``, ``confidence``, ``x1``, ``y1``, ``x2``, ``y2`` (pixels). The signature logged with it declares the
``image`` column (paths or URLs Ultralytics can read) and the ``conf`` / ``imgsz`` params.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]


class YoloDetections(PythonModel):
    """Pyfunc wrapper: Ultralytics inference on the registered weights (artifact ``weights``)."""

    def load_context(self, context: Any) -> None:
        """Load the weights with plain Ultralytics, offline."""
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"])

    def predict(self, context, model_input, params=None):  # untyped: MLflow would turn hints into a schema
        """Return a DataFrame of detections (``params`` may set ``conf``, ``imgsz``, ``device``)."""
        if isinstance(model_input, pd.DataFrame):
            column = "image" if "image" in model_input.columns else model_input.columns[0]
            images = model_input[column].tolist()
        elif isinstance(model_input, list | tuple):
            images = list(model_input)
        else:
            images = [model_input]
        options = {"conf": 0.25, "verbose": False, **(params or {})}
        rows = []
        for index, image in enumerate(images):
            result = self.model.predict(image, **options)[0]
            boxes = result.boxes
            if boxes is None:
                continue
            for cls, conf, xyxy in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True):
                rows.append([index, int(cls), result.names[int(cls)], float(conf), *map(float, xyxy)])
        return pd.DataFrame(rows, columns=COLUMNS)


mlflow.models.set_model(YoloDetections())

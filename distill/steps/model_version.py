"""What a registered version is made of: the pyfunc model logged into the register step's run, and its model card.

Held apart from :mod:`distill.steps.register` (the flow that creates the version from what is logged here, then
completes its tags and decision) because the version's contents are a concern of their own. The pyfunc wraps the
``.pt`` (see :mod:`distill.steps.pyfunc_model`, logged as self-contained code: :data:`PYFUNC_CODE`) with every
verified export as an artifact, a signature (base64 images in, one row per detection out), a base64 input example and
requirements pinning the Ultralytics and ONNX Runtime versions that verified the exports; the evaluation and the
exports' checks are attached to the run. The model card (:func:`model_card`) is the version's description, written
from its tags.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..data import storage
from ..registry.export import Export
from . import tracking
from .champion import TAG_DECISION, TAG_REASON
from .evaluate import CHARTS, class_table, gate_line, model_table, training_line

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def _log_evaluation(mlflow_client, child_id: str, metrics_uri: str, report: dict, exports: list[Export]) -> None:
    """Attach the evaluation (``metrics.json``, and ``report.md`` when on S3) and the exports' checks to the run."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.json").write_text(json.dumps(report, indent=2))
        mlflow_client.log_artifact(child_id, str(Path(tmp) / "metrics.json"), "evaluation")
        for part in ("report.md", *CHARTS):  # the report and its pictures, where the evaluation wrote them
            uri = metrics_uri.rsplit("/", 1)[0] + "/" + part
            if storage.is_s3(uri) and storage.head(uri):
                (Path(tmp) / part).write_bytes(storage.read_bytes(uri))
            elif Path(uri).is_file():
                shutil.copyfile(uri, Path(tmp) / part)
            else:
                continue
            mlflow_client.log_artifact(child_id, str(Path(tmp) / part), "evaluation")
        (Path(tmp) / "exports.json").write_text(json.dumps([e.to_dict() for e in exports], indent=2))
        mlflow_client.log_artifact(child_id, str(Path(tmp) / "exports.json"), "export")


def _log_pyfunc(child_id: str, weights: str, report: dict, exports: list[Export], example: Path) -> Any:
    """Log the pyfunc model into the step's run without ending it; return its ``ModelInfo``.

    Its artifacts are the ``.pt`` and every verified export; ``example`` (a sample image) becomes the base64 input
    example, and the requirements pin the Ultralytics and ONNX Runtime versions that verified the exports.
    """
    import base64

    import mlflow
    import onnxruntime
    import pandas as pd
    import ultralytics

    task, imgsz = report["task"], int(report["imgsz"])
    signature = _pyfunc_signature(task, imgsz)
    example = pd.DataFrame({"image": [base64.b64encode(example.read_bytes()).decode()]})
    weights_copy = exports[0].path.with_suffix(".pt")  # export_verified's copy: model.pt beside model.onnx
    artifacts = {"weights": str(weights_copy if weights_copy.is_file() else weights),
                 **{e.format: str(e.path) for e in exports}}  # fmt: skip
    with tracking.active_run(child_id):  # not `mlflow.start_run`: that ends the run FINISHED
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            model_config={"task": task, "imgsz": imgsz, "allow_paths": False},  # paths: an explicit opt-in at load
            pip_requirements=[
                f"ultralytics=={ultralytics.__version__}",
                f"onnxruntime=={onnxruntime.__version__}",
                "pandas",
            ],  # fmt: skip
        )


def _pyfunc_signature(task: str, imgsz: int) -> Any:
    """Return the served model's signature: base64 images in; one row per detection out (the task's columns too)."""
    import pandas as pd
    from mlflow.models import infer_signature

    box_columns, task_columns = pyfunc_columns()
    columns = box_columns + task_columns.get(task, [])
    sample_row = [0, 0, "name", 0.5, 0.0, 0.0, 1.0, 1.0] + ["[]"] * (len(columns) - len(box_columns))
    return infer_signature(
        model_input=pd.DataFrame({"image": ["<base64 image bytes>"]}),
        model_output=pd.DataFrame([sample_row], columns=columns),
        params={"conf": 0.25, "imgsz": imgsz, "backend": "torch"},
    )


def model_card(report: dict[str, Any], plan: dict[str, Any], data_hash: str, tags: dict[str, str]) -> str:
    """Return the version's description: what the model is, how it scored, the gate's decision, per class, exports."""
    models = report["models"]
    v = report["verdict"]
    exports = tags.get("export_formats", "")
    onnx = f" (ONNX opset {tags.get('onnx_opset')}, dynamic batch, imgsz {tags.get('onnx_imgsz')})" if exports else ""
    decision = tags.get(TAG_DECISION)
    lines = [
        f"Distilled {report['task']} student of pipeline run `{report['run_id']}`: {primary_line(v)}.",
        "",
        f"Teacher `{report['uris']['teacher']}`; dataset `{data_hash}` ({report['split']} split, imgsz "
        f"{report['imgsz']}); loss `{plan.get('loss')}`, layers `{plan.get('layers')}`, logit `{plan.get('logit')}`, "
        f"mode `{plan.get('mode')}`. {training_line(report.get('training'))}",
        "",
        *model_table(models, size=False),
        "",
        gate_line(v.get("gate")),
        "",
        f"**Registry decision**: {decision} — {tags.get(TAG_REASON, '')}." if decision else "Decision pending.",
        "",
        *class_table(report.get("per_class"), v["primary_metric"]),
        "",
        f"Charts (this version's run, `evaluation/`): {', '.join(f'`{c}`' for c in CHARTS)} — per-class AP, the "
        "learning curves of baseline and distilled with the KD phase shaded, the gate's interval against its "
        f"threshold; also beside the evaluation `{tags.get('evaluation', '')}`.",
        "",
        f"Latency on {next(iter(models.values()))['device']}. Exports: {exports or 'none'}{onnx}, each verified "
        "against PyTorch before registering (`export/exports.json` in the register run).",
    ]
    return "\n".join(lines)


def primary_line(verdict: dict[str, Any]) -> str:
    """One phrase with the primary metric against baseline and teacher."""
    return (
        f"{verdict['primary_metric'].removeprefix('metrics/')} {verdict['distilled']:.4f} "
        f"({verdict['gain_over_baseline']:+.4f} over the baseline, {verdict['gap_to_teacher']:+.4f} below the teacher)"
    )


def pyfunc_columns() -> tuple[list[str], dict[str, list[str]]]:
    """Return the served model's output columns (``BOX_COLUMNS``, ``TASK_COLUMNS``) as ``pyfunc_model.py`` defines them.

    Read from its source: the file is logged as self-contained code, and importing it would run its ``set_model``.
    """
    import ast

    wanted = {"BOX_COLUMNS", "TASK_COLUMNS"}
    values = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse(PYFUNC_CODE.read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in wanted
    }
    return values["BOX_COLUMNS"], values["TASK_COLUMNS"]

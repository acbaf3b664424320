"""What a run's pods get on a cluster, declared once for the pipeline's pods and a TrainJob's nodes.

The pipeline (:class:`distill.pipelines.pipeline.ClusterSettings`, compile time) and the multi-node launcher
(:class:`distill.steps.trainjob.TrainJobSettings`, filled from the former) take their defaults and key lists from
here, so a training step gets the same credentials, ``/dev/shm`` and placement on one node as on many.
"""

from __future__ import annotations

#: Kubernetes secret whose keys become the S3 environment of every pod and node.
S3_SECRET = "yolo-distill-s3"
#: Kubernetes secret whose keys become the MLflow environment (``MLFLOW_TRACKING_TOKEN`` may be added by hand).
MLFLOW_SECRET = "yolo-distill-mlflow"
#: The keys read from each secret, each becoming the environment variable of the same name.
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI",)
#: A training pod's (or node's) CPU and memory limit.
TRAINING_CPU = "8"
TRAINING_MEMORY = "32G"
#: The memory-backed ``/dev/shm`` of a training pod: PyTorch's data loaders need more than the default 64 MiB.
SHM_SIZE = "8Gi"
#: GPU nodes are usually tainted; training pods and nodes tolerate it.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

"""Kubeflow Pipelines v2 components, one per pipeline step (installed as ``distill.components``)."""

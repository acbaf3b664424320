"""Kubeflow Pipelines components (installed as `distill.components`); they arrive with the pipeline issue."""

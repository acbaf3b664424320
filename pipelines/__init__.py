"""Kubeflow Pipelines pipelines (installed as `distill.pipelines`); they arrive with the pipeline issue."""

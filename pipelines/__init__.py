"""The Kubeflow pipeline: compile, submit, schedule, run locally (installed as ``distill.pipelines``)."""

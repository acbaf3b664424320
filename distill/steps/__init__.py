"""Pipeline steps: each a plain function taking parameters and URIs and returning a JSON-serialisable dict.

The CLI (``yolo-distill step ...``), the Kubeflow components and the tests all call these functions.
"""

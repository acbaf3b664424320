"""Benchmarks: training-step speed (``benchmarks.speed``) and accuracy on BCCD (``benchmarks.accuracy``)."""

"""Judging and shipping a model: the paired bootstrap, the promotion gate and the export.

Used by the steps (register, evaluate) and the benchmarks; uses :mod:`distill.data` and the foundations.
Importing the package imports nothing.
"""

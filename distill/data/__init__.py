"""Datasets and their files: dataset YAMLs, image files, S3 storage, shards and the synthetic sets.

Used by the engine, the registry side and the steps; uses only the foundations (errors, paths, YAML, offline).
Importing the package imports nothing.
"""

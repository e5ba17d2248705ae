"""Serving the delay model: the HTTP contract, packaging into BentoML, scoring, batching, the log.

Pure, typed logic without a BentoML service: :mod:`ml_platform.serving.service` wires it into one.
Importing this package imports nothing heavy (torch, polars' model code, mlflow and bentoml load
inside the functions that need them).
"""

"""Serving: the online feature store the served model reads (``online.py``)."""

"""The BentoML service of the delay model (``ml_platform.serving.service:DelayService``).

Kept outside ``lib``: it is the wiring of a framework (BentoML) around the typed logic of
:mod:`ml_platform.lib.serving`, as ``defs`` is for Dagster.
"""

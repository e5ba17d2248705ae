"""Lineage and impact: from a served prediction back to raw partitions, and forward from a raw day.

* :func:`trace` (``mlp lineage``): deployment -> Bento -> model version (alias history, approvals)
  -> MLflow run -> training-window feature partitions -> validated partitions -> raw partitions,
  with code versions and git commits at each hop.
* :func:`impact` (``mlp impact``): every partition, model version, Bento and deployment recorded as
  derived from raw partitions.

Both read only what was recorded (``lineage/upstream``, run ids, storage pins, MLflow, the audit and
deployment logs); a link that was not recorded is a :class:`Missing` hop. See docs/lineage.md.
"""

from ml_platform.lineage.impact import impact, parse_target
from ml_platform.lineage.model import ImpactReport, LineageChain, LineageError, Missing, to_json
from ml_platform.lineage.sources import LineageSources
from ml_platform.lineage.trace import trace

__all__ = [
    "ImpactReport",
    "LineageChain",
    "LineageError",
    "LineageSources",
    "Missing",
    "impact",
    "parse_target",
    "to_json",
    "trace",
]

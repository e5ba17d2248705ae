"""The evidence bundle of a model version: one self-contained HTML file and the same content as JSON.

``mlp evidence <version|alias>`` / :func:`build_evidence` + :func:`write_evidence`. For auditors, a
bundle holds, read from what the platform recorded and nothing else:

* a header: model name and version, when the bundle was generated, whether the lineage chain is
  complete, and every link that was not recorded (:class:`~ml_platform.lineage.model.Missing`);
* a picture of the lineage graph (an inline SVG, :mod:`ml_platform.lineage.evidence_svg`): raw ->
  validated -> features -> model -> evaluation/promotion -> Bento -> deployment, the partitions of
  an asset collapsed into one node when there are many;
* metrics: the holdout metrics of each evaluation against the naive baseline and the champion of
  the time (``evaluation/{model,baseline,champion}_*``), the training facts, the plots the
  evaluation rendered (PNG, inlined as ``data:`` URIs);
* check results: the gates as ``evaluation/gates`` recorded them, and the asset checks of every
  partition of the chain, counted per check with the failures listed;
* data profiles and drift at training time: the ``flight_feature_profiles`` materializations that
  profiled exactly the feature versions the model trained on, the ``drift_report`` days of the
  training window recorded before it trained, and the drift reports judged against this version
  (read through their recorded metadata; when nothing is recorded the bundle says so);
* the approval and alias history: every audit-log event about the version (actor, time, reason,
  evidence, hash), the hash-chain verification, the deployment log's events;
* how to reproduce: the pins the model recorded (verbatim) with the feature materialization and
  Dagster data version each resolved to, whether each pin is still the latest recorded version of
  its partition, the code version, git commit, MLflow run id and params, and the commands.

The trace itself is :func:`ml_platform.lineage.trace`; what it does not expose (the evaluation's
champion metrics and plots, the verbatim gates and pins, the audit events' evidence, profiles and
drift) is read here from the same recorded metadata, never recomputed and never guessed.

The HTML references nothing outside itself (no CSS, script, font or image files, no links), escapes
every text, and carries the sha256 of the JSON file's bytes in its footer.

The package, by responsibility: :mod:`.schema` (the names read, :class:`Evidence`, the JSON Schema),
:mod:`.gather` (:func:`build_evidence`; its graph section in :mod:`.graph`, its data and reproduce
sections in :mod:`.data`, the chain they share in :mod:`.base`), :mod:`.render` (the JSON and HTML
files). The names other modules and the tests use are re-exported here.
"""

from ml_platform.lineage.evidence.data import _has_command
from ml_platform.lineage.evidence.gather import _Builder, build_evidence
from ml_platform.lineage.evidence.render import render_html, write_evidence
from ml_platform.lineage.evidence.schema import (
    DRIFT,
    DRIFT_ERRORS,
    DRIFT_MODEL_PARTITION,
    DRIFT_MODEL_VERSION,
    DRIFT_REFERENCE,
    DRIFT_SEVERITY,
    DRIFT_WARNINGS,
    PROFILES,
    SCHEMA,
    Evidence,
    json_sha256,
    validate,
)

__all__ = [
    "DRIFT",
    "DRIFT_ERRORS",
    "DRIFT_MODEL_PARTITION",
    "DRIFT_MODEL_VERSION",
    "DRIFT_REFERENCE",
    "DRIFT_SEVERITY",
    "DRIFT_WARNINGS",
    "PROFILES",
    "SCHEMA",
    "Evidence",
    "_Builder",
    "_has_command",
    "build_evidence",
    "json_sha256",
    "render_html",
    "validate",
    "write_evidence",
]

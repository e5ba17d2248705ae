"""OpenLineage run events of the materializations, with the platform's ML facets (docs/lineage.md).

* :func:`export_openlineage` (:mod:`.export`): what is new in the Dagster instance since the target's
  cursor, as START and COMPLETE (or FAIL) events, validated, then emitted (file, http or none);
* :func:`validate_event` (:mod:`.validate`): strict validation of one serialized event against
  openlineage-python's model and the custom facets' JSON Schemas (``schemas/``);
* the ``openlineage_sensor`` (:mod:`ml_platform.defs.openlineage`) and ``mlp openlineage`` call them.

The names are imported on first use: loading the Definitions must not import openlineage-python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_platform.lineage.openlineage.config import OpenLineageConfig, OpenLineageConfigError
    from ml_platform.lineage.openlineage.cursor import CursorError, ExportBusy
    from ml_platform.lineage.openlineage.export import (
        ExportSummary,
        OpenLineageExportError,
        export_openlineage,
        partitions_of,
    )
    from ml_platform.lineage.openlineage.transport import make_transport
    from ml_platform.lineage.openlineage.validate import (
        OpenLineageValidationError,
        validate_against_spec,
        validate_event,
    )

_WHERE = {
    "OpenLineageConfig": "config",
    "OpenLineageConfigError": "config",
    "CursorError": "cursor",
    "ExportBusy": "cursor",
    "ExportSummary": "export",
    "OpenLineageExportError": "export",
    "export_openlineage": "export",
    "partitions_of": "export",
    "make_transport": "transport",
    "OpenLineageValidationError": "validate",
    "validate_against_spec": "validate",
    "validate_event": "validate",
}
__all__ = [
    "CursorError",
    "ExportBusy",
    "ExportSummary",
    "OpenLineageConfig",
    "OpenLineageConfigError",
    "OpenLineageExportError",
    "OpenLineageValidationError",
    "export_openlineage",
    "make_transport",
    "partitions_of",
    "validate_against_spec",
    "validate_event",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

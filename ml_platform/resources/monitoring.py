"""Where monitoring writes (metrics textfiles, the events table) and whom it alerts."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from ml_platform.lib.monitoring.events import MonitoringEvents
from ml_platform.lib.monitoring.notify import Notifier, build_notifier


class MonitoringResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Alert targets, the Prometheus textfile folder and the monitoring events table."""

    metrics_dir: str = Field(description="Prometheus textfile-collector folder.")
    events_table: str = Field(description="Delta table of drift detections, retrain decisions and alerts.")
    notify: str = Field(
        '["log"]',
        description='Alert targets as a JSON list: "log" and/or "webhook:<url>". A webhook URL holds a'
        " secret token, so production passes it as EnvVar('MLP_NOTIFY'), never as a literal.",
    )
    dagster_ui_url: str = Field("http://127.0.0.1:3000", description="Dagster UI base URL for alert links.")

    def notifier(self) -> Notifier:
        """The configured notifier (a fan-out for several targets)."""
        try:
            targets = json.loads(self.notify)
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ValueError("expected a JSON list of strings")
            return build_notifier(targets)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise dg.Failure(f"MLP_NOTIFY: {exc}") from exc

    def events(self) -> MonitoringEvents:
        """The events table."""
        return MonitoringEvents(self.events_table)

    def metrics_path(self, name: str) -> Path:
        """``<metrics_dir>/<name>.prom``."""
        return Path(self.metrics_dir) / f"{name}.prom"

    def asset_url(self, asset: str) -> str:
        """Link to an asset in the Dagster UI."""
        return f"{self.dagster_ui_url.rstrip('/')}/assets/{asset}"

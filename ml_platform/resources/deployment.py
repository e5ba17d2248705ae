"""The local deployment as a Dagster resource: the desired state, the supervisor's status, the log.

The resource does not own the served processes: a Dagster step ends, a served model must not. The
long-running supervisor (``mlp deploy serve``, :mod:`ml_platform.lib.deploy.supervisor`) starts and
stops them; through this resource the ``deployment`` asset writes what should run, waits until the
supervisor applied it, and reads each process' port, pid and health from its status file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from ml_platform.lib.deploy.desired import DesiredStateStore
    from ml_platform.lib.deploy.events import DeploymentLog
    from ml_platform.lib.deploy.rollback import CanaryThresholds

Applied = Literal["applied", "failed", "no_supervisor", "timeout"]


class DeploymentResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the deployment's desired state, the supervisor's status and the deployment log live."""

    state_dir: str = Field(description="Folder of desired.json (the desired state) and status.json.")
    log_table: str = Field(description="The append-only Delta table of deployment events.")
    bentoml_home: str = Field(description="BENTOML_HOME holding the Bentos the supervisor serves.")
    strategy: str = Field(
        "canary", description="blue_green, canary or shadow: how a new champion comes in (config wins)."
    )
    canary_share: float = Field(0.1, gt=0, le=1, description="The canary's share of the requests.")
    promote_after_s: float | None = Field(
        900.0, description="Seconds of a healthy canary before it is promoted by itself (None: by hand)."
    )
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Canary rollback: error-rate limit.")
    max_p99_ms: float = Field(200.0, gt=0, description="Canary rollback: p99 latency limit (ms).")
    min_requests: int = Field(20, ge=1, description="Canary answers needed before it is judged.")
    wait_s: float = Field(180.0, ge=0, description="How long to wait for a running supervisor to apply.")

    @property
    def desired_path(self) -> Path:
        return Path(self.state_dir) / "desired.json"

    @property
    def status_path(self) -> Path:
        return Path(self.state_dir) / "status.json"

    def store(self) -> DesiredStateStore:
        from ml_platform.lib.deploy.desired import DesiredStateStore

        return DesiredStateStore(self.desired_path)

    def log(self) -> DeploymentLog:
        from ml_platform.lib.deploy.events import DeploymentLog

        return DeploymentLog(self.log_table)

    def thresholds(self) -> CanaryThresholds:
        from ml_platform.lib.deploy.rollback import CanaryThresholds

        return CanaryThresholds(
            max_error_rate=self.max_error_rate, max_p99_ms=self.max_p99_ms, min_requests=self.min_requests
        )

    def status(self) -> dict[str, Any] | None:
        """The supervisor's last status (None: no supervisor ever ran here)."""
        from ml_platform.lib.deploy.supervisor import read_status

        return read_status(self.status_path)

    def supervisor_running(self) -> bool:
        from ml_platform.lib.deploy.supervisor import supervisor_running

        return supervisor_running(self.status())

    def wait_applied(
        self, generation: int, timeout_s: float | None = None
    ) -> tuple[Applied, dict[str, Any] | None]:
        """Wait until the supervisor applied ``generation`` (or failed it); return how, and its status.

        ``no_supervisor`` at once when none is running: the change waits in the desired state for
        the next ``mlp deploy serve``.
        """
        from ml_platform.lib.deploy.supervisor import supervisor_running

        deadline = time.monotonic() + (self.wait_s if timeout_s is None else timeout_s)
        while True:
            status = self.status()
            if not supervisor_running(status):
                return "no_supervisor", status
            assert status is not None
            if status.get("failed_generation") == generation:
                return "failed", status
            applied = status.get("applied_generation")
            if applied is not None and int(applied) >= generation:
                return "applied", status
            if time.monotonic() >= deadline:
                return "timeout", status
            time.sleep(0.5)

"""The deployment supervisor: serves what the desired state says, behind one router, until stopped.

``mlp deploy serve`` runs one :class:`Supervisor`. The ``deployment`` asset only writes the
desired state (:mod:`ml_platform.lib.deploy.desired`): a Dagster step ends, served models must not,
so the processes belong to this long-running supervisor, as runs belong to the Dagster daemon.

Every ``poll_s`` (and at once after a rollback) :meth:`Supervisor.tick`:

1. reads the desired state; a new generation is applied:

   * no champion yet: start it (``bentoml serve`` of its Bento, :class:`ServedProcess`), wait
     until ready, start the router in front of it (``deploy``);
   * another champion: when it is the running challenger, promote it (``promote``); otherwise start
     it, wait until ready, switch the router to it, drain the old one and stop it (``switch``:
     blue-green, no request lost);
   * the challenger left: route everything to the champion, drain and stop it (``stop``, or
     ``rollback`` when the state says it was rolled back and the guard did not already record it);
   * a challenger to run: start it, wait until ready, then route the canary share to it, or a
     shadow copy of every request (``canary_start`` / ``shadow_start``);

   a generation that cannot be applied (a Bento that does not start) is not retried: the error
   is in the status file, and what served before keeps serving;
2. restarts a champion whose process died (``switch``, with the exit code as reason);
3. promotes a canary that ran ``promote_after_s`` without a breach, with at least ``min_requests``
   answers in its window, by writing the next desired state (applied at the next tick);
4. writes the status file (``status.json`` beside the desired state): generation applied, router
   URL, each process' port, pid and health. The asset and ``mlp deploy status`` read it.

The :class:`~ml_platform.lib.deploy.rollback.CanaryGuard` judges the challenger's answers on the
router's loop; on a breach it routes everything back to the champion at once, records the rollback
in the deployment log and writes the desired state without the challenger (its Bento is then
refused to later canaries unless forced).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ml_platform.lib.deploy.desired import (
    DesiredState,
    DesiredStateStore,
    Release,
    after_promotion,
    after_rollback,
)
from ml_platform.lib.deploy.events import Action, DeploymentEvent, DeploymentLog
from ml_platform.lib.deploy.process import LOOPBACK, ServedProcess, ServedProcessError
from ml_platform.lib.deploy.rollback import ROLLBACK_ACTOR, CanaryGuard, CanaryThresholds, Rollback
from ml_platform.lib.deploy.router import Router, RouterServer, RoutingPolicy, Upstream
from ml_platform.lib.files import write_atomic

logger = logging.getLogger("ml_platform.deploy.supervisor")
PROMOTE_ACTOR: Final = "policy:canary-promote"
#: A status file older than this is from a supervisor that is no longer running.
STATUS_FRESH_S: Final = 15.0

#: Builds the (not yet started) server of a release; the name is ``champion`` or ``challenger``.
Launcher = Callable[[Release, str], ServedProcess]


class SupervisorError(RuntimeError):
    """A desired state could not be applied."""


@dataclass
class _Served:
    release: Release
    process: ServedProcess
    since: datetime

    def upstream(self) -> Upstream:
        return Upstream(
            self.process.url,
            f"v{self.release.model_version}",
            model_version=self.release.model_version,
            bento_tag=self.release.bento_tag,
        )

    def state(self, check_health: bool) -> dict[str, Any]:
        return {
            **asdict(self.release),
            "url": self.process.url,
            "port": self.process.port,
            "pid": self.process.pid,
            "alive": self.process.alive(),
            "healthy": self.process.healthy(timeout_s=1.0) if check_health else None,
            "started_in_s": None
            if self.process.started_in_s is None
            else round(self.process.started_in_s, 2),
            "since": self.since.isoformat(),
            "log": None if self.process.log_path is None else str(self.process.log_path),
        }


class Supervisor:
    """Applies the desired state (see the module doc).

    Args:
        store: The desired state.
        log: Where every change is recorded.
        launch: Builds the server of a release.
        status_path: The status file it keeps up to date.
        port: The router's port (default: a free one); ``host``: its address.
        drain_timeout_s: How long a replaced server may finish its requests before it is stopped.
    """

    def __init__(
        self,
        store: DesiredStateStore,
        log: DeploymentLog,
        launch: Launcher,
        *,
        status_path: Path,
        port: int | None = None,
        host: str = LOOPBACK,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.log = log
        self.launch = launch
        self.status_path = Path(status_path)
        self.port = port
        self.host = host
        self.drain_timeout_s = drain_timeout_s
        self.server: RouterServer | None = None
        self.champion: _Served | None = None
        self.challenger: _Served | None = None
        self.applied: DesiredState | None = None
        self.failed_generation: int | None = None
        self.last_error: str | None = None
        self.restarts = 0
        self.guard: CanaryGuard | None = None
        self.canary_since: float | None = None
        self.events: list[DeploymentEvent] = []
        self._reported = 0
        self._guard_rolled_back: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started_at = datetime.now(UTC)

    # ------------------------------------------------------------------------------------ public

    @property
    def url(self) -> str | None:
        """The router's URL, once the first champion serves."""
        return None if self.server is None else self.server.url

    def tick(self) -> list[DeploymentEvent]:
        """One round (see the module doc); return the events recorded since the last round's end.

        Those include a rollback the guard recorded between two rounds.
        """
        desired = self.store.read()
        if (
            desired is not None
            and (self.applied is None or desired.generation != self.applied.generation)
            and desired.generation != self.failed_generation
        ):
            try:
                self._apply(desired)
                self.failed_generation, self.last_error = None, None
            except (ServedProcessError, SupervisorError, RuntimeError) as exc:
                self.failed_generation, self.last_error = desired.generation, str(exc)
                logger.error("desired generation %s not applied: %s", desired.generation, exc)
        self._heal()
        self._maybe_promote()
        self.write_status()
        return self.unreported()

    def unreported(self) -> list[DeploymentEvent]:
        """The events recorded since the last call (or tick), oldest first."""
        fresh = self.events[self._reported :]
        self._reported += len(fresh)
        return fresh

    def serve_forever(
        self, poll_s: float = 1.0, on_tick: Callable[[list[DeploymentEvent]], None] | None = None
    ) -> None:
        """Tick every ``poll_s`` (sooner after a rollback) until :meth:`request_stop`; then shut down."""
        try:
            while not self._stop.is_set():
                events = self.tick()
                if on_tick is not None and events:
                    on_tick(events)
                self._wake.wait(poll_s)
                self._wake.clear()
        finally:
            self.shutdown()

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return (from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()

    def shutdown(self, reason: str = "the supervisor stopped") -> None:
        """Stop the router, then the servers; record the champion's ``stop``."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        for served in (self.challenger, self.champion):
            if served is not None:
                served.process.stop()
        if self.champion is not None:
            self._record(
                "stop",
                self.champion.release,
                None,
                mode="single",
                reason=reason,
                actor=f"supervisor:{os.getpid()}",
            )
        self.champion = self.challenger = None
        self.write_status(stopped=True)

    def status(self, *, check_health: bool = True) -> dict[str, Any]:
        """What runs now (what the status file holds)."""
        desired = self.applied
        return {
            "pid": os.getpid(),
            "started_at": self._started_at.isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "stopped": False,
            "url": self.url,
            "applied_generation": None if desired is None else desired.generation,
            "failed_generation": self.failed_generation,
            "last_error": self.last_error,
            "policy": None if self.server is None else self.server.router.state()["policy"],
            "champion": None if self.champion is None else self.champion.state(check_health),
            "challenger": None if self.challenger is None else self.challenger.state(check_health),
            "canary_seconds": None
            if self.canary_since is None
            else round(time.monotonic() - self.canary_since, 1),
            "guard": None
            if self.guard is None or self.guard.last_verdict is None
            else self.guard.last_verdict.to_dict(),
            "restarts": self.restarts,
            "deployment_log": self.log.table_uri,
        }

    def write_status(self, *, stopped: bool = False) -> None:
        status = self.status(check_health=not stopped)
        status["stopped"] = stopped
        write_json_atomically(self.status_path, status)

    # ---------------------------------------------------------------------------------- applying

    def _apply(self, desired: DesiredState) -> None:
        previous = self.applied
        actor, detail = desired.requested_by, {"generation": desired.generation}
        if previous is None and self.log.events():
            # a (re)started supervisor serving a state someone else asked for earlier: its servers
            # start now, by this process; the request is named, not replayed as theirs
            actor = f"supervisor:{os.getpid()}"
            desired = replace(
                desired,
                reason=f"supervisor started, serving generation {desired.generation}: {desired.reason}",
            )
        champion = self.champion
        if champion is None:
            served = self._start(desired.champion, "champion")
            self.champion = served
            self._start_router(served, desired.thresholds)
            self._record(
                "deploy",
                desired.champion,
                None,
                mode="single",
                reason=desired.reason,
                actor=actor,
                detail=detail,
            )
        elif not desired.champion.same_bento(champion.release):
            server = self._router()
            if self.challenger is not None and desired.champion.same_bento(self.challenger.release):
                promoted = self.challenger
                drained = server.promote_challenger(self.drain_timeout_s)
                self.champion, self.challenger, self.canary_since = promoted, None, None
                champion.process.stop()
                self._record(
                    "promote",
                    promoted.release,
                    champion.release,
                    mode="single",
                    reason=desired.reason,
                    actor=actor,
                    detail={**detail, "drained": drained},
                )
            else:
                served = self._start(desired.champion, "champion")
                drained = server.replace_champion(served.upstream(), self.drain_timeout_s)
                self.champion = served
                champion.process.stop()
                self._record(
                    "switch",
                    desired.champion,
                    champion.release,
                    mode=self._router().router.policy.mode,
                    share=self._router().router.policy.share,
                    reason=desired.reason,
                    actor=actor,
                    detail={**detail, "drained": drained, "port": served.process.port},
                )
        self._apply_challenger(desired, previous, actor)
        self.applied = desired

    def _apply_challenger(self, desired: DesiredState, previous: DesiredState | None, actor: str) -> None:
        server = self._router()
        champion = self.champion
        assert champion is not None
        detail = {"generation": desired.generation}
        have, want = self.challenger, desired.challenger
        if have is not None and not (want is not None and want.same_bento(have.release)):
            drained = server.set_challenger(None, self.drain_timeout_s)  # policy back to single
            have.process.stop()
            self.challenger, self.canary_since = None, None
            tag = have.release.bento_tag
            newly_rolled_back = tag in desired.rolled_back and (
                previous is None or tag not in previous.rolled_back
            )
            if tag in self._guard_rolled_back:
                self._guard_rolled_back.discard(tag)  # the guard recorded it
            else:
                self._record(
                    "rollback" if newly_rolled_back else "stop",
                    have.release,
                    champion.release,
                    mode="single",
                    reason=desired.reason,
                    actor=actor,
                    detail={**detail, "drained": drained},
                )
        if want is None:
            if server.router.policy.mode != "single":
                server.set_policy(RoutingPolicy.single())
            return
        policy = desired.policy()
        if self.challenger is None:
            served = self._start(want, "challenger")
            server.set_challenger(served.upstream())
            self.challenger = served
        elif (
            server.router.policy == policy
            and previous is not None
            and previous.thresholds == desired.thresholds
        ):
            return  # nothing about the challenger changed
        self._install_guard(desired.thresholds)
        server.set_policy(policy)
        self.canary_since = time.monotonic() if policy.mode == "canary" else None
        self._record(
            "canary_start" if policy.mode == "canary" else "shadow_start",
            want,
            champion.release,
            mode=policy.mode,
            share=policy.share,
            reason=desired.reason,
            actor=actor,
            detail={
                **detail,
                "thresholds": desired.thresholds.to_dict(),
                "promote_after_s": desired.promote_after_s,
                "port": self.challenger.process.port,
            },
        )

    def _heal(self) -> None:
        champion = self.champion
        if champion is None or champion.process.alive() or self.server is None:
            return
        code = champion.process.stop()
        reason = f"the champion's server (pid {champion.process.pid}) exited with code {code}; restarted"
        logger.error(reason)
        try:
            served = self._start(champion.release, "champion")
        except ServedProcessError as exc:
            self.last_error = f"restarting the champion {champion.release.label} failed: {exc}"
            logger.error(self.last_error)
            return
        self.server.replace_champion(served.upstream(), self.drain_timeout_s)
        self.champion = served
        self.restarts += 1
        policy = self.server.router.policy
        self._record(
            "switch",
            served.release,
            champion.release,
            mode=policy.mode,
            share=policy.share,
            reason=reason,
            actor=f"supervisor:{os.getpid()}",
            detail={"restart": self.restarts},
        )

    def _maybe_promote(self) -> None:
        desired, challenger, guard = self.applied, self.challenger, self.guard
        if (
            desired is None
            or challenger is None
            or guard is None
            or self.server is None
            or desired.mode != "canary"
            or desired.promote_after_s is None
            or self.canary_since is None
        ):
            return
        ran = time.monotonic() - self.canary_since
        if ran < desired.promote_after_s:
            return
        verdict = self.server.run_sync(guard.check)
        if verdict is None or verdict.breached or verdict.requests < desired.thresholds.min_requests:
            return  # a breach rolls back; too few answers: wait for more evidence
        tag = challenger.release.bento_tag
        p99 = "n/a" if verdict.p99_ms is None else f"{verdict.p99_ms:.1f} ms"
        reason = (
            f"canary healthy for {ran:.0f} s: {verdict.requests} answers in the last window,"
            f" error rate {verdict.error_rate:.1%}, p99 {p99}"
        )
        self.store.update(
            lambda current: None if current is None else after_promotion(current, tag, reason, PROMOTE_ACTOR)
        )

    # ----------------------------------------------------------------------------------- helpers

    def _start(self, release: Release, role: str) -> _Served:
        process = self.launch(release, role)
        logger.info("starting %s %s (%s)", role, release.label, release.bento_tag)
        try:
            process.start()
        except ServedProcessError:
            process.stop()
            raise
        return _Served(release, process, datetime.now(UTC))

    def _start_router(self, champion: _Served, thresholds: CanaryThresholds) -> None:
        router = Router(champion.upstream())
        self.server = RouterServer(router, port=self.port, host=self.host).start()
        self._install_guard(thresholds)

    def _router(self) -> RouterServer:
        if self.server is None:
            raise SupervisorError("no router is running")
        return self.server

    def _install_guard(self, thresholds: CanaryThresholds) -> None:
        server = self._router()
        router = server.router

        def install() -> None:
            old = self.guard
            if old is not None:
                old.stop_periodic()
                with contextlib.suppress(ValueError):
                    router.listeners.remove(old.observe)
            guard = CanaryGuard(router, thresholds, on_rollback=self._on_rollback).attach()
            guard.start_periodic()
            self.guard = guard

        server.run_sync(install)

    def _on_rollback(self, rollback: Rollback) -> None:
        """The guard rolled the canary back (a worker thread): record it, write the next state, wake up."""
        tag = rollback.challenger.bento_tag or ""
        self._guard_rolled_back.add(tag)
        try:
            self.events.append(self.log.rollback_recorder(ROLLBACK_ACTOR)(rollback))
        finally:
            self.store.update(
                lambda current: (
                    None if current is None else after_rollback(current, tag, rollback.reason, ROLLBACK_ACTOR)
                )
            )
            self._wake.set()

    def _record(
        self,
        action: Action,
        release: Release,
        previous: Release | None,
        *,
        mode: str,
        share: float = 0.0,
        reason: str,
        actor: str,
        detail: dict[str, Any] | None = None,
    ) -> DeploymentEvent:
        event = self.log.append(
            action,
            mode=mode,
            share=share,
            bento_tag=release.bento_tag,
            model_version=release.model_version,
            previous_bento_tag=None if previous is None else previous.bento_tag,
            previous_model_version=None if previous is None else previous.model_version,
            reason=reason,
            actor=actor,
            detail={
                **(detail or {}),
                "model_name": release.model_name,
                "bento_partition": release.bento_partition,
                "bento_run_id": release.bento_run_id,
            },
        )
        self.events.append(event)
        logger.info("%s: %s (%s) by %s: %s", action, release.label, release.bento_tag, actor, reason)
        return event


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole (temporary file, then rename): a reader never sees half of it."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_status(path: Path) -> dict[str, Any] | None:
    """The supervisor's status file (None when there is none)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SupervisorError(f"cannot read the supervisor status {path}: {exc}") from exc
    return data


def supervisor_running(status: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """The status is from a supervisor that runs now (updated within :data:`STATUS_FRESH_S`, not stopped)."""
    if status is None or status.get("stopped"):
        return False
    updated = datetime.fromisoformat(str(status["updated_at"]))
    return ((now or datetime.now(UTC)) - updated).total_seconds() <= STATUS_FRESH_S

"""The supervisor against live ``bentoml serve`` processes: the whole life of a deployment.

One desired state after another, each applied by :meth:`Supervisor.tick` as ``mlp deploy serve``
does: a first deploy; a canary of version 2 that crashes and is rolled back by the guard alone (the
desired state then refuses it); the same canary forced back, healthy this time, promoted by itself
after ``promote_after_s``; a champion that dies and is restarted; shutdown. Every step is checked
through the router's answers (which version served), the status file, and the hash-chained
deployment log. The releases carry BentoML model tags where production has Bento tags: the
servers run the service from source, as the other live tests do.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml_platform.lib.deploy.desired import (
    DeploymentRefused,
    DesiredStateStore,
    Release,
    Request,
    plan,
)
from ml_platform.lib.deploy.events import DeploymentLog
from ml_platform.lib.deploy.process import SOURCE_TARGET, ServedProcess
from ml_platform.lib.deploy.rollback import ROLLBACK_ACTOR, CanaryThresholds
from ml_platform.lib.deploy.supervisor import PROMOTE_ACTOR, Supervisor, read_status, supervisor_running
from ml_platform_tests.deploy.conftest import REPO, Versions, server_env
from ml_platform_tests.serving.conftest import ServingWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]


@pytest.fixture
def supervisor(world: ServingWorld, tmp_path: Path) -> Iterator[Supervisor]:
    started = 0

    def launch(release: Release, role: str) -> ServedProcess:
        nonlocal started
        started += 1
        home = tmp_path / f"bentoml-{started}"
        shutil.copytree(world.bentoml_home / "models", home / "models")
        return ServedProcess(
            SOURCE_TARGET,
            env=server_env(world, home),
            args={"model_tag": release.bento_tag},
            name=f"{role}-v{release.model_version}",
            cwd=REPO,
            log_path=tmp_path / f"server-{started}.log",
            ready_timeout_s=120.0,
            grace_s=10.0,
        )

    sup = Supervisor(
        DesiredStateStore(tmp_path / "deployment" / "desired.json"),
        DeploymentLog(tmp_path / "deployments"),
        launch,
        status_path=tmp_path / "deployment" / "status.json",
        drain_timeout_s=10.0,
    )
    try:
        yield sup
    finally:
        sup.shutdown()


def ask(url: str, flights: list[dict[str, Any]], n: int, prefix: str) -> list[tuple[int, str | None]]:
    """``n`` requests with distinct request ids: (status, model version) of each."""
    answers = []
    with httpx.Client(base_url=url, timeout=30.0) as http:
        for i in range(n):
            r = http.post(
                "/predict", json=flights[i % len(flights)], headers={"X-Request-ID": f"{prefix}-{i}"}
            )
            answers.append((r.status_code, r.headers.get("X-Model-Version")))
    return answers


def until(condition: Callable[[], bool], timeout_s: float, step: Callable[[], object] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if step is not None:
            step()
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_deploy_canary_rollback_forced_canary_promotion_restart_and_stop(
    supervisor: Supervisor, versions: Versions, flights: list[dict[str, Any]]
) -> None:
    v1 = Release(versions.first.tag, "delay_model", versions.first.model_version, "2013-01-07", "run-a")
    v2 = Release(versions.second.tag, "delay_model", versions.second.model_version, "2013-01-14", "run-b")
    thresholds = CanaryThresholds(max_error_rate=0.2, max_p99_ms=5000, min_requests=8, check_interval_s=0.5)
    store, log = supervisor.store, supervisor.log

    def deploy(
        release: Release, strategy: str, *, force: bool = False, promote_after_s: float | None = None
    ) -> None:
        ask_ = Request("test:operator", f"{strategy} of {release.label}", thresholds, promote_after_s)
        state, changed = store.update(
            lambda current: plan(current, release, strategy, ask_, share=0.5, force=force)[0]  # type: ignore[arg-type]
        )
        assert changed and state is not None

    # 1. the first deploy: v1 serves everything behind the router
    deploy(v1, "canary")
    assert [e.action for e in supervisor.tick()] == ["deploy"]
    url = supervisor.url
    assert url is not None
    assert set(ask(url, flights, 10, "one")) == {(200, v1.model_version)}
    status = read_status(supervisor.status_path)
    assert supervisor_running(status) and status is not None
    assert status["applied_generation"] == 1 and status["champion"]["healthy"] is True
    assert status["champion"]["port"] == int(status["champion"]["url"].rsplit(":", 1)[1])

    # 2. a canary of v2 (half of the requests, by request id) ... which crashes: the guard rolls it back
    deploy(v2, "canary")
    assert [e.action for e in supervisor.tick()] == ["canary_start"]
    seen = ask(url, flights, 40, "canary")
    assert {s for s, _ in seen} == {200} and {v for _, v in seen} == {v1.model_version, v2.model_version}
    assert supervisor.challenger is not None
    supervisor.challenger.process.kill()
    crashed = time.monotonic()
    answers = ask(url, flights, 40, "crash")  # the challenger's share fails (502) until the guard acts
    assert supervisor.guard is not None and supervisor.guard.rollbacks, supervisor.guard.last_verdict
    assert time.monotonic() - crashed < 60
    assert until(lambda: (now := store.read()) is not None and now.generation == 3, 10)
    assert {a for a in answers if a[0] != 200} <= {(502, None)}
    # the guard recorded the rollback; the challenger's departure adds no other event
    assert [e.action for e in supervisor.tick()] == ["rollback"]
    assert supervisor.challenger is None and supervisor.server is not None
    assert supervisor.server.router.policy.mode == "single"
    assert set(ask(url, flights, 20, "after")) == {(200, v1.model_version)}
    rollback = log.events()[-1]
    assert (rollback.action, rollback.bento_tag, rollback.previous_bento_tag, rollback.actor) == (
        "rollback",
        v2.bento_tag,
        v1.bento_tag,
        ROLLBACK_ACTOR,
    )
    state = store.read()
    assert state is not None and state.rolled_back == (v2.bento_tag,) and state.challenger is None

    # 3. the rolled-back Bento is refused ... unless forced; healthy now, it is promoted by itself
    with pytest.raises(DeploymentRefused):
        deploy(v2, "canary")
    deploy(v2, "canary", force=True, promote_after_s=1.0)
    assert [e.action for e in supervisor.tick()] == ["canary_start"]
    assert {s for s, _ in ask(url, flights, 30, "healthy")} == {200}
    time.sleep(1.1)
    supervisor.tick()  # writes the promotion into the desired state ...
    promoted = store.read()
    assert promoted is not None and promoted.requested_by == PROMOTE_ACTOR and promoted.champion == v2
    assert "canary healthy" in promoted.reason
    assert [e.action for e in supervisor.tick()] == ["promote"]  # ... and applies it
    assert set(ask(url, flights, 10, "promoted")) == {(200, v2.model_version)}

    # 4. the champion dies: restarted, recorded, serving again
    assert supervisor.champion is not None
    supervisor.champion.process.kill()
    assert [e.action for e in supervisor.tick()] == ["switch"]
    assert supervisor.restarts == 1
    assert set(ask(url, flights, 5, "restarted")) == {(200, v2.model_version)}

    # 5. shutdown: recorded, the status says stopped, the log verifies
    supervisor.shutdown()
    stopped = read_status(supervisor.status_path)
    assert stopped is not None and stopped["stopped"] and not supervisor_running(stopped)
    actions = [(e.action, e.model_version) for e in log.events()]
    assert actions == [
        ("deploy", v1.model_version),
        ("canary_start", v2.model_version),
        ("rollback", v2.model_version),
        ("canary_start", v2.model_version),
        ("promote", v2.model_version),
        ("switch", v2.model_version),
        ("stop", v2.model_version),
    ]
    assert log.verify() == len(actions)
    assert all(e.actor for e in log.events()) and log.events()[0].actor == "test:operator"

    # 6. a new supervisor (a restart) serves the desired state again, as its own action
    again = Supervisor(
        store, log, supervisor.launch, status_path=supervisor.status_path, drain_timeout_s=10.0
    )
    try:
        [restarted] = again.tick()
        assert again.url is not None and set(ask(again.url, flights, 3, "again")) == {(200, v2.model_version)}
    finally:
        again.shutdown()
    assert (restarted.action, restarted.model_version) == ("deploy", v2.model_version)
    assert restarted.actor.startswith("supervisor:") and "supervisor started" in restarted.reason
    assert log.verify() == len(actions) + 2

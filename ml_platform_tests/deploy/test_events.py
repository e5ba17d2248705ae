"""The deployment log: append-only Delta, hash-chained, rollbacks recorded by the guard."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ml_platform.lib.deploy.events import DeploymentLog, DeploymentLogError
from ml_platform.lib.deploy.rollback import CanaryGuard, CanaryThresholds
from ml_platform.lib.deploy.router import Outcome, Router, RoutingPolicy, Upstream

V1 = Upstream("http://127.0.0.1:1", "v1", model_version="1", bento_tag="delay_service:aaa")
V2 = Upstream("http://127.0.0.1:2", "v2", model_version="2", bento_tag="delay_service:bbb")


def test_events_are_appended_and_chained(tmp_path: Path) -> None:
    log = DeploymentLog(tmp_path / "serving" / "deployments")
    assert log.events() == [] and log.verify() == 0
    log.append(
        "deploy", mode="single", bento_tag="delay_service:aaa", model_version="1", reason="first", actor="t"
    )
    log.append(
        "canary_start",
        mode="canary",
        share=0.1,
        bento_tag="delay_service:bbb",
        model_version="2",
        previous_bento_tag="delay_service:aaa",
        previous_model_version="1",
        reason="new champion candidate",
        actor="user:alice",
        detail={"thresholds": {"max_error_rate": 0.05}},
    )
    first, second = log.events()
    assert (first.seq, first.action, first.mode, first.share, first.prev_hash) == (
        0,
        "deploy",
        "single",
        0.0,
        "",
    )
    assert second.prev_hash == first.event_hash and second.share == 0.1
    assert second.previous_model_version == "1" and second.occurred_at.tzinfo == UTC
    assert '"max_error_rate":0.05' in second.detail
    assert log.verify() == 2
    table = DeltaTable(log.table_uri)
    assert table.metadata().configuration["delta.appendOnly"] == "true"
    with pytest.raises(Exception, match=r"(?i)append"):
        table.delete("seq = 0")  # Delta itself refuses to remove a row


def test_bad_events_are_refused(tmp_path: Path) -> None:
    log = DeploymentLog(tmp_path / "log")
    with pytest.raises(ValueError, match="action must be one of"):
        log.append("explode", mode="single", bento_tag=None, model_version=None, reason="r", actor="a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor must be"):
        log.append("deploy", mode="single", bento_tag=None, model_version=None, reason="r", actor=" ")
    with pytest.raises(ValueError, match="not JSON"):
        log.append(
            "deploy",
            mode="single",
            bento_tag=None,
            model_version=None,
            reason="r",
            actor="a",
            detail={"x": float("nan")},
        )
    assert log.events() == []


def test_a_forged_row_breaks_the_chain(tmp_path: Path) -> None:
    log = DeploymentLog(tmp_path / "log")
    event = log.append("deploy", mode="single", bento_tag="b:1", model_version="1", reason="r", actor="a")
    forged = {**event.__dict__, "seq": 1, "event_id": "x", "reason": "forged", "prev_hash": event.event_hash}
    schema = DeltaTable(log.table_uri).schema().to_arrow()
    write_deltalake(log.table_uri, pa.Table.from_pylist([forged], schema=pa.schema(schema)), mode="append")
    with pytest.raises(DeploymentLogError, match=r"event x .* was modified"):
        log.verify()


def test_the_guard_records_its_rollback(tmp_path: Path) -> None:
    log = DeploymentLog(tmp_path / "log")
    router = Router(V1, V2, RoutingPolicy.canary(0.2))
    guard = CanaryGuard(
        router,
        CanaryThresholds(min_requests=3),
        on_rollback=log.rollback_recorder("policy:canary-guard"),
    ).attach()
    for _ in range(3):
        guard.observe(Outcome("challenger", "v2", 503, 5.0, time.monotonic()))
    [event] = log.events()
    assert (event.action, event.mode, event.bento_tag, event.model_version) == (
        "rollback",
        "single",
        "delay_service:bbb",
        "2",
    )
    assert (event.previous_bento_tag, event.previous_model_version) == ("delay_service:aaa", "1")
    assert event.reason == "error rate 100.0% (3 of 3) above 5.0%" and event.actor == "policy:canary-guard"
    assert '"canary_share":0.2' in event.detail and '"errors":3' in event.detail

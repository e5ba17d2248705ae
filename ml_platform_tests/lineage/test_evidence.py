"""``mlp evidence``: the evidence bundle of the lineage tests' model, offline HTML and the same JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ml_platform.cli import app
from ml_platform.lib import metadata as keys
from ml_platform.lib.registry.audit import AuditLog
from ml_platform.lineage.evidence import (
    DRIFT,
    PROFILES,
    SCHEMA,
    Evidence,
    build_evidence,
    json_sha256,
    render_html,
    validate,
    write_evidence,
)
from ml_platform_tests.conftest import latest
from ml_platform_tests.lineage.conftest import LOG_DAY, MODEL, SHIFTED_DAY, WEEK, LineageWorld

pytestmark = pytest.mark.slow

NOW = datetime(2026, 5, 2, 9, 30, tzinfo=UTC)
#: Attributes that make a browser fetch something.
FETCHING = {"src", "href", "xlink:href", "action", "poster", "data", "srcset", "background", "formaction"}


@dataclasses.dataclass
class Written:
    evidence: Evidence
    html_path: Path
    json_path: Path

    @property
    def html(self) -> str:
        return self.html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def written(lineage_world: LineageWorld, tmp_path_factory: pytest.TempPathFactory) -> Written:
    w = lineage_world
    evidence = build_evidence(w.instance, w.settings, "champion", now=NOW)
    html_path, json_path = write_evidence(evidence, tmp_path_factory.mktemp("evidence"))
    return Written(evidence, html_path, json_path)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_the_html_is_self_contained_and_names_its_json(written):
    page = _parse(written.html)
    names = {tag for tag, _ in page.tags}
    assert {"svg", "table", "img"} <= names
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}, names
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert "http://" not in value and "https://" not in value, (tag, name, value[:80])
            if name in FETCHING:
                assert value.startswith(("data:", "#")), (tag, name, value[:80])
            assert not value.strip().lower().startswith(("javascript:", "//")), (tag, name)
    style = " ".join(page.styles)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style
    assert "http://" not in written.html and "https://" not in written.html
    # every inline image is a PNG the evaluation recorded
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert len(images) == len(written.evidence.plots) >= 3
    # the footer names the JSON file's sha256 (and so does the page's meta)
    digest = hashlib.sha256(written.json_path.read_bytes()).hexdigest()
    assert digest == json_sha256(written.evidence)
    assert f'<code id="json-sha256">{digest}</code>' in written.html
    assert [
        a["content"] for t, a in page.tags if t == "meta" and a.get("name") == "evidence-json-sha256"
    ] == [digest]
    assert written.json_path.name in written.html


def test_the_header_says_which_model_when_and_that_the_chain_is_complete(lineage_world, written):
    w = lineage_world
    ev = written.evidence
    assert (ev.model["name"], ev.model["version"]) == (MODEL, w.version)
    assert ev.generated_at == "2026-05-02T09:30:00+00:00"
    assert ev.complete is True and ev.missing == [] and all(c["ok"] for c in ev.consistency)
    assert ev.model["aliases_now"] == ["champion"] and ev.model["bentos"] == [w.bento_tag]
    assert f"Evidence bundle: {MODEL} v{w.version}" in written.html
    assert "Lineage chain complete" in written.html and "INCOMPLETE" not in written.html


def test_the_svg_draws_the_layers_with_the_model_bento_and_feature_partitions(lineage_world, written):
    w = lineage_world
    page = _parse(written.html)
    nodes = {a["data-id"] for t, a in page.tags if t == "g" and "data-id" in a}
    edges = {(a["data-from"], a["data-to"]) for t, a in page.tags if t == "path" and "data-from" in a}
    model = f"model:{MODEL}:v{w.version}"
    bento = f"bento:{w.bento_tag}"
    features = "flight_features[2013-01-07..2013-01-20]"
    deployment = f"deployment:champion:{w.bento_tag}"
    assert {model, bento, features, deployment} <= nodes, nodes
    # the 14 training days are one node; raw and validated collapse per asset the same way
    assert ">14 flight_features partitions</text>" in written.html
    assert ">2013-01-07..2013-01-20</text>" in written.html
    collapsed = sorted(n.split("[")[0] for n in nodes if n.startswith(("raw_", "validated_")))
    assert collapsed == ["raw_flights", "raw_weather", "validated_flights", "validated_weather"], nodes
    assert (features, model) in edges and (model, bento) in edges and (bento, deployment) in edges
    assert any(b == features and a.startswith("validated_flights") for a, b in edges)
    assert any(b.startswith("validated_weather") and a.startswith("raw_weather") for a, b in edges)
    evaluation = [n for n in nodes if n.startswith(f"model_evaluation[{WEEK}]@")]
    assert len(evaluation) == 1 and (model, evaluation[0]) in edges and (evaluation[0], bento) in edges
    promotion = [n for n in nodes if n.startswith(f"model_promotion[{WEEK}]@")]
    assert len(promotion) == 1 and (model, promotion[0]) in edges and (promotion[0], bento) in edges
    assert {e for pair in edges for e in pair} <= nodes
    # the same graph is in the JSON
    drawn = {n["id"] for layer in written.evidence.graph["layers"] for n in layer["nodes"]}
    assert drawn == nodes
    assert [layer["name"] for layer in written.evidence.graph["layers"]] == [
        "raw",
        "validated",
        "features",
        "model",
        "decisions",
        "bento",
        "deployment",
    ]


def test_gates_and_metrics_are_the_recorded_ones(lineage_world, written):
    recorded = latest(lineage_world.instance, "model_evaluation", WEEK).metadata
    (gates,) = written.evidence.checks["gates"]
    assert gates["gates"] == recorded[keys.EVALUATION_GATES].value
    assert gates["passed"] is recorded[keys.EVALUATION_PASSED].value is True
    assert {c["name"]: c["passed"] for c in gates["asset_checks"]} == {
        g["name"]: g["passed"] for g in recorded[keys.EVALUATION_GATES].value
    }
    (evaluation,) = written.evidence.metrics["evaluations"]
    table = {row["metric"]: row for row in evaluation["table"]}
    assert set(table) >= {"mae", "rmse", "roc_auc", "pr_auc", "brier"}
    for metric, row in table.items():
        assert row["model"] == recorded[f"evaluation/model_{metric}"].value
        assert row["baseline"] == recorded[f"evaluation/baseline_{metric}"].value
        assert row["champion"] is None  # v1 was the first version: no champion to compare, none invented
    assert any("no champion metrics recorded" in n for n in written.evidence.metrics["notes"])
    # asset checks of every partition, counted: all recorded and passed in this world
    assets = {a["asset"]: a for a in written.evidence.checks["assets"]}
    assert assets["flight_features"]["partitions"] == 14
    assert {
        c["name"]: (c["passed"], c["failed"], c["not_recorded"]) for c in assets["flight_features"]["checks"]
    } == {
        "no_look_ahead": (14, 0, 0),
        "complete": (14, 0, 0),
        "targets_consistent": (14, 0, 0),
    }
    chain = written.evidence.chain
    for layer in ("raw", "validated", "features"):
        for node in chain[layer]:
            asset = assets[node["materialization"]["asset"]]
            assert all(
                c["passed"] + c["failed"] + c["not_recorded"] == asset["partitions"] for c in asset["checks"]
            )
    failed = sorted(
        (n["materialization"]["asset"], n["materialization"]["partition"], c["name"])
        for layer in ("raw", "validated", "features")
        for n in chain[layer]
        for c in n["checks"]
        if c["passed"] is False
    )
    listed = sorted((a["asset"], f["partition"], f["check"]) for a in assets.values() for f in a["failures"])
    assert listed == failed
    assert sum(c["failed"] for a in assets.values() for c in a["checks"]) == len(failed)
    assert assets["raw_flights"]["checks"] == []


def test_the_audit_events_are_the_audit_logs(lineage_world, written):
    w = lineage_world
    logged = AuditLog(w.settings.audit_table).events(MODEL)
    approvals = written.evidence.approvals
    assert approvals["verified"] is True and approvals["verify_error"] is None
    assert [
        {k: v for k, v in e.items() if k not in ("hash_ok", "approval")} for e in approvals["events"]
    ] == [json.loads(json.dumps(e.to_dict())) for e in logged]
    assert [(e["action"], e["actor"], e["approval"], e["hash_ok"]) for e in approvals["events"]] == [
        ("set_challenger", "policy:registration", False, True),
        ("promote", "policy:automatic", True, True),
    ]
    assert approvals["deployment"]["log_verified"] is True
    assert [(e["action"], e["actor"]) for e in approvals["deployment"]["events"]] == [
        ("deploy", "supervisor:test")
    ]
    for e in approvals["events"]:
        assert e["event_hash"][:16] in written.html and e["actor"] in written.html


def test_reproduce_lists_exactly_the_pins_the_model_recorded(lineage_world, written):
    recorded = latest(lineage_world.instance, "delay_model", WEEK).metadata
    r = written.evidence.reproduce
    assert [p["recorded"] for p in r["pins"]] == json.loads(json.dumps(recorded[keys.LINEAGE_UPSTREAM].value))
    assert (r["mlflow_run_id"], r["git_commit"], r["code_version"]) == (
        recorded[keys.MLFLOW_RUN_ID].value,
        recorded[keys.LINEAGE_GIT_COMMIT].value,
        recorded[keys.LINEAGE_CODE_VERSION].value,
    )
    features = {n["id"]: n for n in written.evidence.chain["features"]}
    for pin in r["pins"]:
        node = features[pin["materialization"]]
        assert node["storage"]["content_hash"] == pin["recorded"]["content_hash"]
        assert pin["data_version"] == node["materialization"]["data_version"]
    # the fixture re-ingested 2013-01-10 (other content) and rematerialized the feature days 10 and 11
    # afterwards: the day 10 pin is no longer the latest, the day 11 one only if its content changed
    now = {
        p["recorded"]["partition"]: latest(
            lineage_world.instance, "flight_features", p["recorded"]["partition"]
        )
        for p in r["pins"]
    }
    expected = sorted(
        day
        for day, mat in now.items()
        if (mat.metadata[keys.STORAGE_TABLE_VERSION].value, mat.metadata[keys.STORAGE_CONTENT_HASH].value)
        != next(
            (p["recorded"]["table_version"], p["recorded"]["content_hash"])
            for p in r["pins"]
            if p["recorded"]["partition"] == day
        )
    )
    stale = sorted(p["recorded"]["partition"] for p in r["pins"] if p["still_latest"] is False)
    assert SHIFTED_DAY in stale and stale == expected
    assert all(p["still_latest"] is True for p in r["pins"] if p["recorded"]["partition"] not in stale)
    commands = {c["command"]: c for c in r["commands"]}
    assert commands[f"mlp reproduce {lineage_world.version}"]["status"] == "available"
    dagster = commands[
        f"dagster asset materialize -m ml_platform.definitions --select delay_model --partition {WEEK}"
    ]
    assert dagster["status"] == "equivalent" and "flight_features[2013-01-10]" in dagster["note"]
    # the recorded commit is "test" here: the bundle does not pretend it is checkout-able
    assert not any(c.startswith("git checkout") for c in commands)
    assert any("is not a git object name" in n for n in r["notes"])
    assert r["params"] and r["params"] == written.evidence.chain["mlflow_run"]["params"]
    assert len(r["holdout_pins"]) == 7
    for pin in r["pins"]:
        assert pin["recorded"]["content_hash"] in written.html


def test_profiles_and_drift_recorded_and_not_recorded_are_said_so(written, lineage_world):
    # the world profiles every feature day before training and judges LOG_DAY's drift against v1,
    # but no drift_report of a training day was recorded before the model trained
    data = written.evidence.data
    profiles = data["profiles"]
    assert profiles["training_days"] == 14 and profiles["recorded"] == 14 and profiles["not_recorded"] == []
    assert profiles["note"] == (
        "every one of the 14 training days has a recorded profile of the version trained on"
    )
    window = data["drift_training_window"]
    assert window["entries"] == [] and window["note"].startswith(f"not recorded: no {DRIFT} of the training")
    (judged,) = data["drift_against_this_model"]["entries"]
    assert judged["partition"] == LOG_DAY and str(judged["model_version"]) == lineage_world.version
    assert data["drift_against_this_model"]["note"].startswith(f"1 {DRIFT} materialization(s) judged")
    assert html.escape(profiles["note"]) in written.html and html.escape(window["note"]) in written.html
    (flights, weather) = data["quarantine"]
    assert (flights["asset"], weather["asset"]) == ("validated_flights", "validated_weather")
    assert flights["not_recorded"] == 0 and flights["partitions"] > 0


def test_the_json_validates_and_round_trips(written):
    data = json.loads(written.json_path.read_text(encoding="utf-8"))
    assert validate(data) == []
    assert Evidence.from_dict(data) == written.evidence
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    broken = {**data, "complete": "yes", "reproduce": {**data["reproduce"], "pins": [{"recorded": {}}]}}
    errors = validate(broken)
    assert any(e.startswith("$.complete") for e in errors) and any("$.reproduce.pins[0]" in e for e in errors)
    with pytest.raises(ValueError, match="not an evidence bundle"):
        Evidence.from_dict(broken)


def test_every_text_is_escaped_and_an_incomplete_chain_is_shown_first(written):
    evil = "<script>alert('x')</script>"
    ev = dataclasses.replace(
        written.evidence,
        model={**written.evidence.model, "name": evil},
        complete=False,
        missing=[
            {
                "hop": "bento",
                "ref": evil,
                "reason": "not <b>recorded</b>",
                "candidates": [],
                "on_path": True,
                "missing": True,
            }
        ],
    )
    page = render_html(ev, "0" * 64, "x.json")
    assert "<script" not in page and "&lt;script&gt;" in page and "not &lt;b&gt;recorded" in page
    assert page.index("Lineage chain INCOMPLETE") < page.index('id="graph"')
    assert "MISSING bento" in page
    assert "script" not in {t for t, _ in _parse(page).tags}


# ---------------------------------------------------------------------------------------- CLI


def _paths(output: str) -> dict[str, Path]:
    return {
        line.split(": ", 1)[0]: Path(line.split(": ", 1)[1].strip())
        for line in output.splitlines()
        if line.startswith(("HTML: ", "JSON: "))
    }


def test_mlp_evidence_writes_both_files(lineage_world, runner, tmp_path):
    w = lineage_world
    result = runner.invoke(app, ["evidence", f"v{w.version}", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    paths = _paths(result.output)
    assert paths["HTML"].parent == paths["JSON"].parent == tmp_path / "out"
    assert paths["HTML"].is_file() and paths["JSON"].is_file()
    assert "lineage complete" in result.output
    data = json.loads(paths["JSON"].read_text())
    assert validate(data) == [] and data["model"]["version"] == w.version
    assert hashlib.sha256(paths["JSON"].read_bytes()).hexdigest() in paths["HTML"].read_text()

    default = runner.invoke(app, ["evidence", "champion"])
    assert default.exit_code == 0, default.output
    assert _paths(default.output)["JSON"].parent == w.settings.storage_root / "evidence"


@pytest.mark.parametrize(
    ("version", "says"),
    [("42", "no such version"), ("sideways", "has no alias 'sideways'")],
)
def test_an_unknown_version_exits_1_with_a_message(runner, version, says):
    result = runner.invoke(app, ["evidence", version])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "is not a known model version or alias" in text and says in text, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# ------------------------------------------------------------------ recorded profiles and drift


def test_the_monitoring_names_are_the_assets_own():
    from ml_platform.defs.monitoring import assets as monitoring
    from ml_platform.lineage import evidence as ev_module

    assert (PROFILES, DRIFT) == (monitoring.FEATURE_PROFILES, monitoring.DRIFT)
    for name in (
        "DRIFT_SEVERITY",
        "DRIFT_ERRORS",
        "DRIFT_WARNINGS",
        "DRIFT_MODEL_VERSION",
        "DRIFT_MODEL_PARTITION",
        "DRIFT_REFERENCE",
    ):
        assert getattr(ev_module, name) == getattr(monitoring, name), name


def test_recorded_profiles_and_drift_of_the_training_window_are_read_back():
    """Profiles and drift reports as the monitoring assets record them, on a bare instance (fast)."""
    import dagster as dg

    from ml_platform.lineage import evidence as ev_module
    from ml_platform.lineage import records as rec
    from ml_platform.lineage.model import LineageChain, Start

    def pin(day: str, version: int, content: str) -> dict[str, Any]:
        return {
            "table": "flight_features",
            "partition": day,
            "table_version": version,
            "content_hash": content,
            "row_count": 10,
            "files": [],
        }

    def report(asset: str, partition: str, **metadata: Any) -> None:
        values = {
            k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v for k, v in metadata.items()
        }
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=partition, metadata=values)
        )

    temp = {
        "feature": "temp",
        "kind": "numeric",
        "severity": "error",
        "scores": {"mean_shift": 6.08},
        "thresholds": {"mean_shift": {"warn": 3, "error": 5}},
        "reference_rows": 10,
        "current_rows": 10,
    }
    with dg.DagsterInstance.ephemeral() as instance:
        trained = [pin("2013-01-07", 3, "aaa"), pin("2013-01-08", 4, "bbb")]
        # day 7 profiled at the version trained on; day 8 only at another content
        report(
            PROFILES,
            "2013-01-07",
            **{
                "profile/columns": 12,
                "profile/rows": 10,
                "profile/bytes": 999,
                keys.STORAGE_TABLE_VERSION: 1,
                keys.STORAGE_CONTENT_HASH: "p7",
                keys.LINEAGE_UPSTREAM: [trained[0]],
            },
        )
        report(
            PROFILES,
            "2013-01-08",
            **{"profile/columns": 12, keys.LINEAGE_UPSTREAM: [pin("2013-01-08", 9, "zzz")]},
        )
        report(
            DRIFT,
            "2013-01-08",
            **{
                "drift/severity": "error",
                "drift/model_version": "0",
                "drift/reference_window": "2012-12-24..2013-01-06",
                "drift/features_error": [temp],
                "drift/features_warn": [],
            },
        )
        report(
            "delay_model", "2013-01-21", **{keys.MLFLOW_MODEL_VERSION: "1", keys.LINEAGE_UPSTREAM: trained}
        )
        report(
            DRIFT,
            "2013-01-22",
            **{
                "drift/severity": "ok",
                "drift/model_version": "1",
                "drift/reference_window": "2013-01-07..2013-01-08",
                "drift/features_error": [],
                "drift/features_warn": [],
            },
        )
        builder = ev_module._Builder.__new__(ev_module._Builder)
        builder.instance = instance
        builder.chain = LineageChain(Start("version", "1", f"{MODEL} v1"), MODEL)
        builder.model = builder.run = None
        builder.evaluations, builder.eval_records = [], []
        (builder.model_record,) = rec.fetch(instance, "delay_model")
        pins = builder._pins()
        data = builder._data(pins)

    assert [p["recorded"] for p in pins] == trained
    profiles = data["profiles"]
    assert (profiles["recorded"], profiles["not_recorded"]) == (1, ["2013-01-08"])
    (entry,) = profiles["entries"]
    assert (entry["partition"], entry["columns"], entry["rows"], entry["before_training"]) == (
        "2013-01-07",
        12,
        10,
        True,
    )
    assert profiles["note"] == "1 of 2 training days have a recorded profile of the version trained"
    (before,) = data["drift_training_window"]["entries"]
    assert (before["partition"], before["severity"], before["model_version"]) == ("2013-01-08", "error", "0")
    assert before["errors"] == [
        {"feature": "temp", "severity": "error", "describe": "temp mean_shift 6.08 (warn 3, error 5)"}
    ]
    (after,) = data["drift_against_this_model"]["entries"]
    assert (after["partition"], after["severity"]) == ("2013-01-22", "ok")
    assert data["drift_against_this_model"]["severity_counts"] == {"ok": 1}


# ------------------------------------------------------------------- is `mlp reproduce` there?


def test_a_cli_that_fails_to_import_is_an_error_not_a_missing_command(monkeypatch):
    """Only a CLI module that is not installed makes `mlp reproduce` "not there"; a CLI that is there
    and cannot be imported (here: its dependency typer is broken) is an error naming the cause."""
    import sys

    from ml_platform.lineage import evidence as ev_module

    assert ev_module._has_command("reproduce") is True
    monkeypatch.delitem(sys.modules, "ml_platform.cli")
    monkeypatch.setitem(sys.modules, "typer", None)  # `import typer` now fails inside ml_platform.cli
    with pytest.raises(RuntimeError, match=r"cannot tell whether `mlp reproduce` is available") as caught:
        ev_module._has_command("reproduce")
    assert "importing ml_platform.cli failed: ModuleNotFoundError" in str(caught.value)
    assert "typer" in str(caught.value) and isinstance(caught.value.__cause__, ImportError)

    monkeypatch.setitem(sys.modules, "ml_platform.cli", None)  # the module itself is not there
    assert ev_module._has_command("reproduce") is False

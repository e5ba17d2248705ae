"""`mlp demo` end to end, as `make demo` runs it, twice: the second run is incremental."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mlp(*args: str, root: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env.update({"MLP_ROOT_DIR": str(root), "COLUMNS": "200"})
    env.update({f"MLP_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [str(Path(sys.executable).with_name("mlp")), *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_demo_runs_then_is_incremental(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    first = _mlp("demo", "--start", "2013-01-01", "--end", "2013-01-03", root=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 already up to date, 3 to run" in first.stdout
    summary = json.loads((tmp_path / "storage" / "demo_summary.json").read_text())
    by_asset = {s["asset"]: s for s in summary}
    assert by_asset["flight_features"]["partitions"] == 3
    assert by_asset["flight_features"]["rows"] == by_asset["validated_flights"]["rows"] > 2000
    assert len(by_asset["raw_flights"]["data_versions"]) == 3
    assert (tmp_path / ".dagster" / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()

    second = _mlp("demo", "--start", "2013-01-01", "--end", "2013-01-04", root=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "3 already up to date, 1 to run" in second.stdout
    again = {s["asset"]: s for s in json.loads((tmp_path / "storage" / "demo_summary.json").read_text())}
    for asset, before in by_asset.items():
        for day, version in before["data_versions"].items():
            assert again[asset]["data_versions"][day] == version, (asset, day)


def test_demo_rejects_a_bad_date_with_a_clear_message(tmp_path):
    out = _mlp("demo", "--start", "2013-13-01", root=tmp_path)
    assert out.returncode != 0
    assert "--start must be YYYY-MM-DD" in out.stdout + out.stderr


def test_replay_without_history_says_what_to_run_first(tmp_path):
    out = _mlp("replay", "--start", "2013-04-01", "--end", "2013-04-02", root=tmp_path)
    assert out.returncode == 1
    text = " ".join((out.stdout + out.stderr).split())
    assert "flight_features[2013-03-31] is not materialized" in text
    assert "mlp demo --end 2013-03-31" in text


def test_replay_rejects_a_bad_injected_shift(tmp_path):
    out = _mlp("replay", "--inject", "2013-04-10:temp+15F", root=tmp_path)
    assert out.returncode != 0
    assert "unknown spec 'temp+15F'" in " ".join((out.stdout + out.stderr).split())


@pytest.mark.slow
@pytest.mark.live  # the demo serves the champion's Bento (bentoml serve) before its lineage
def test_demo_trains_evaluates_and_promotes_model_weeks_and_prints_the_champion_lineage(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    small = {
        "training_window_weeks": "2",
        "validation_days": "3",
        "hpo_trials": "2",
        "max_epochs": "4",
        "gate_metrics": '["roc_auc"]',
    }
    # the replay after the models has its own test (defs/test_monitoring_graph.py)
    out = _mlp(
        "demo", "--start", "2013-01-01", "--end", "2013-02-03", "--replay-days", "0", root=tmp_path, **small
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "weekly_model_job: weeks 2013-01-21, 2013-01-28; 0 up to date, 2 to train" in out.stdout
    assert "week 2013-01-21: ok" in out.stdout
    assert "Champion: delay_model v" in out.stdout
    lineage = json.loads((tmp_path / "storage" / "champion_lineage.json").read_text())
    assert "champion" in lineage["aliases"]
    assert lineage["tags"]["dagster.asset_key"] == "delay_model"
    week = lineage["tags"]["dagster.partition"]
    assert week in {"2013-01-21", "2013-01-28"}
    # model version -> MLflow run -> the 14 feature days before its week, with Delta and data versions
    assert len(lineage["datasets"]) == 14
    first, context, delta_version, data_version = lineage["datasets"][0]
    assert context == "training" and int(delta_version) >= 0 and len(data_version) == 64
    assert first.startswith("flight_features[2013-01-")
    # ... and the OpenLineage run events of everything it materialized, each valid
    from ml_platform.lineage.openlineage.validate import validate_lines

    events_file = tmp_path / "storage" / "openlineage" / "events.jsonl"
    said = re.search(r"OpenLineage: (\d+) run events of (\d+) materializations", out.stdout)
    assert said and int(said[1]) == 2 * int(said[2]) > 0, out.stdout
    checked = list(validate_lines(events_file))
    assert len(checked) == int(said[1]) and not [p for _, _, p in checked if p]
    models = [
        e for _, e, _ in checked if e and e["job"]["name"] == "delay_model" and e["eventType"] == "COMPLETE"
    ]
    assert {e["run"]["facets"]["mlp_model"]["version"] for e in models} == {"1", "2"}

    again = _mlp(
        "demo", "--start", "2013-01-01", "--end", "2013-02-03", "--replay-days", "0", root=tmp_path, **small
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 up to date, 0 to train" in again.stdout
    # the cursor: nothing is exported twice
    said_again = re.search(r"OpenLineage: (\d+) run events", again.stdout)
    assert said_again, again.stdout
    assert len(events_file.read_text().splitlines()) == int(said[1]) + int(said_again[1])

    audit = _mlp("audit", root=tmp_path, **small)
    assert audit.returncode == 0 and "hash chain verified" in audit.stdout, audit.stdout + audit.stderr


def test_registry_commands_explain_when_no_model_is_registered_yet(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ml_platform.cli import app

    for name in [n for n in os.environ if n.startswith("MLP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLP_ROOT_DIR", str(tmp_path))
    runner = CliRunner()
    for command in (
        ["champion"],
        ["rollback", "--by", "bob"],
        ["promote", "--version", "1", "--approver", "al"],
    ):
        out = runner.invoke(app, command)
        assert out.exit_code == 1, (command, out.output)
        assert "delay_model is not registered in sqlite:///" in out.output, (command, out.output)
        assert "train a model week first" in out.output
    listing = runner.invoke(app, ["audit"])
    assert listing.exit_code == 0 and "0 events, hash chain verified" in listing.output, listing.output

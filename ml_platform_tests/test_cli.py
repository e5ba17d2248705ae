"""`mlp demo` end to end, as `make demo` runs it, twice: the second run is incremental."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.lib.metadata import LINEAGE_GIT_COMMIT
from ml_platform_tests.conftest import latest

ROOT = Path(__file__).resolve().parents[1]


def _head() -> str:
    """The checkout's HEAD commit."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


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
def test_demo_runs_then_is_incremental(tmp_path, monkeypatch):
    # the root is outside the checkout and has no dagster.yaml: the instance gets the checkout's,
    # and the runs record the checkout's commit (no MLP_GIT_COMMIT), not "unavailable"
    heads = {_head()}
    first = _mlp("demo", "--start", "2013-01-01", "--end", "2013-01-03", root=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 already up to date, 3 to run" in first.stdout
    summary = json.loads((tmp_path / "storage" / "demo_summary.json").read_text())
    by_asset = {s["asset"]: s for s in summary}
    assert by_asset["flight_features"]["partitions"] == 3
    assert by_asset["flight_features"]["rows"] == by_asset["validated_flights"]["rows"] > 2000
    assert len(by_asset["raw_flights"]["data_versions"]) == 3
    assert (tmp_path / ".dagster" / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()
    assert "telemetry" not in first.stdout + first.stderr  # Dagster's notice, without the file
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))  # the storage's base_dir
    instance = dg.DagsterInstance.from_config(str(tmp_path / ".dagster"))
    commit = latest(instance, "raw_flights", "2013-01-01").metadata[LINEAGE_GIT_COMMIT].value
    assert str(commit).removesuffix("-dirty") in heads | {_head()}  # HEAD as the run started or now

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
    said = re.search(
        r"OpenLineage: (\d+) new run events of (\d+) materializations.* the file holds (\d+) events in all",
        out.stdout,
    )
    assert said and int(said[1]) == 2 * int(said[2]) > 0, out.stdout
    checked = list(validate_lines(events_file))
    assert len(checked) == int(said[1]) == int(said[3]) and not [p for _, _, p in checked if p]
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
    said_again = re.search(r"OpenLineage: (\d+) new run events.* the file holds (\d+) events", again.stdout)
    assert said_again, again.stdout
    in_file = len(events_file.read_text().splitlines())
    assert in_file == int(said[1]) + int(said_again[1]) == int(said_again[2])

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


# ------------------------------------------------------------------------------- every --help


def _commands() -> list[tuple[list[str], object]]:
    """Every command and sub-command of `mlp` (the group itself included), by its argv path."""
    import typer

    from ml_platform.cli import app

    found: list[tuple[list[str], object]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_help_text_reaches_the_rendered_help_as_written():
    """typer renders help with rich markup: `[start, end]` in a help text is taken for a style tag and
    vanishes ("for each day of , then"). Every bracket of every help text must be on screen."""
    from rich.text import Text
    from typer.testing import CliRunner

    from ml_platform.cli import app

    runner = CliRunner()
    commands = _commands()
    assert {"demo", "deploy release", "openlineage export", "evidence"} <= {" ".join(p) for p, _ in commands}
    for path, command in commands:
        texts = [getattr(command, "help", None) or ""]
        texts += [getattr(p, "help", None) or "" for p in getattr(command, "params", [])]
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert result.exit_code == 0, (path, result.output)
        shown = " ".join(result.output.replace("│", " ").split())
        for text in texts:
            where = f"mlp {' '.join(path)}: {text!r}"
            assert Text.from_markup(text).plain == text, f"{where} is changed by rich markup"
            for bracket in re.findall(r"\[[^\]]*\]", text):
                assert " ".join(bracket.split()) in shown, f"{where}: {bracket} is not in its --help"


# ------------------------------------------------------------------- the data root elsewhere


def _bare_env(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    for name in [n for n in os.environ if n.startswith(("MLP_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLP_ROOT_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(root / ".dagster"))  # restored after the test


def test_a_root_outside_the_checkout_gets_the_checkouts_instance_configuration(tmp_path, monkeypatch):
    from ml_platform.instance import open_instance
    from ml_platform.settings import PlatformSettings

    root = tmp_path / "elsewhere"  # no dagster.yaml here: only the code has one
    _bare_env(monkeypatch, root)
    settings = PlatformSettings()
    instance = open_instance(settings)
    written = root / ".dagster" / "dagster.yaml"
    assert written.read_bytes() == (ROOT / "dagster.yaml").read_bytes()
    # what that file asks for is what the instance runs with (no telemetry notice, a run queue limit)
    assert instance.get_settings("telemetry") == {"enabled": False}
    assert instance.run_monitoring_enabled
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2

    # a root with its own dagster.yaml keeps it
    (root / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    open_instance(settings)
    assert written.read_text(encoding="utf-8") == "telemetry:\n  enabled: false\n"


def test_the_commit_is_read_where_the_code_lives(tmp_path, monkeypatch):
    """The default is the checkout of the package; the demo test checks what a run records."""
    from ml_platform.lib.versioning import git_commit

    assert git_commit().removesuffix("-dirty") == _head()
    assert git_commit(tmp_path) == "unavailable"  # not a checkout
    (tmp_path / "sub").mkdir()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(
        ["git", "-C", str(tmp_path), *author, "commit", "-q", "--allow-empty", "-m", "another project"],
        check=True,
    )
    assert git_commit(tmp_path / "sub") == "unavailable"  # inside some checkout, not the top of one

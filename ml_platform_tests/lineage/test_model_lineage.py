"""The model and its evaluation are recorded inputs of what the champion makes (#15 item 3).

``flight_delay_predictions``, ``drift_report`` and ``live_performance`` record in ``lineage/upstream``
the ``delay_model`` materialization (partition, Dagster run, registered version) that made them,
``live_performance`` also the ``model_evaluation`` it compared with; Dagster's graph has the edges;
the OpenLineage export turns the references into inputs.
"""

from __future__ import annotations

import dagster as dg
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.lineage import records as rec
from ml_platform.lineage.openlineage.config import OpenLineageConfig
from ml_platform.lineage.openlineage.export import export_openlineage, partitions_of
from ml_platform_tests.lineage.conftest import LOG_DAY, MODEL, WEEK, LineageWorld

pytestmark = pytest.mark.slow

CHAMPION_MADE = ("flight_delay_predictions", "drift_report", "live_performance")


def _newest(world: LineageWorld, asset: str, partition: str) -> dg.EventLogRecord:
    found = rec.fetch(world.instance, asset, partitions=[partition])
    assert found, f"{asset}[{partition}] has no materialization"
    return found[-1]


@pytest.mark.parametrize("asset", CHAMPION_MADE)
def test_the_model_that_made_the_day_is_a_recorded_upstream(lineage_world: LineageWorld, asset: str):
    w = lineage_world
    model = _newest(w, "delay_model", WEEK)
    entries = rec.upstream_entries(_newest(w, asset, LOG_DAY)) or []
    assert [e for e in entries if e.get("asset") == "delay_model"] == [
        {
            "asset": "delay_model",
            "partition": WEEK,
            "run_id": model.run_id,
            "registered_model": MODEL,
            "model_version": w.version,
            "role": "model",
        }
    ]


def test_live_performance_pins_the_evaluation_of_that_model_run(lineage_world: LineageWorld):
    w = lineage_world
    evaluation = _newest(w, "model_evaluation", WEEK)
    # the evaluation read exactly the model's run: that is how the judgement chose it
    model = _newest(w, "delay_model", WEEK)
    assert {(e.get("asset"), e.get("run_id")) for e in rec.upstream_entries(evaluation) or []} >= {
        ("delay_model", model.run_id)
    }
    entries = rec.upstream_entries(_newest(w, "live_performance", LOG_DAY)) or []
    assert [e for e in entries if e.get("asset") == "model_evaluation"] == [
        {
            "asset": "model_evaluation",
            "partition": WEEK,
            "run_id": evaluation.run_id,
            "model_version": w.version,
            "role": "evaluation",
        }
    ]


def test_the_graph_links_the_model_to_what_the_champion_makes(lineage_world: LineageWorld):
    graph = build_definitions(lineage_world.settings).resolve_asset_graph()
    for asset in CHAMPION_MADE:
        assert dg.AssetKey("delay_model") in graph.get(dg.AssetKey(asset)).parent_keys, asset
    assert dg.AssetKey("model_evaluation") in graph.get(dg.AssetKey("live_performance")).parent_keys
    # a day is made by whichever week is champion: every week maps to it, none is "its" week
    mapping = graph.get_partition_mapping(dg.AssetKey("flight_delay_predictions"), dg.AssetKey("delay_model"))
    assert isinstance(mapping, dg.AllPartitionMapping)


def test_a_prediction_event_has_the_model_among_its_inputs(lineage_world: LineageWorld, tmp_path):
    w = lineage_world
    config = OpenLineageConfig.from_settings(w.settings, state_dir=tmp_path).with_transport("file")
    export_openlineage(w.instance, config, partitions=partitions_of(build_definitions(w.settings)))
    import json

    events = [json.loads(line) for line in config.events_file.read_text().splitlines() if line.strip()]
    model = _newest(w, "delay_model", WEEK)
    (model_event,) = [
        e
        for e in events
        if e["job"]["name"] == "delay_model"
        and e["eventType"] == "COMPLETE"
        and e["run"]["facets"]["mlp_materialization"].get("dagsterRunId") == model.run_id
    ]
    model_outputs = {(o["namespace"], o["name"]) for o in model_event["outputs"]}
    for asset in CHAMPION_MADE:
        (complete,) = [
            e
            for e in events
            if e["job"]["name"] == asset
            and e["eventType"] == "COMPLETE"
            and e["run"]["facets"]["mlp_materialization"].get("partition") == LOG_DAY
        ]
        inputs = {(i["namespace"], i["name"]) for i in complete["inputs"]}
        assert model_outputs <= inputs, (asset, inputs)

"""``flight_delay_predictions``: the champion's predictions for every scheduled flight of the day."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.monitoring.assets import find_champion, ignoring_models, model_dep
from ml_platform.defs.publish import RecordedVersions, describe, partition_metadata, read_pinned
from ml_platform.lib import metadata as keys
from ml_platform.lib.features.transforms import KEY_COLUMNS
from ml_platform.lib.storage import PARTITION_COLUMN
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import MlflowResource, VersionedStoreResource

NAME = "flight_delay_predictions"
FEATURES = "flight_features"
#: Prediction columns next to the flight's key columns.
PREDICTION_COLUMNS = ("predicted_arr_delay", "delay_probability", "model_version", "model_partition")
#: Loaded model versions, by (tracking URI, name, version): a replay scores many days with one.
_MODELS: dict[tuple[str, str, str], Any] = {}


def load_version(tracking_uri: str, model_name: str, version: str) -> Any:
    """The registered version as a ``DelayModel`` (cached per process)."""
    from ml_platform.lib.training.tracking import load_model

    key = (tracking_uri, model_name, version)
    if key not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.clear()
        _MODELS[key] = load_model(tracking_uri, model_name, version)
    return _MODELS[key]


def build_prediction_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The batch-scoring asset."""
    parts = build.partitioning

    @dg.asset(
        name=NAME,
        group_name="predictions",
        kinds={"torch", "mlflow", "delta"},
        op_tags=k8s_tags(NAME, "medium", model=DELAY_MODEL),
        deps=[FEATURES, model_dep()],
        partitions_def=parts.daily,
        output_required=False,  # no champion yet: nothing to score with, nothing published
        code_version=code_version_of_names(
            "ml_platform.lib.training.pyfunc", "ml_platform.lib.training.data"
        ),
        automation_condition=ignoring_models(build.automation),
        description=(
            "Batch scoring: the champion's predicted arrival delay (minutes) and probability of a"
            " delay over 15 minutes for every scheduled flight of the day, from the day's"
            " flight_features (inputs known before departure only), with the model version that"
            " made them (recorded in lineage/upstream: the delay_model materialization of the"
            " champion). Live performance joins them with the day's actuals."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        mlflow_registry: MlflowResource,
    ) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
        partition = context.partition_key
        champion = find_champion(context.instance, mlflow_registry)
        if champion is None:
            context.log.warning(f"{NAME}[{partition}]: no champion model yet, nothing to score with; skipped")
            return
        store = versioned_store.store()
        (pin,) = RecordedVersions(
            context.instance, dg.AssetKey(FEATURES), [partition], table=FEATURES
        ).require([partition])
        # in key order: a partition's rows come back in the order they were written, and the scores
        # (batched float arithmetic) and the data version must not depend on it
        features = read_pinned(store, [pin]).drop(PARTITION_COLUMN).sort(KEY_COLUMNS)
        model = load_version(mlflow_registry.tracking_uri, mlflow_registry.model_name, champion.version)
        try:
            delay, probability = model.predict_frame(features)
        except Exception as exc:
            raise dg.Failure(
                f"{NAME}[{partition}]: v{champion.version} could not score {features.height} rows: {exc}"
            ) from exc
        frame = features.select(*KEY_COLUMNS).with_columns(
            pl.Series("predicted_arr_delay", delay, dtype=pl.Float64),
            pl.Series("delay_probability", probability, dtype=pl.Float64),
            pl.lit(champion.version).alias("model_version"),
            pl.lit(champion.partition).alias("model_partition"),
        )
        published = RecordedVersions(context.instance, context.asset_key, [partition], table=NAME)
        version = store.write_partition(NAME, partition, frame, unless_same_as=published.get(partition))
        code_version = context.assets_def.code_versions_by_key[context.asset_key] or ""
        metadata = partition_metadata(
            version,
            frame,
            table_uri=store.table_uri(NAME),
            upstream=[pin],
            code_version=code_version,
            build=build.build,
            extra={
                keys.MLFLOW_MODEL_NAME: mlflow_registry.model_name,
                keys.MLFLOW_MODEL_VERSION: champion.version,
                keys.MLFLOW_MODEL_URI: f"models:/{mlflow_registry.model_name}/{champion.version}",
                "predictions/model_partition": champion.partition,
                "predictions/mean_delay_minutes": float(frame["predicted_arr_delay"].mean()),  # type: ignore[arg-type]
                "predictions/mean_delay_probability": float(frame["delay_probability"].mean()),  # type: ignore[arg-type]
            },
        )
        # the model is an input like the features: the delay_model materialization that made it
        metadata[keys.LINEAGE_UPSTREAM] = dg.MetadataValue.json(
            [*metadata[keys.LINEAGE_UPSTREAM].value, champion.upstream()]
        )
        context.log.info(
            f"{NAME}[{partition}]: {frame.height} flights, v{champion.version} -> {describe(version)}"
        )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(version.data_version),
            metadata=metadata,
        )

    return [_asset]

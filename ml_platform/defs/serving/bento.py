"""``delay_bento``: the ``delay_service`` Bento of the week's model version, once it passed its gates.

Weekly, like ``delay_model``: ``delay_bento[W]`` builds the Bento of the version that
``delay_model[W]`` registered, read from the recorded materializations (never "the latest
version"). It depends on ``model_promotion[W]``, which runs only after ``model_evaluation[W]``'s
blocking gates pass, so in ``weekly_model_job`` a rejected week builds no Bento. Run on its own,
the asset checks the same records and fails, naming the reason, when the week's version was not
evaluated, failed a gate, or has no promotion decision (``promote``, or ``await_approval`` under
the manual policy: a challenger gets its Bento too, for a canary). Nothing is published then.

Lineage: Bento tag -> model version -> MLflow run -> the feature pins of ``delay_model[W]``.
"""

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import dagster as dg

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.evaluation.assets import NAME as EVALUATION
from ml_platform.defs.evaluation.assets import recorded_model
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.publish import latest_materializations
from ml_platform.defs.registry.assets import NAME as PROMOTION
from ml_platform.lib import metadata as keys
from ml_platform.lib.metadata import (  # the bento/* keys, re-exported for the callers of this module
    BENTO_BUILD_SECONDS,
    BENTO_BUILT_AT,
    BENTO_HOME,
    BENTO_LABELS,
    BENTO_MODEL_TAG,
    BENTO_PATH,
    BENTO_REUSED,
    BENTO_SOURCE_FILES,
    BENTO_TAG,
)
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import MlflowResource

NAME: Final = "delay_bento"
MODEL: Final = "delay_model"
#: What decides the Bento's content: a change rebuilds it.
MODULES: Final = (
    "ml_platform.lib.serving.bento",
    "ml_platform.lib.serving.packaging",
    "ml_platform.serving.service",
)
#: Decisions of model_promotion that leave a version servable (champion, or challenger awaiting approval).
SERVABLE_DECISIONS: Final = frozenset({"promote", "await_approval"})

LOCK_SHA256: Final = "python/lock_sha256"
LOCK_PINS: Final = "python/lock_pins"
LOCK_TORCH: Final = "python/torch"
LOCK_DRIFT: Final = "python/installed_drift"
ALIASES_AT_BUILD: Final = "registry/aliases_at_build"


def build_bento_assets(
    build: AssetBuild, bentoml_home: Path, constraints: Path | None
) -> list[dg.AssetsDefinition]:
    """The Bento asset.

    Args:
        build: The shared factory inputs.
        bentoml_home: The platform's ``BENTOML_HOME`` (``settings.bentoml_home``): model store and Bentos.
        constraints: ``constraints.txt`` of the checkout, which the Bento's lock must agree with
            (None where the code runs from an installed image without it).
    """
    parts = build.partitioning

    @dg.asset(
        name=NAME,
        group_name="serving",
        kinds={"bentoml"},
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        deps=[PROMOTION],
        partitions_def=parts.weekly,
        code_version=code_version_of_names(*MODULES),
        description=(
            "The delay_service Bento (`bentoml build`, no Docker) of the model version that"
            " delay_model registered for the week, built only once model_evaluation's gates passed"
            " and model_promotion decided (champion, or a challenger awaiting approval). It holds the"
            " ml_platform source, the BentoML model packaged from the MLflow version, the argument"
            " model_tag and a Python lock (the service's runtime subset of constraints.txt, torch from"
            " the CPU index). Metadata: Bento tag and path, model tag, version and MLflow run, the"
            " lock's sha256. `mlp serve` serves the champion's Bento."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, mlflow_registry: MlflowResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        partition = context.partition_key
        where = f"{NAME}[{partition}]"
        version, model_record, upstream = _servable_version(context.instance, partition, where)
        model_meta = model_record.asset_materialization.metadata  # type: ignore[union-attr]
        run_id = str(model_meta[keys.MLFLOW_RUN_ID].value)
        # BentoML reads BENTOML_HOME when it is first imported; packaging imports it in this process
        if "bentoml" not in sys.modules:
            os.environ["BENTOML_HOME"] = str(bentoml_home)

        from ml_platform.lib.serving.bento import (
            BentoBuildError,
            bento_version,
            build_bento,
            model_digest,
            prepare_context,
            runtime_lock,
        )
        from ml_platform.lib.serving.packaging import PackagingError, package_version

        tracking_uri = mlflow_registry.tracking_uri
        model_name = mlflow_registry.model_name
        try:
            packaged = package_version(tracking_uri, model_name, version, models_dir=bentoml_home / "models")
        except PackagingError as exc:
            raise dg.Failure(f"{where}: {exc}") from exc
        if packaged.run_id != run_id:
            raise dg.Failure(
                f"{where}: {model_name} v{version} is from MLflow run {packaged.run_id}, but"
                f" {MODEL}[{partition}] recorded run {run_id}"
            )
        aliases = sorted(
            mlflow_registry.registry().client.get_model_version(model_name, version).aliases or []
        )
        labels = {
            "model_name": model_name,
            "model_version": version,
            "mlflow_run_id": run_id,
            "git_commit": build.build.git_commit,
            "dagster_run_id": context.run_id,
            "partition": partition,
        }
        try:
            lock = runtime_lock(constraints if constraints is not None and constraints.exists() else None)
            with tempfile.TemporaryDirectory(prefix="mlp-bento-") as tmp:
                prepared = prepare_context(
                    Path(tmp),
                    lock,
                    labels=labels,
                    description=f"Arrival delays of flights: {model_name} v{version} ({MODEL}[{partition}]).",
                )
                digest = _combined(prepared.digest, model_digest(packaged.path), packaged.tag)
                built = build_bento(
                    prepared, bentoml_home, model_tag=packaged.tag, version=bento_version(version, digest)
                )
        except BentoBuildError as exc:
            raise dg.Failure(f"{where}: {exc}") from exc
        if lock.drift:
            context.log.warning(
                f"{where}: this environment differs from constraints.txt ({'; '.join(lock.drift)});"
                " the Bento's lock keeps the resolved pins"
            )
        context.log.info(
            f"{where}: {built.tag} serves {packaged.describe()}"
            + (
                " (already built with the same content)"
                if built.reused
                else f", built in {built.build_seconds:.1f} s"
            )
        )
        labels_recorded = built.info.get("labels") or labels
        return dg.MaterializeResult(
            data_version=dg.DataVersion(built.tag),
            metadata={
                BENTO_TAG: built.tag,
                BENTO_PATH: dg.MetadataValue.path(str(built.path)),
                BENTO_HOME: dg.MetadataValue.path(str(bentoml_home)),
                BENTO_MODEL_TAG: packaged.tag,
                BENTO_LABELS: dg.MetadataValue.json(labels_recorded),
                BENTO_REUSED: built.reused,
                BENTO_BUILT_AT: str(built.info.get("creation_time") or datetime.now(UTC).isoformat()),
                BENTO_BUILD_SECONDS: round(built.build_seconds, 2),
                BENTO_SOURCE_FILES: prepared.source_files,
                keys.MLFLOW_MODEL_NAME: model_name,
                keys.MLFLOW_MODEL_VERSION: version,
                keys.MLFLOW_RUN_ID: run_id,
                **{k: model_meta[k] for k in (keys.MLFLOW_RUN_URL, keys.MLFLOW_MODEL_URL) if k in model_meta},
                ALIASES_AT_BUILD: dg.MetadataValue.json(aliases),
                LOCK_SHA256: lock.sha256,
                LOCK_PINS: len(lock.pins),
                LOCK_TORCH: f"torch=={lock.pins.get('torch', '?')} (CPU index)",
                LOCK_DRIFT: dg.MetadataValue.json(list(lock.drift)),
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(upstream),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            },
        )

    return [_asset]


def bento_record(instance: dg.DagsterInstance, model_name: str, version: str) -> dg.EventLogRecord | None:
    """The newest ``delay_bento`` materialization that built ``model_name`` v``version``; None if none did.

    What ``mlp serve`` serves for the champion (and what a deployment of a version reads): the
    recorded Bento tag of that version, never "the latest Bento".
    """
    cursor, limit = None, 20
    while True:
        page = instance.fetch_materializations(dg.AssetKey(NAME), limit=limit, cursor=cursor)
        for record in page.records:
            mat = record.asset_materialization
            meta = mat.metadata if mat is not None else {}
            recorded_version, recorded_name = (
                meta.get(keys.MLFLOW_MODEL_VERSION),
                meta.get(keys.MLFLOW_MODEL_NAME),
            )
            if (
                recorded_version is not None
                and str(recorded_version.value) == version
                and (recorded_name is None or str(recorded_name.value) == model_name)
            ):
                return record
        if not page.has_more:
            return None
        cursor, limit = page.cursor, 200


def _combined(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _servable_version(
    instance: dg.DagsterInstance, partition: str, where: str
) -> tuple[str, dg.EventLogRecord, list[dict[str, Any]]]:
    """The version ``delay_model[partition]`` registered, if its recorded gates passed and it was promoted.

    Returns the version, the model's record and the upstream records read (for ``lineage/upstream``).

    Raises:
        dg.Failure: naming why the version gets no Bento.
    """
    model_record = recorded_model(instance, partition)
    version = str(model_record.asset_materialization.metadata[keys.MLFLOW_MODEL_VERSION].value)  # type: ignore[union-attr]
    found = latest_materializations(instance, dg.AssetKey(EVALUATION), [partition]).get(partition)
    evaluation = found.asset_materialization.metadata if found is not None else {}  # type: ignore[union-attr]
    judged = evaluation.get(keys.MLFLOW_MODEL_VERSION)
    if found is None or judged is None or str(judged.value) != version:
        raise dg.Failure(
            f"{where}: {MODEL}[{partition}] registered v{version}, which {EVALUATION}[{partition}] has not"
            f" evaluated; materialize {EVALUATION}[{partition}] (and {PROMOTION}) first"
        )
    passed = evaluation.get(keys.EVALUATION_PASSED)
    if passed is None or passed.value is not True:
        gates = evaluation.get(keys.EVALUATION_GATES)
        failed = [g for g in (gates.value if gates is not None else []) if not g.get("passed")]  # type: ignore[union-attr]
        detail = "; ".join(f"{g.get('name')}: {g.get('detail', '')}" for g in failed) or "gates not passed"
        raise dg.Failure(
            f"{where}: v{version} failed its evaluation gates ({detail}): a rejected version gets no Bento",
            metadata={"model_version": version},
        )
    promoted = latest_materializations(instance, dg.AssetKey(PROMOTION), [partition]).get(partition)
    promotion = promoted.asset_materialization.metadata if promoted is not None else {}  # type: ignore[union-attr]
    decided = promotion.get(keys.MLFLOW_MODEL_VERSION)
    if promoted is None or decided is None or str(decided.value) != version:
        raise dg.Failure(
            f"{where}: {PROMOTION}[{partition}] has not decided on v{version}; materialize it first"
        )
    decision = str(promotion[keys.REGISTRY_DECISION].value)
    if decision not in SERVABLE_DECISIONS:
        raise dg.Failure(f"{where}: v{version}'s promotion decision is {decision!r}: no Bento is built")
    upstream = [
        {"asset": MODEL, "partition": partition, "run_id": model_record.run_id, "model_version": version},
        {"asset": EVALUATION, "partition": partition, "run_id": found.run_id, "passed": True},
        {"asset": PROMOTION, "partition": partition, "run_id": promoted.run_id, "decision": decision},
    ]
    return version, model_record, upstream

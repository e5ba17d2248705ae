"""``deployment``: what serves, as an asset of the graph, linked to the Bento and model behind it.

One unpartitioned asset downstream of ``delay_bento``. A materialization deploys one release (by
default the registry's champion, or ``model_version`` from its config) with a strategy
(``blue_green``, ``canary``, ``shadow``; default from settings): it reads the Bento that
``delay_bento`` recorded for that version (never "the latest Bento"), plans the next desired state
(:func:`ml_platform.lib.deploy.desired.plan`), writes it, and waits until the supervisor
(``mlp deploy serve``) applied it, recording its URL, ports, pids and health. With ``rollback`` it
sends the running challenger back instead. Without a running supervisor the change waits in the
desired state and the materialization says so (``deploy/applied: no_supervisor``).

The ``deploy_champion_sensor`` requests a materialization whenever ``delay_bento`` builds the Bento
of a version that was champion at build time, so a promotion reaches the service with no human.

Metadata: the generation, mode and share; champion and challenger (Bento tag, model version, the
``delay_bento`` partition and run that built it); ``lineage/upstream`` names those
``delay_bento`` materializations (partition and run id), so the UI leads from the deployment to
the Bento, the model version, its MLflow run and the training data.
"""

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import dagster as dg
from pydantic import Field

from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.serving.bento import ALIASES_AT_BUILD, BENTO_TAG, bento_record
from ml_platform.defs.serving.bento import NAME as DELAY_BENTO
from ml_platform.lib import metadata as keys
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import DeploymentResource, MlflowResource

NAME: Final = "deployment"
JOB: Final = "deploy_job"
SENSOR: Final = "deploy_champion_sensor"
MODULES: Final = (
    "ml_platform.lib.deploy.desired",
    "ml_platform.lib.deploy.supervisor",
    "ml_platform.lib.deploy.router",
    "ml_platform.lib.deploy.rollback",
)
GENERATION: Final = "deploy/generation"
MODE: Final = "deploy/mode"
SHARE: Final = "deploy/share"
STRATEGY: Final = "deploy/strategy"
PLAN: Final = "deploy/plan"
APPLIED: Final = "deploy/applied"
CHAMPION: Final = "deploy/champion"
CHALLENGER: Final = "deploy/challenger"
ROUTER_URL: Final = "deploy/url"
PROCESSES: Final = "deploy/processes"
REQUESTED_BY: Final = "deploy/requested_by"
DESIRED_PATH: Final = "deploy/desired_state"
LOG_TABLE: Final = "deploy/log_table"


class DeploymentConfig(dg.Config):
    """What to deploy (default: the champion, by the resource's strategy)."""

    model_version: str | None = Field(
        None, description="Deploy this registered version instead of the champion."
    )
    strategy: str | None = Field(
        None, description="blue_green, canary or shadow (default: MLP_DEPLOY_STRATEGY)."
    )
    share: float | None = Field(None, description="The canary's share (default: MLP_DEPLOY_CANARY_SHARE).")
    promote_after_s: float | None = Field(
        None, description="Seconds of a healthy canary before it is promoted by itself (default: settings)."
    )
    max_p99_ms: float | None = Field(None, description="Canary rollback: p99 limit (default: settings).")
    force: bool = Field(False, description="Deploy a Bento that was rolled back before.")
    rollback: bool = Field(False, description="Send the running challenger back instead of deploying.")
    reason: str = Field("", description="Why (recorded in the deployment log).")
    requested_by: str | None = Field(None, description="Who asks (default: the Dagster run).")


def build_deployment_assets(
    sensors_running: bool, git_commit: str
) -> tuple[list[dg.AssetsDefinition], Any, dg.SensorDefinition]:
    """The ``deployment`` asset, the job that materializes it and the sensor that deploys new champions."""

    @dg.asset(
        name=NAME,
        group_name="serving",
        kinds={"bentoml"},
        deps=[DELAY_BENTO],
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        code_version=code_version_of_names(*MODULES),
        description=(
            "What serves: the champion's (or a chosen version's) Bento deployed blue-green, as a canary"
            " or in shadow beside the running one, by the supervisor `mlp deploy serve` (managed"
            " `bentoml serve` processes behind a router with automatic canary rollback). Records the"
            " desired state and what the supervisor applied: URL, ports, pids, health. Linked to the"
            " delay_bento materializations of the Bentos it serves."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: DeploymentConfig,
        mlflow_registry: MlflowResource,
        deployment: DeploymentResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from ml_platform.lib.deploy.desired import (
            DeploymentRefused,
            DesiredStateError,
            Request,
            after_rollback,
            plan,
        )
        from ml_platform.lib.deploy.rollback import CanaryThresholds

        store = deployment.store()
        actor = config.requested_by or f"dagster:run {context.run.run_id}"
        model_name = mlflow_registry.model_name
        try:
            if config.rollback:
                current = store.read()
                if current is None or current.challenger is None:
                    raise dg.Failure(f"{NAME}: there is no challenger to roll back ({store.path})")
                tag = current.challenger.bento_tag
                reason = config.reason or "rolled back by hand"
                state, changed = store.update(
                    lambda now: None if now is None else after_rollback(now, tag, reason, actor)
                )
                note = f"rollback of {current.challenger.label}: {reason}"
                strategy = "rollback"
            else:
                release, bento_meta = _release(context.instance, mlflow_registry, config.model_version)
                strategy = config.strategy or deployment.strategy
                thresholds = deployment.thresholds()
                if config.max_p99_ms is not None:
                    thresholds = CanaryThresholds(**{**thresholds.to_dict(), "max_p99_ms": config.max_p99_ms})
                request = Request(
                    requested_by=actor,
                    reason=config.reason
                    or f"{NAME}: {strategy} of {release.label} ({DELAY_BENTO}[{release.bento_partition}])",
                    thresholds=thresholds,
                    promote_after_s=config.promote_after_s
                    if config.promote_after_s is not None
                    else deployment.promote_after_s,
                )
                notes: list[str] = []

                def change(current: Any) -> Any:
                    new, why = plan(
                        current,
                        release,
                        strategy,  # type: ignore[arg-type]
                        request,
                        share=config.share if config.share is not None else deployment.canary_share,
                        force=config.force,
                    )
                    notes.append(why)
                    return new

                state, changed = store.update(change)
                note = notes[-1]
                context.log.info(f"{NAME}: {note} (Bento built by {DELAY_BENTO}, aliases then: {bento_meta})")
        except DeploymentRefused as exc:
            raise dg.Failure(f"{NAME}: {exc} (set force: true in the run config)") from exc
        except (DesiredStateError, ValueError) as exc:
            raise dg.Failure(f"{NAME}: {exc}") from exc
        assert state is not None
        context.log.info(f"{NAME}: generation {state.generation}: {state.describe()}")
        # unchanged: no waiting, but say truthfully whether a supervisor runs it
        how, status = deployment.wait_applied(state.generation, None if changed else 0.0)
        if how == "failed":
            assert status is not None
            raise dg.Failure(
                f"{NAME}: the supervisor could not apply generation {state.generation}"
                f" ({state.describe()}): {status.get('last_error')}; what served before still serves",
                metadata={GENERATION: state.generation},
            )
        if how == "no_supervisor":
            context.log.warning(
                f"{NAME}: no supervisor is running: generation {state.generation} waits in"
                f" {store.path}; start one with `mlp deploy serve` (make deploy)"
            )
        elif how == "timeout":
            context.log.warning(
                f"{NAME}: the supervisor has not applied generation {state.generation} within"
                f" {deployment.wait_s:.0f} s; it is still starting, see `mlp deploy status`"
            )
        releases = [r for r in (state.champion, state.challenger) if r is not None]
        upstream = [
            {
                "asset": DELAY_BENTO,
                "partition": r.bento_partition,
                "run_id": r.bento_run_id,
                "bento_tag": r.bento_tag,
                "model_version": r.model_version,
                "role": "champion" if r is state.champion else "challenger",
            }
            for r in releases
        ]
        running = status if how in ("applied", "timeout") else None
        return dg.MaterializeResult(
            data_version=dg.DataVersion(
                "|".join(
                    [
                        state.champion.bento_tag,
                        state.challenger.bento_tag if state.challenger else "-",
                        state.mode,
                        f"{state.share:g}",
                    ]
                )
            ),
            metadata={
                GENERATION: state.generation,
                STRATEGY: strategy,
                PLAN: note if changed else f"unchanged: {note}",
                MODE: state.mode,
                SHARE: state.share,
                CHAMPION: dg.MetadataValue.json(_release_json(state.champion)),
                CHALLENGER: dg.MetadataValue.json(
                    None if state.challenger is None else _release_json(state.challenger)
                ),
                BENTO_TAG: state.champion.bento_tag,
                keys.MLFLOW_MODEL_NAME: model_name,
                keys.MLFLOW_MODEL_VERSION: state.champion.model_version,
                APPLIED: how,
                ROUTER_URL: str((running or {}).get("url") or ""),
                PROCESSES: dg.MetadataValue.json(
                    {role: _process_json((running or {}).get(role)) for role in ("champion", "challenger")}
                ),
                REQUESTED_BY: state.requested_by,
                DESIRED_PATH: dg.MetadataValue.path(str(store.path)),
                LOG_TABLE: dg.MetadataValue.path(deployment.log_table),
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(upstream),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: git_commit,
            },
        )

    job = dg.define_asset_job(
        JOB,
        selection=dg.AssetSelection.assets(NAME),
        description="Deploy the champion's Bento (or a chosen version) to the local supervisor.",
    )

    @dg.sensor(
        name=SENSOR,
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if sensors_running else dg.DefaultSensorStatus.STOPPED,
        description=f"Deploys a Bento as soon as {DELAY_BENTO} builds it for a version that was the"
        " champion when it was built (one run per Bento tag: the run key dedupes across ticks); of several"
        " found in one tick only the newest is deployed, the older ones were superseded.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = int(context.cursor) if context.cursor else 0
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(DELAY_BENTO), after_storage_id=cursor),
            limit=100,
            ascending=True,
        ).records
        builds: list[ChampionBuild] = []
        for record in records:
            cursor = max(cursor, record.storage_id)
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            aliases = meta.get(ALIASES_AT_BUILD)
            if aliases is None or "champion" not in (aliases.value or []):  # type: ignore[operator]
                continue
            builds.append(
                ChampionBuild(str(meta[BENTO_TAG].value), str(meta[keys.MLFLOW_MODEL_VERSION].value))
            )
        newest, superseded = newest_champion_build(builds)
        if superseded:
            context.log.info(
                f"{SENSOR}: not deploying {', '.join(f'{b.tag} (v{b.version})' for b in superseded)}:"
                f" a newer champion's Bento, {newest.tag if newest else '?'}, was built since"
            )
        requests = (
            []
            if newest is None
            else [
                dg.RunRequest(
                    run_key=f"deploy:{newest.tag}",
                    run_config=dg.RunConfig(
                        ops={
                            NAME: DeploymentConfig(
                                model_version=newest.version, requested_by=f"sensor:{SENSOR}"
                            )
                        }
                    ),
                    tags={"ml_platform/bento_tag": newest.tag, "ml_platform/model_version": newest.version},
                )
            ]
        )
        return dg.SensorResult(run_requests=requests, cursor=str(cursor))

    return [_asset], job, _sensor


@dataclass(frozen=True)
class ChampionBuild:
    """A Bento that ``delay_bento`` built while its model version was the champion."""

    tag: str
    version: str


def newest_champion_build(
    builds: Sequence[ChampionBuild],
) -> tuple[ChampionBuild | None, list[ChampionBuild]]:
    """The build to deploy of those one sensor tick found (oldest first), and the superseded ones.

    Only the newest is deployed: an older champion's Bento was replaced before anything deployed it
    (a replay, or a daemon that was down while several weeks were promoted), and deploying each in
    turn would start a canary of every one. The same tag built again is not superseded by itself.
    """
    if not builds:
        return None, []
    newest = builds[-1]
    superseded: list[ChampionBuild] = []
    for build in builds[:-1]:
        if build.tag != newest.tag and build not in superseded:
            superseded.append(build)
    return newest, superseded


def _release(
    instance: dg.DagsterInstance, mlflow_registry: MlflowResource, model_version: str | None
) -> tuple[Any, Any]:
    """The release of ``model_version`` (default: the champion) from ``delay_bento``'s record.

    Raises:
        dg.Failure: no champion, or no Bento of the version was built.
    """
    from ml_platform.lib.deploy.desired import Release

    model_name = mlflow_registry.model_name
    version = model_version or mlflow_registry.registry().champion()
    if version is None:
        raise dg.Failure(f"{NAME}: {model_name} has no champion to deploy; promote a version first")
    record = bento_record(instance, model_name, str(version))
    if record is None or record.asset_materialization is None:
        raise dg.Failure(
            f"{NAME}: no {DELAY_BENTO} materialization built {model_name} v{version}; materialize"
            f" {DELAY_BENTO} for the week that registered it first"
        )
    meta = record.asset_materialization.metadata
    release = Release(
        bento_tag=str(meta[BENTO_TAG].value),
        model_name=model_name,
        model_version=str(version),
        bento_partition=record.asset_materialization.partition,
        bento_run_id=record.run_id,
    )
    aliases = meta.get(ALIASES_AT_BUILD)
    return release, None if aliases is None else aliases.value


def _release_json(release: Any) -> dict[str, Any]:
    return {
        "bento_tag": release.bento_tag,
        "model_name": release.model_name,
        "model_version": release.model_version,
        "built_by": f"{DELAY_BENTO}[{release.bento_partition}] run {release.bento_run_id}",
    }


def _process_json(process: dict[str, Any] | None) -> dict[str, Any] | None:
    if not process:
        return None
    return {
        k: process.get(k) for k in ("bento_tag", "model_version", "url", "port", "pid", "healthy", "since")
    }


def requester() -> str:
    """``cli:<user>`` for changes asked from the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"

"""``model_promotion``: the governed alias change of the week's model, with its audit event."""

import dagster as dg

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.evaluation.assets import NAME as EVALUATION
from ml_platform.defs.evaluation.assets import recorded_model
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.publish import latest_materializations
from ml_platform.lib import metadata as keys
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import MlflowResource

NAME = "model_promotion"


def build_registry_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The promotion asset."""
    spec = build.model

    @dg.asset(
        name=NAME,
        group_name="registry",
        kinds={"mlflow"},
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        deps=[EVALUATION],
        partitions_def=build.partitioning.weekly,
        code_version=code_version_of_names(
            "ml_platform.lib.registry.promotion", "ml_platform.lib.registry.audit"
        ),
        description=(
            f"Promotion policy '{spec.promotion_policy}': a version whose gates all passed"
            + (
                " becomes 'champion' (the alias moves; the old champion stays in the audit trail)."
                if spec.promotion_policy == "automatic"
                else " waits as 'challenger' for a person: `mlp promote --version N --approver NAME`."
            )
            + " Runs only after model_evaluation's blocking gates pass, and re-checks them from the"
            " recorded evaluation. Every decision is an append-only audit event."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, mlflow_registry: MlflowResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from ml_platform.lib.evaluation.gates import GateResult
        from ml_platform.lib.registry.promotion import Decision, decide

        partition = context.partition_key
        where = f"{NAME}[{partition}]"
        evaluation = latest_materializations(context.instance, dg.AssetKey(EVALUATION), [partition]).get(
            partition
        )
        if evaluation is None:
            raise dg.Failure(f"{where}: {EVALUATION}[{partition}] has no materialization; evaluate first")
        meta = evaluation.asset_materialization.metadata  # type: ignore[union-attr]
        version = str(meta[keys.MLFLOW_MODEL_VERSION].value)
        model_version = str(
            recorded_model(context.instance, partition)
            .asset_materialization.metadata[keys.MLFLOW_MODEL_VERSION]
            .value
        )  # type: ignore[union-attr]
        if model_version != version:
            raise dg.Failure(
                f"{where}: the evaluation judged v{version} but delay_model[{partition}] is now"
                f" v{model_version}; rematerialize {EVALUATION}[{partition}] first"
            )
        gates = [GateResult.from_dict(g) for g in meta[keys.EVALUATION_GATES].value]  # type: ignore[union-attr]
        registry = mlflow_registry.registry()
        before = registry.champion()
        evidence = registry.evaluation(version) or {}
        decision: Decision = decide(spec.promotion_policy, gates)
        if decision.action == "reject":
            # the blocking checks normally stop the run before this asset; a separate run does not
            raise dg.Failure(f"{where}: v{version} may not be promoted: {decision.reason}")
        if decision.action == "promote" and before == version:
            decision = Decision("promote", "already champion")
            event_id, after = "none (already champion)", before
        else:
            event = registry.apply(
                version, decision, actor=f"policy:{spec.promotion_policy}", evidence=evidence
            )
            event_id, after = event.event_id, registry.champion()
        context.log.info(
            f"{where}: v{version} {decision.action}: {decision.reason}; champion {before} -> {after}"
        )
        return dg.MaterializeResult(
            metadata={
                keys.MLFLOW_MODEL_VERSION: version,
                keys.REGISTRY_DECISION: decision.action,
                "registry/reason": decision.reason,
                "registry/champion_before": before or "none",
                keys.REGISTRY_CHAMPION: after or "none",
                keys.REGISTRY_EVENT: event_id,
                "registry/policy": spec.promotion_policy,
                # the evaluation whose recorded gates were re-checked, and the model it judged
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    [
                        {
                            "asset": EVALUATION,
                            "partition": partition,
                            "run_id": evaluation.run_id,
                            "storage_id": evaluation.storage_id,
                            "model_version": version,
                        }
                    ]
                ),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            }
        )

    return [_asset]

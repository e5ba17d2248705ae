"""The evidence bundle's lineage graph: its layers, nodes and edges (drawn by ``evidence_svg``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ml_platform.lineage import records as rec
from ml_platform.lineage.evidence.base import _BuilderBase
from ml_platform.lineage.evidence.schema import COLLAPSE, LAYERS
from ml_platform.lineage.model import DeploymentHop, Missing, ModelHop, PartitionNode
from ml_platform.lineage.trace import CHECKS, DELAY_MODEL, EVALUATION, FEATURES, PROMOTION


class _GraphSection(_BuilderBase):
    """The ``graph`` section of :class:`~ml_platform.lineage.evidence.gather._Builder`."""

    # ------------------------------------------------------------------------------- graph

    def _graph(self, holdout: list[dict[str, Any]]) -> dict[str, Any]:
        chain = self.chain
        layers: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in LAYERS}
        member_of: dict[str, str] = {}
        edges: list[tuple[str, str]] = []

        def edge(a: str | None, b: str | None) -> None:
            if a and b and (a, b) not in edges:
                edges.append((a, b))

        for name, items in (("raw", chain.raw), ("validated", chain.validated), ("features", chain.features)):
            layers[name] = _partition_nodes(items, member_of)
        for items in (chain.validated, chain.features):
            for item in items:
                if isinstance(item, PartitionNode):
                    for up in item.upstream:
                        edge(_source_of(up, member_of), member_of.get(item.id))
        holdout_id = None
        if holdout:
            parts = sorted(str(p.get("partition")) for p in holdout)
            holdout_id = f"holdout:{parts[0]}..{parts[-1]}"
            layers["features"].append(
                _node(
                    holdout_id,
                    [f"{len(parts)} {FEATURES} partitions", f"holdout {parts[0]}..{parts[-1]}"]
                    if len(parts) > 1
                    else [f"{FEATURES}[{parts[0]}]", "holdout"],
                    "ok",
                    [rec.describe_pin(pin) for e in holdout if (pin := rec.upstream_pin(e))],
                    "evaluation holdout (as model_evaluation's lineage/upstream recorded it): "
                    + ", ".join(parts),
                )
            )
        model_id = None
        if isinstance(chain.model, ModelHop):
            m = chain.model
            model_id = f"model:{m.model_name}:v{m.version}"
            label = [f"{m.model_name} v{m.version}"]
            label.append(m.materialization.label if m.materialization else "no delay_model materialization")
            if self.run is not None:
                label.append(f"MLflow run {self.run.run_id[:12]}")
            layers["model"].append(
                _node(
                    model_id,
                    label,
                    "ok" if m.materialization else "missing",
                    [m.materialization.id] if m.materialization else [],
                    f"{m.model_name} v{m.version}; aliases now: {', '.join(m.aliases_now) or 'none'};"
                    f" window {m.training_window}",
                )
            )
        else:
            model_id = _gap_node(layers["model"], "model", chain.model, f"{chain.model_name} v{self.version}")
        if isinstance(chain.mlflow_run, Missing):
            _gap_node(layers["model"], "mlflow_run", chain.mlflow_run, "MLflow run")
        for node in layers["features"]:
            if node["id"] != holdout_id:
                edge(node["id"], model_id)
        eval_ids: dict[str, str] = {}
        for ev in self.evaluations:
            mat = ev.materialization
            eval_ids[mat.run_id] = mat.id
            layers["decisions"].append(
                _node(
                    mat.id,
                    [
                        mat.label,
                        f"gates {'passed' if ev.passed else 'FAILED'}",
                        f"champion then: {ev.champion_version}",
                    ],
                    "ok" if ev.passed else "failed",
                    [mat.id],
                    "; ".join(f"{g.get('name')}: {g.get('detail')}" for g in ev.gates) or "no gates recorded",
                )
            )
            edge(model_id, mat.id)
            edge(holdout_id, mat.id)
        promo_ids: dict[str, str] = {}
        for promo in [] if self.model is None else self.model.promotions:
            mat = promo.materialization
            promo_ids[mat.run_id] = mat.id
            layers["decisions"].append(
                _node(
                    mat.id,
                    [
                        mat.label,
                        f"decision: {promo.decision}",
                        f"champion {promo.champion_before} -> {promo.champion_after}",
                    ],
                    "ok",
                    [mat.id],
                    f"{promo.decision}: {promo.reason}",
                )
            )
            edge(model_id, mat.id)
        if not layers["decisions"]:
            layers["decisions"].append(
                _node(
                    "decisions:none",
                    ["no evaluation recorded"],
                    "absent",
                    [],
                    "no model_evaluation judged it",
                )
            )
        for b in chain.bentos:
            bento_id = f"bento:{b.tag}"
            layers["bento"].append(
                _node(
                    bento_id,
                    [b.materialization.label, b.tag, f"lock {(b.lock_sha256 or '-')[:12]}"],
                    "ok",
                    [b.materialization.id, *b.also_built_by],
                    f"{b.tag} built {b.built_at} by run {b.materialization.run_id}",
                )
            )
            for entry in b.upstream:
                asset, run_id = entry.get("asset"), str(entry.get("run_id"))
                if asset == DELAY_MODEL:
                    edge(model_id, bento_id)
                elif asset == EVALUATION and run_id in eval_ids:
                    edge(eval_ids[run_id], bento_id)
                elif asset == PROMOTION and run_id in promo_ids:
                    edge(promo_ids[run_id], bento_id)
        if not chain.bentos:
            layers["bento"].append(
                _node(
                    "bento:none",
                    ["no Bento built"],
                    "absent",
                    [],
                    "no delay_bento build of this version was recorded",
                )
            )
        dep = chain.deployment
        if isinstance(dep, DeploymentHop):
            for role in dep.roles:
                node_id = f"deployment:{role.role}:{role.bento_tag}"
                layers["deployment"].append(
                    _node(
                        node_id,
                        [
                            f"serving: {role.role}",
                            f"generation {dep.desired_generation} ({dep.desired_mode})",
                            f"v{role.model_version}",
                        ],
                        "ok",
                        [],
                        f"desired state {dep.desired_path}: {role.role} {role.bento_tag}",
                    )
                )
                edge(f"bento:{role.bento_tag}", node_id)
            serving = {r.bento_tag for r in dep.roles}
            for ref in dep.materializations:
                if ref.bento_tag in serving:
                    continue
                layers["deployment"].append(
                    _node(
                        ref.materialization.id,
                        [
                            ref.materialization.label,
                            f"generation {ref.generation} {ref.role}",
                            "not serving now",
                        ],
                        "absent",
                        [ref.materialization.id],
                        f"deployed {ref.bento_tag} (applied: {ref.applied})",
                    )
                )
                edge(f"bento:{ref.bento_tag}", ref.materialization.id)
            for tag in dep.rolled_back:
                node_id = f"rolled_back:{tag}"
                layers["deployment"].append(
                    _node(node_id, ["rolled back", tag], "absent", [], f"{tag} was rolled back")
                )
                edge(f"bento:{tag}", node_id)
        elif isinstance(dep, Missing):
            _gap_node(layers["deployment"], "deployment", dep, "deployment")
        if not layers["deployment"]:
            layers["deployment"].append(
                _node(
                    "deployment:none",
                    ["not deployed"],
                    "absent",
                    [],
                    "no desired state or deployment names its Bentos",
                )
            )
        for name, _ in LAYERS:
            if not layers[name]:
                layers[name].append(
                    _node(f"{name}:none", ["none recorded"], "absent", [], f"no {name} recorded")
                )
        return {
            "layers": [{"name": name, "title": title, "nodes": layers[name]} for name, title in LAYERS],
            "edges": [list(e) for e in edges],
        }


def _node(node_id: str, label: list[str], status: str, members: list[str], detail: str) -> dict[str, Any]:
    return {"id": node_id, "label": label, "status": status, "members": members, "detail": detail}


def _gap_node(layer: list[dict[str, Any]], hop: str, gap: Any, what: str) -> str:
    node_id = f"missing:{hop}"
    if isinstance(gap, Missing):
        layer.append(_node(node_id, [f"MISSING {hop}", what], "missing", [], gap.describe()))
    else:
        layer.append(_node(node_id, [f"no {hop}", what], "absent", [], f"no {hop} recorded"))
    return node_id


def _source_of(upstream: str, member_of: Mapping[str, str]) -> str | None:
    if upstream in member_of:
        return member_of[upstream]
    if upstream.startswith("missing: "):
        return f"missing:{upstream.removeprefix('missing: ').split('[')[0]}"
    return None


def _partition_nodes(
    items: Iterable[PartitionNode | Missing], member_of: dict[str, str]
) -> list[dict[str, Any]]:
    """One node per partition, or one per asset when it has more than :data:`COLLAPSE`; gaps per table."""
    by_asset: dict[str, list[PartitionNode]] = {}
    gaps: dict[str, list[Missing]] = {}
    for item in items:
        if isinstance(item, Missing):
            gaps.setdefault(item.hop, []).append(item)
        else:
            by_asset.setdefault(item.materialization.asset, []).append(item)
    out = []
    for asset, nodes in sorted(by_asset.items()):
        nodes.sort(key=lambda n: (n.materialization.partition or "", n.materialization.storage_id))
        failed = [c for n in nodes for c in n.checks if c.passed is False]
        checks = sum(len(n.checks) for n in nodes)
        check_line = (
            f"{len(failed)} of {checks} checks failed"
            if failed
            else f"checks {checks}/{checks} passed"
            if checks
            else "no check results"
            if asset in CHECKS
            else "declares no checks"
        )
        if len(nodes) > COLLAPSE:
            parts = [n.materialization.partition or "" for n in nodes]
            group = f"{asset}[{parts[0]}..{parts[-1]}]"
            for n in nodes:
                member_of[n.id] = group
            out.append(
                _node(
                    group,
                    [f"{len(nodes)} {asset} partitions", f"{parts[0]}..{parts[-1]}", check_line],
                    "failed" if failed else "ok",
                    [n.id for n in nodes],
                    f"{len(nodes)} {asset} partitions {parts[0]}..{parts[-1]}"
                    + (
                        f"; failed: {', '.join(sorted({f'{c.partition} {c.name}' for c in failed}))}"
                        if failed
                        else ""
                    ),
                )
            )
            continue
        for n in nodes:
            member_of[n.id] = n.id
            own_failed = [c.name for c in n.checks if c.passed is False]
            out.append(
                _node(
                    n.id,
                    [
                        n.materialization.label,
                        f"{n.storage.where} data {(n.storage.content_hash or '-')[:8]}",
                        f"failed: {', '.join(own_failed)}"
                        if own_failed
                        else f"{len(n.checks)} checks passed",
                    ],
                    "failed" if own_failed else "ok",
                    [n.id],
                    f"{n.id} run {n.materialization.run_id}; {n.storage.where}; rows {n.storage.row_count}",
                )
            )
    for hop, found in sorted(gaps.items()):
        out.append(
            _node(
                f"missing:{hop}",
                [f"MISSING {len(found)} {hop}", "not recorded: see header"],
                "missing",
                [],
                "; ".join(g.describe() for g in found[:5])
                + (f"; and {len(found) - 5} more" if len(found) > 5 else ""),
            )
        )
    return out

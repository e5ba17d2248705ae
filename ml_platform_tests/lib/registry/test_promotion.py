"""Governed promotion through MLflow aliases, against a real (sqlite) MLflow registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from ml_platform.lib.evaluation.gates import (
    BEATS_BASELINE,
    NOT_WORSE_THAN_CHAMPION,
    GateResult,
    beats_baseline,
    not_worse_than_champion,
)
from ml_platform.lib.registry.audit import AuditLog
from ml_platform.lib.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    EVALUATION_TAG,
    Decision,
    ModelRegistry,
    NothingToRollBack,
    Policy,
    PromotionRefused,
    decide,
)

BASELINE = {"rmse": 20.0, "brier": 0.25}
GOOD = {"rmse": 10.0, "brier": 0.15}
BETTER = {"rmse": 9.0, "brier": 0.14}
WORSE = {"rmse": 15.0, "brier": 0.20}  # beats the baseline, but far worse than a GOOD champion


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow.MlflowClient]:
    """One sqlite registry per module (creating its schema takes seconds); models are per test."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def registry(client: mlflow.MlflowClient, tmp_path: Path) -> ModelRegistry:
    """A fresh registered model (unique name) with three versions and its own audit log."""
    name = f"flights-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=str(tmp_path / "model"), run_id=None)
    return ModelRegistry(client, name, AuditLog(tmp_path / "audit"))


def _gates(metrics: dict[str, float], champion: dict[str, float] | None) -> list[GateResult]:
    return [
        beats_baseline(metrics, BASELINE),
        not_worse_than_champion(metrics, champion, tolerance=0.02, champion_version="1"),
    ]


def _evaluate(
    registry: ModelRegistry, version: str, metrics: dict[str, float], champion: dict[str, float] | None
) -> tuple[list[GateResult], dict[str, Any]]:
    gates = _gates(metrics, champion)
    evidence = {"gates": [g.to_dict() for g in gates], "metrics": metrics, "run_id": f"run-{version}"}
    registry.record_evaluation(version, evidence)
    return gates, evidence


def _register_and_decide(
    registry: ModelRegistry,
    version: str,
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    policy: Policy = "automatic",
) -> Decision:
    """What the pipeline does with a new version: challenger, evaluation, decision."""
    registry.mark_challenger(version, actor="policy:registration", evidence={"run_id": f"run-{version}"})
    gates, evidence = _evaluate(registry, version, metrics, champion)
    decision = decide(policy, gates)
    registry.apply(version, decision, actor=f"policy:{policy}", evidence=evidence)
    return decision


# ------------------------------------------------------------------------------------------ decide


def test_decide_without_gates_rejects_as_not_evaluated() -> None:
    for policy in ("automatic", "manual"):
        decision = decide(policy, [])  # type: ignore[arg-type]
        assert decision.action == "reject"
        assert "not evaluated" in decision.reason


def test_decide_rejects_on_any_failed_gate_and_names_it() -> None:
    gates = _gates(WORSE, GOOD)
    assert [g.passed for g in gates] == [True, False]
    for policy in ("automatic", "manual"):
        decision = decide(policy, gates)  # type: ignore[arg-type]
        assert decision.action == "reject"
        assert NOT_WORSE_THAN_CHAMPION in decision.reason
        assert gates[1].detail in decision.reason
        assert BEATS_BASELINE not in decision.reason  # passing gates are not blamed


def test_decide_promotes_automatically_or_awaits_approval() -> None:
    gates = _gates(GOOD, None)
    assert decide("automatic", gates).action == "promote"
    assert decide("manual", gates).action == "await_approval"
    with pytest.raises(ValueError, match="policy"):
        decide("yolo", gates)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ aliases and evidence


def test_aliases_start_unset_and_a_model_not_registered_yet_has_no_champion(
    registry: ModelRegistry, client: mlflow.MlflowClient
) -> None:
    """The cold start: before the first training run registers the model, there is no champion."""
    assert registry.champion() is None and registry.challenger() is None
    ghost = ModelRegistry(client, "no-such-model", registry.audit)
    assert ghost.champion() is None and ghost.challenger() is None
    # the model does not exist: nothing to promote, the registry's own error says so
    with pytest.raises(MlflowException, match="no-such-model"):
        ghost.apply("1", Decision("promote", "test"), actor="test", evidence={})


def test_a_failing_registry_is_an_error_not_no_champion(
    registry: ModelRegistry, client: mlflow.MlflowClient, tmp_path: Path
) -> None:
    """Only "the model does not exist" means no champion; a registry that cannot answer raises."""
    import shutil
    import sqlite3

    # a copy of the registry that holds the model but lost its aliases table
    copy = tmp_path / "mlflow.db"
    shutil.copy(client.tracking_uri.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as db:
        db.execute("DROP TABLE registered_model_aliases")
    uri = f"sqlite:///{copy}"
    damaged = ModelRegistry(
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), registry.model_name, registry.audit
    )
    with pytest.raises(Exception, match="registered_model_aliases"):
        damaged.champion()


def test_mark_challenger_moves_the_alias_and_records_it(registry: ModelRegistry) -> None:
    registry.mark_challenger("1", actor="policy:registration", evidence={"run_id": "r1"})
    event = registry.mark_challenger("2", actor="policy:registration", evidence={"run_id": "r2"})

    assert registry.challenger() == "2"
    assert (event.action, event.alias, event.version, event.previous_version) == (
        "set_challenger",
        CHALLENGER,
        "2",
        "1",
    )
    assert event.evidence == {"run_id": "r2"}
    assert registry.history()[-1] == event


def test_evaluation_roundtrips_through_the_version_tag(
    registry: ModelRegistry, client: mlflow.MlflowClient
) -> None:
    assert registry.evaluation("1") is None
    _, evidence = _evaluate(registry, "1", GOOD, None)

    assert registry.evaluation("1") == evidence
    assert EVALUATION_TAG in client.get_model_version(registry.model_name, "1").tags
    with pytest.raises(ValueError, match="gates"):
        registry.record_evaluation("2", {"metrics": GOOD})


def test_a_worse_challenger_is_rejected_and_the_champion_kept(registry: ModelRegistry) -> None:
    assert _register_and_decide(registry, "1", GOOD, None).action == "promote"
    decision = _register_and_decide(registry, "2", WORSE, GOOD)

    assert decision.action == "reject"
    assert registry.champion() == "1"
    assert registry.challenger() == "2"
    rejection = registry.history()[-1]
    assert (rejection.action, rejection.alias, rejection.version) == ("reject", None, "2")
    assert rejection.actor == "policy:automatic"
    assert NOT_WORSE_THAN_CHAMPION in rejection.reason
    failed = [g for g in rejection.evidence["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == [NOT_WORSE_THAN_CHAMPION]
    assert failed[0]["comparisons"]["rmse"] == {"model": WORSE["rmse"], "reference": GOOD["rmse"]}
    assert registry.audit.verify(registry.model_name) == 4


def test_automatic_promotion_moves_the_champion_and_clears_the_challenger(registry: ModelRegistry) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    assert (registry.champion(), registry.challenger()) == ("1", None)

    _register_and_decide(registry, "2", BETTER, GOOD)

    assert (registry.champion(), registry.challenger()) == ("2", None)
    promotion = registry.history()[-1]
    assert (promotion.action, promotion.alias, promotion.version, promotion.previous_version) == (
        "promote",
        CHAMPION,
        "2",
        "1",
    )
    assert promotion.actor == "policy:automatic"
    assert promotion.evidence["metrics"] == BETTER
    assert [e.action for e in registry.history()] == ["set_challenger", "promote"] * 2


def test_manual_policy_waits_for_an_approval(registry: ModelRegistry) -> None:
    _register_and_decide(registry, "1", GOOD, None, policy="automatic")
    decision = _register_and_decide(registry, "2", BETTER, GOOD, policy="manual")

    assert decision.action == "await_approval"
    assert (registry.champion(), registry.challenger()) == ("1", "2")
    waiting = registry.history()[-1]
    assert (waiting.action, waiting.alias, waiting.version) == ("await_approval", None, "2")

    event = registry.promote("2", approver="alice", reason="reviewed the plots")

    assert (registry.champion(), registry.challenger()) == ("2", None)
    assert (event.action, event.alias, event.version, event.previous_version) == (
        "promote",
        CHAMPION,
        "2",
        "1",
    )
    assert event.actor == "user:alice"
    assert event.reason == "reviewed the plots"
    assert event.evidence == registry.evaluation("2")
    with pytest.raises(PromotionRefused, match="already is the champion"):
        registry.promote("2", approver="alice", reason="again")


def test_promote_refuses_unevaluated_failed_or_unknown_versions(registry: ModelRegistry) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    _evaluate(registry, "2", WORSE, GOOD)
    events_before = len(registry.history())

    with pytest.raises(PromotionRefused, match=rf"{registry.model_name}.*version 3.*not been evaluated"):
        registry.promote("3", approver="alice", reason="trust me")
    with pytest.raises(PromotionRefused, match=rf"version 2.*{NOT_WORSE_THAN_CHAMPION}"):
        registry.promote("2", approver="alice", reason="trust me")
    with pytest.raises(PromotionRefused, match=r"version 99.*no such model version"):
        registry.promote("99", approver="alice", reason="trust me")
    _evaluate(registry, "3", BETTER, GOOD)
    with pytest.raises(PromotionRefused, match="approver"):
        registry.promote("3", approver=" ", reason="anonymous")

    assert registry.champion() == "1"
    assert len(registry.history()) == events_before  # refusals change and record nothing


def test_a_failed_audit_append_puts_the_aliases_back(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    registry.mark_challenger("2", actor="policy:registration", evidence={})

    def broken_append(**_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry.audit, "append", broken_append)
    with pytest.raises(OSError, match="disk full"):
        registry.apply("2", Decision("promote", "ok"), actor="policy:automatic", evidence={})

    assert (registry.champion(), registry.challenger()) == ("1", "2")


def test_invalid_evidence_fails_before_an_alias_moves(registry: ModelRegistry) -> None:
    with pytest.raises(ValueError, match="evidence"):
        registry.apply("1", Decision("promote", "ok"), actor="policy:automatic", evidence={"x": object()})
    assert registry.champion() is None
    assert registry.history() == []


# ---------------------------------------------------------------------------------------- rollback


def test_rollback_returns_to_the_previous_champions_one_at_a_time(registry: ModelRegistry) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    _register_and_decide(registry, "2", BETTER, GOOD)
    _register_and_decide(registry, "3", {"rmse": 8.9, "brier": 0.13}, BETTER)
    assert registry.champion() == "3"

    first = registry.rollback(actor="user:bob", reason="v3 misbehaves in production")

    assert registry.champion() == "2"
    assert (first.action, first.alias, first.version, first.previous_version) == (
        "rollback",
        CHAMPION,
        "2",
        "3",
    )
    assert (first.actor, first.reason) == ("user:bob", "v3 misbehaves in production")
    assert registry.history()[-1] == first

    second = registry.rollback(actor="user:bob", reason="v2 too")

    assert registry.champion() == "1"
    assert (second.version, second.previous_version) == ("1", "2")
    with pytest.raises(NothingToRollBack, match=registry.model_name):
        registry.rollback(actor="user:bob", reason="and v1?")
    assert registry.champion() == "1"
    assert registry.audit.verify(registry.model_name) == len(registry.history())


def test_a_promotion_after_a_rollback_is_rolled_back_to_the_restored_champion(
    registry: ModelRegistry,
) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    _register_and_decide(registry, "2", BETTER, GOOD)
    registry.rollback(actor="user:bob", reason="v2 misbehaves")
    _register_and_decide(registry, "3", BETTER, GOOD)
    assert registry.champion() == "3"

    registry.rollback(actor="user:bob", reason="v3 misbehaves")

    assert registry.champion() == "1"


def test_rollback_needs_two_champions(registry: ModelRegistry) -> None:
    with pytest.raises(NothingToRollBack):
        registry.rollback(actor="user:bob", reason="no champion at all")
    _register_and_decide(registry, "1", GOOD, None)
    with pytest.raises(NothingToRollBack):
        registry.rollback(actor="user:bob", reason="only one champion ever")
    assert registry.champion() == "1"
    assert registry.history()[-1].action == "promote"


def test_rollback_refuses_when_the_alias_was_moved_outside_the_platform(
    registry: ModelRegistry, client: mlflow.MlflowClient
) -> None:
    _register_and_decide(registry, "1", GOOD, None)
    _register_and_decide(registry, "2", BETTER, GOOD)
    client.set_registered_model_alias(registry.model_name, CHAMPION, "3")  # behind the platform's back

    with pytest.raises(
        PromotionRefused, match=r"version '3'.*audit log says version 2.*outside the platform"
    ):
        registry.rollback(actor="user:bob", reason="oops")
    assert registry.champion() == "3"

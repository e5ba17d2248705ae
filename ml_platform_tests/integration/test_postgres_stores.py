"""Production-mode stores on the local PostgreSQL: the Optuna study storage and the MLflow registry.

Each test gets its own throwaway database, so nothing leaks into the shared ones. Set
``MLP_TEST_POSTGRES`` (a libpq-style ``host:port:user``) to point elsewhere; without a reachable
server the tests are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ml_platform_tests.integration.postgres import throwaway_databases

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database; yields its SQLAlchemy URL and drops it afterwards."""
    with throwaway_databases("stores") as (pg, names):
        yield pg.url(names["stores"])


def _tiny_data(seed: int, rows: int = 600):  # type: ignore[no-untyped-def]
    from ml_platform.lib.training.data import Encoded

    rng = np.random.default_rng(seed)
    cat = rng.integers(1, 4, size=(rows, 4)).astype(np.int64)
    num = rng.normal(size=(rows, 5)).astype(np.float32)
    delay = (num[:, 0] + 0.5 * cat[:, 0]).astype(np.float32)
    delayed = (delay > 1.0).astype(np.float32)
    return Encoded(cat, num, delay, delayed)


def test_optuna_study_lives_in_postgres(database):
    import optuna

    from ml_platform.lib.training.hpo import run_study
    from ml_platform.lib.training.loop import TrainConfig

    outcome = run_study(
        _tiny_data(0),
        _tiny_data(1, rows=200),
        [5, 5, 5, 5],
        TrainConfig(max_epochs=3, batch_size=128),
        storage=database,
        study_name="delay_model[2013-03-04]@test",
        n_trials=3,
    )
    stored = optuna.load_study(study_name="delay_model[2013-03-04]@test", storage=database)
    assert len(stored.trials) == 3
    assert stored.best_value == pytest.approx(outcome.best_value)
    assert stored.best_params == outcome.best_params
    with pytest.raises(ValueError, match="already exists"):
        run_study(
            _tiny_data(0),
            _tiny_data(1, rows=200),
            [5, 5, 5, 5],
            TrainConfig(max_epochs=1),
            storage=database,
            study_name="delay_model[2013-03-04]@test",
            n_trials=1,
        )


def test_mlflow_registry_and_promotion_on_postgres(database, tmp_path: Path):
    import mlflow

    from ml_platform.lib.evaluation.gates import GateResult
    from ml_platform.lib.registry.audit import AuditLog
    from ml_platform.lib.registry.promotion import Decision, ModelRegistry

    uri = database
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("pg", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "holdout_rmse", 41.0)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("delay_model")
    versions = [
        client.create_model_version("delay_model", str(tmp_path / f"m{i}"), run_id=run.info.run_id).version
        for i in range(2)
    ]
    registry = ModelRegistry(client, "delay_model", AuditLog(tmp_path / "audit"))
    passed = [
        GateResult("beats_naive_baseline", True, "ok"),
        GateResult("not_worse_than_champion", True, "ok"),
    ]
    for version in versions:
        registry.mark_challenger(str(version), actor="policy:registration", evidence={"run": run.info.run_id})
        evidence = {"gates": [g.to_dict() for g in passed], "mlflow_run_id": run.info.run_id}
        registry.record_evaluation(str(version), evidence)
        registry.apply(
            str(version), Decision("promote", "gates passed"), actor="policy:automatic", evidence=evidence
        )
    assert registry.champion() == str(versions[1])
    registry.rollback(actor="user:oncall", reason="test")
    assert registry.champion() == str(versions[0])
    aliases = client.get_registered_model("delay_model").aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {"champion": str(versions[0])}
    assert [e.action for e in registry.history()][-1] == "rollback"

"""Fixtures of the deployment tests: the serving tests' world, plus a second version of its model.

``world`` (imported from the serving tests) trains, registers and packages a tiny real model and
writes the online snapshot. :func:`versions` registers the same run's model a second time (MLflow
version 2: the same weights under another version) and packages it, so a blue-green switch
changes the ``X-Model-Version`` the callers see. :func:`serve` starts a :class:`ServedProcess` of
the service from source with its own ``BENTOML_HOME``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from ml_platform.lib.deploy.process import SOURCE_TARGET, ServedProcess
from ml_platform.lib.serving.packaging import ServedModelInfo, package_version
from ml_platform_tests.serving.conftest import MAX_BATCH, MODEL_NAME, ServingWorld, body_of, world

__all__ = ["world"]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def flights(world: ServingWorld) -> list[dict[str, Any]]:
    """Request bodies of 64 flights the model knows."""
    return [body_of(row) for row in world.known_flights(64).iter_rows(named=True)]


@pytest.fixture(scope="session")
def flight(flights: list[dict[str, Any]]) -> dict[str, Any]:
    return flights[0]


@dataclass(frozen=True)
class Versions:
    first: ServedModelInfo
    second: ServedModelInfo


@pytest.fixture(scope="session")
def versions(world: ServingWorld) -> Versions:
    """Version 1 (``world.packaged``) and version 2: the same run's model registered again."""
    client = mlflow.MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    first = client.get_model_version(MODEL_NAME, world.packaged.model_version)
    second = client.create_model_version(MODEL_NAME, source=str(first.source), run_id=first.run_id)
    packaged = package_version(
        world.tracking_uri, MODEL_NAME, str(second.version), models_dir=world.bentoml_home / "models"
    )
    assert packaged.model_version != world.packaged.model_version
    return Versions(world.packaged, packaged)


def server_env(world: ServingWorld, home: Path, **overrides: str) -> dict[str, str]:
    """The environment of a server: no MLP_/BENTOML_ variables of the caller, its own BENTOML_HOME."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_"))},
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLP_ROOT_DIR": str(world.root),
        "MLP_STORAGE_ROOT": "storage",
        "MLP_GIT_COMMIT": "test",
        "MLP_SERVING_MAX_BATCH": str(MAX_BATCH),
        **overrides,
    }


ServeFactory = Callable[..., ServedProcess]


@pytest.fixture
def serve(world: ServingWorld, tmp_path: Path) -> Iterator[ServeFactory]:
    """``serve(name, model_tag, wait=True, **env)``: a started server, stopped at teardown."""
    started: list[ServedProcess] = []

    def make(
        name: str, model_tag: str, *, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> ServedProcess:
        home = tmp_path / f"bentoml-{name}"
        shutil.copytree(world.bentoml_home / "models", home / "models")
        process = ServedProcess(
            SOURCE_TARGET,
            env=server_env(world, home, **dict(env or {})),
            args={"model_tag": model_tag},
            name=name,
            cwd=REPO,
            log_path=tmp_path / f"server-{name}.log",
            ready_timeout_s=120.0,
            grace_s=10.0,
        )
        started.append(process)
        return process.start(wait=wait)

    try:
        yield make
    finally:
        for process in started:
            process.stop()

"""package_version: a registered MLflow version becomes a BentoML model, once, with its identity."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import mlflow
import pytest
from bentoml._internal.models import ModelStore

from ml_platform.lib.serving.packaging import (
    SPEC_FILE,
    WEIGHTS_FILE,
    PackagingError,
    bento_tag,
    load_served_model,
    package_version,
    redact_uri,
    resolve_alias,
    served_model_info,
)
from ml_platform_tests.serving.conftest import MODEL_NAME, ServingWorld

pytestmark = pytest.mark.slow


def test_the_bento_model_holds_the_version_and_its_identity(world: ServingWorld) -> None:
    packaged = world.packaged
    client = mlflow.MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    version = client.get_model_version(MODEL_NAME, packaged.model_version)
    assert packaged.model_name == MODEL_NAME and packaged.run_id == version.run_id
    assert packaged.tag == bento_tag(packaged.model_version, str(version.run_id))
    assert packaged.tag == f"delay_model:v{packaged.model_version}-{str(version.run_id)[:12]}"
    assert sorted(p.name for p in packaged.path.iterdir()) == sorted([WEIGHTS_FILE, SPEC_FILE, "model.yaml"])

    stored = bentoml.models.get(packaged.tag, _model_store=ModelStore(str(world.bentoml_home / "models")))
    assert stored.info.labels == {"model_name": MODEL_NAME, "mlflow_version": packaged.model_version}
    metadata = stored.info.metadata
    assert metadata["mlflow_run_id"] == version.run_id and metadata["mlflow_source"] == version.source
    assert metadata["mlflow_tracking_uri"] == world.tracking_uri
    assert set(metadata["sha256"]) == {WEIGHTS_FILE, SPEC_FILE}
    assert served_model_info(stored) == packaged

    # the same network and preprocessor as the registered pyfunc
    spec = json.loads((packaged.path / SPEC_FILE).read_text())
    assert world.model.preprocessor.to_dict() == spec["preprocessor"]


def test_packaging_again_reuses_the_model(world: ServingWorld) -> None:
    store = world.bentoml_home / "models"
    again = package_version(world.tracking_uri, MODEL_NAME, world.packaged.model_version, models_dir=store)
    assert again == world.packaged
    assert [m.tag for m in ModelStore(str(store)).list()] == [bentoml.Tag.from_taglike(world.packaged.tag)]


def test_unknown_versions_and_aliases_fail_clearly(world: ServingWorld, tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match=rf"{MODEL_NAME} v99 in sqlite:"):
        package_version(world.tracking_uri, MODEL_NAME, "99", models_dir=tmp_path)
    with pytest.raises(PackagingError, match=rf"{MODEL_NAME}@nobody not found"):
        resolve_alias(world.tracking_uri, MODEL_NAME, "nobody")
    with pytest.raises(PackagingError, match="lacks"):
        load_served_model(tmp_path)


def test_redact_uri_drops_only_the_password() -> None:
    assert redact_uri("postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow") == (
        "postgresql+psycopg2://mlflow@db:5432/mlflow"
    )
    assert redact_uri("https://user:pw@mlflow.example.com/") == "https://user@mlflow.example.com/"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_uri("http://mlflow:5000") == "http://mlflow:5000"

"""A registered MLflow version of the delay model as a BentoML model, and back to a ``DelayModel``.

:func:`package_version` copies exactly two files of the version's pyfunc artifacts, the weights
(``weights.pt``, a torch ``state_dict``) and the spec (``spec.json``: the fitted preprocessor and
the architecture), into a new model of the BentoML model store, with the version's identity:

* tag ``delay_model:v<version>-<run id[:12]>``: deterministic, so packaging the same version
  again returns the model already in the store instead of a duplicate (the ``delay_bento`` asset
  can rematerialize); the run id keeps versions of two registries apart;
* labels ``model_name`` and ``mlflow_version`` (what ``bentoml models list`` shows);
* metadata: registered model name, version, run id, model source, aliases at packaging time,
  the tracking URI *without its password*, and the sha256 of both files.

Nothing is unpickled: the pyfunc's ``python_model.pkl`` is never downloaded; the network is
rebuilt from the spec and loaded with ``torch.load(weights_only=True)`` by
:meth:`~ml_platform.lib.training.pyfunc.DelayModel.load`, the same code that evaluation uses, so the
Bento scores exactly what was evaluated.

:func:`load_served_model` loads such a folder; :func:`served_model_info` reads the identity back
from a BentoML model. ``bentoml`` and ``mlflow`` are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ml_platform.lib.training.pyfunc import DelayModel

#: Name of the model in the BentoML model store.
BENTO_MODEL_NAME: Final = "delay_model"
WEIGHTS_FILE: Final = "weights.pt"
SPEC_FILE: Final = "spec.json"
#: The pyfunc artifact names (``pyfunc.WEIGHTS``, ``pyfunc.SPEC``) and the file each becomes.
_ARTIFACTS: Final = {"weights": WEIGHTS_FILE, "spec": SPEC_FILE}


class PackagingError(RuntimeError):
    """A registered version cannot be packaged (missing artifact, unreadable spec, tag clash)."""


@dataclass(frozen=True)
class ServedModelInfo:
    """Which registered version a BentoML model holds."""

    tag: str
    model_name: str
    model_version: str
    run_id: str
    path: Path

    def describe(self) -> str:
        """``delay_model v3 (run abc..., bento model delay_model:v3-abc...)``."""
        return f"{self.model_name} v{self.model_version} (run {self.run_id}, bento model {self.tag})"


def redact_uri(uri: str) -> str:
    """``uri`` without its password (the user is kept); other URIs unchanged."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}{host}").geturl()


def bento_tag(model_version: str, run_id: str, name: str = BENTO_MODEL_NAME) -> str:
    """The deterministic BentoML tag of a registered version."""
    return f"{name}:v{model_version}-{run_id[:12].lower()}"


def resolve_alias(tracking_uri: str, model_name: str, alias: str) -> str:
    """The version ``alias`` points to (e.g. ``champion``).

    Raises:
        PackagingError: the registry has no such alias.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        raise PackagingError(
            f"{model_name}@{alias} not found in {redact_uri(tracking_uri)}: {exc.message}"
        ) from exc


def package_version(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    models_dir: Path | None = None,
    bento_model_name: str = BENTO_MODEL_NAME,
) -> ServedModelInfo:
    """Copy registered ``model_name`` version ``version`` into the BentoML model store.

    Args:
        tracking_uri: The MLflow tracking (and registry) URI.
        model_name: The registered model.
        version: Its version.
        models_dir: The model store folder (``<BENTOML_HOME>/models``); default: the store of the
            ``BENTOML_HOME`` this process started with.
        bento_model_name: Name of the model in the store.

    Returns:
        The packaged model (already in the store when this version was packaged before).

    Raises:
        PackagingError: the version lacks an artifact, its spec does not load, or the tag exists
            with other content.
    """
    import bentoml
    import mlflow
    from bentoml.exceptions import NotFound
    from mlflow.exceptions import MlflowException

    store_kwargs: dict[str, Any] = {}
    if models_dir is not None:
        from bentoml._internal.models import ModelStore

        models_dir.mkdir(parents=True, exist_ok=True)
        store_kwargs["_model_store"] = ModelStore(str(models_dir))

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    where = f"{model_name} v{version} in {redact_uri(tracking_uri)}"
    try:
        mv = client.get_model_version(model_name, str(version))
        download_uri = client.get_model_version_download_uri(model_name, str(version))
    except MlflowException as exc:
        raise PackagingError(f"{where}: {exc.message}") from exc
    run_id = str(mv.run_id or "")
    if not run_id:
        raise PackagingError(f"{where} has no MLflow run: it was not registered by a training")
    tag = bento_tag(str(version), run_id, bento_model_name)

    with tempfile.TemporaryDirectory(prefix="mlp-package-") as tmp:
        files = _download_artifacts(download_uri, tracking_uri, Path(tmp), where)
        digests = {name: _sha256(path) for name, path in files.items()}
        try:
            existing = bentoml.models.get(tag, **store_kwargs)
        except NotFound:
            existing = None
        if existing is not None:
            held = existing.info.metadata.get("sha256", {})
            if held != digests:
                raise PackagingError(
                    f"{where}: BentoML model {tag} exists with other files ({held!r} != {digests!r})"
                )
            return served_model_info(existing)
        metadata: dict[str, Any] = {
            "model_name": model_name,
            "mlflow_version": str(version),
            "mlflow_run_id": run_id,
            "mlflow_source": str(mv.source or ""),
            "mlflow_aliases": sorted(mv.aliases or []),
            "mlflow_tracking_uri": redact_uri(tracking_uri),
            "sha256": digests,
            "packaged_at": datetime.now(UTC).isoformat(),
        }
        labels = {"model_name": model_name, "mlflow_version": str(version)}
        with bentoml.models.create(
            tag, labels=labels, metadata=metadata, module=__name__, **store_kwargs
        ) as created:
            target = Path(created.path)
            for name, path in files.items():
                shutil.copyfile(path, target / name)
            try:
                load_served_model(target)  # refuse to store a model that does not load
            except Exception as exc:
                raise PackagingError(f"{where}: the artifacts do not load as a DelayModel: {exc}") from exc
        return served_model_info(bentoml.models.get(tag, **store_kwargs))


def _download_artifacts(download_uri: str, tracking_uri: str, folder: Path, where: str) -> dict[str, Path]:
    """Download the MLmodel file, then the weights and spec it names (nothing else)."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    base = download_uri.rstrip("/")
    try:
        mlmodel = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/MLmodel", dst_path=str(folder / "meta"), tracking_uri=tracking_uri
            )
        )
        flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
        artifacts: dict[str, Any] = flavor.get("artifacts") or {}
        files: dict[str, Path] = {}
        for name, file_name in _ARTIFACTS.items():
            if name not in artifacts:
                raise PackagingError(f"{where}: the pyfunc has no artifact {name!r} ({sorted(artifacts)})")
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/{artifacts[name]['path']}",
                dst_path=str(folder / name),
                tracking_uri=tracking_uri,
            )
            files[file_name] = Path(local)
    except (MlflowException, OSError, KeyError, TypeError) as exc:
        raise PackagingError(f"{where}: cannot download its artifacts from {base}: {exc}") from exc
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def served_model_info(model: Any) -> ServedModelInfo:
    """The identity :func:`package_version` stored on a BentoML model (``bentoml.models.get``)."""
    metadata: dict[str, Any] = dict(model.info.metadata)
    missing = [k for k in ("model_name", "mlflow_version", "mlflow_run_id") if k not in metadata]
    if missing:
        raise PackagingError(f"BentoML model {model.tag} was not packaged by {__name__}: no {missing}")
    return ServedModelInfo(
        tag=str(model.tag),
        model_name=str(metadata["model_name"]),
        model_version=str(metadata["mlflow_version"]),
        run_id=str(metadata["mlflow_run_id"]),
        path=Path(model.path),
    )


def load_served_model(path: Path) -> DelayModel:
    """The ``DelayModel`` in a packaged folder (``weights.pt`` + ``spec.json``).

    Raises:
        PackagingError: a file is missing.
    """
    from ml_platform.lib.training.pyfunc import DelayModel

    weights, spec = Path(path) / WEIGHTS_FILE, Path(path) / SPEC_FILE
    missing = [p.name for p in (weights, spec) if not p.is_file()]
    if missing:
        raise PackagingError(f"{path} lacks {missing}: not a packaged delay model")
    model = DelayModel()
    model.load(weights, spec)
    return model

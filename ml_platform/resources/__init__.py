"""One ConfigurableResource per external system."""

from ml_platform.resources.deployment import DeploymentResource
from ml_platform.resources.mlflow import MlflowResource, OptunaResource
from ml_platform.resources.monitoring import MonitoringResource
from ml_platform.resources.online import OnlineStoreResource
from ml_platform.resources.sources import RawSourceResource
from ml_platform.resources.storage import VersionedStoreResource

__all__ = [
    "DeploymentResource",
    "MlflowResource",
    "MonitoringResource",
    "OnlineStoreResource",
    "OptunaResource",
    "RawSourceResource",
    "VersionedStoreResource",
]

"""One ConfigurableResource per external system."""

from ml_platform.resources.sources import RawSourceResource
from ml_platform.resources.storage import VersionedStoreResource

__all__ = ["RawSourceResource", "VersionedStoreResource"]

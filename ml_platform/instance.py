"""The Dagster instance of a deployment: project-local DAGSTER_HOME for the embedded default."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from ml_platform.lib.versioning import CODE_ROOT
from ml_platform.settings import PlatformSettings

#: The instance configuration that comes with the code: the checkout's top-level ``dagster.yaml``.
CODE_CONFIG = CODE_ROOT / "dagster.yaml"


def instance_config(settings: PlatformSettings) -> Path | None:
    """The ``dagster.yaml`` DAGSTER_HOME gets: the root's own, else the one beside the code.

    A root outside the checkout (``MLP_ROOT_DIR`` elsewhere) has none unless put there, and gets the
    code's: sqlite storage under DAGSTER_HOME, run monitoring, the run queue's limit, no telemetry.
    ``None`` only for an installed package without a checkout and a root without one.
    """
    for candidate in (settings.root_dir / "dagster.yaml", CODE_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def prepare_dagster_home(settings: PlatformSettings) -> None:
    """Create ``DAGSTER_HOME`` with the instance configuration (:func:`instance_config`) and export it.

    It is copied in whenever it changed, wherever the root is, so the CLI, ``make ui`` and the daemon
    all open the same instance, configured as the checkout's ``dagster.yaml`` says.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = instance_config(settings)
    target = home / "dagster.yaml"
    if config is not None and (not target.exists() or target.read_bytes() != config.read_bytes()):
        shutil.copyfile(config, target)
    os.environ["DAGSTER_HOME"] = str(home)


def open_instance(settings: PlatformSettings) -> dg.DagsterInstance:
    """The deployment's persistent instance (sqlite under ``settings.dagster_home`` by default)."""
    prepare_dagster_home(settings)
    return dg.DagsterInstance.get()

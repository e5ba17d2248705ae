"""The Dagster instance of a deployment: project-local DAGSTER_HOME for the embedded default."""

from __future__ import annotations

import os
import shutil

import dagster as dg

from ml_platform.settings import PlatformSettings


def prepare_dagster_home(settings: PlatformSettings) -> None:
    """Create ``DAGSTER_HOME`` with the checkout's ``dagster.yaml`` and export it.

    The top-level ``dagster.yaml`` is the source of truth; it is copied in whenever it changed, so
    the CLI, ``make ui`` and the daemon all open the same instance.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = settings.root_dir / "dagster.yaml"
    target = home / "dagster.yaml"
    if config.exists() and (not target.exists() or target.read_bytes() != config.read_bytes()):
        shutil.copyfile(config, target)
    os.environ["DAGSTER_HOME"] = str(home)


def open_instance(settings: PlatformSettings) -> dg.DagsterInstance:
    """The deployment's persistent instance (sqlite under ``settings.dagster_home`` by default)."""
    prepare_dagster_home(settings)
    return dg.DagsterInstance.get()

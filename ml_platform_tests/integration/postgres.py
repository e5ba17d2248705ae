"""Throwaway databases on the local PostgreSQL, shared by the integration tests.

``MLP_TEST_POSTGRES`` (a libpq-style ``host:port:user``) points elsewhere; without a reachable
server the calling test is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Postgres:
    """Where the test server is."""

    host: str
    port: int
    user: str

    def url(self, database: str, password: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg2 driver)."""
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg2://{self.user}{secret}@{self.host}:{self.port}/{database}"


def server() -> Postgres:
    """The server ``MLP_TEST_POSTGRES`` names (default ``127.0.0.1:5432:postgres``)."""
    host, port, user = os.environ.get("MLP_TEST_POSTGRES", "127.0.0.1:5432:postgres").split(":")
    return Postgres(host, int(port), user)


@contextmanager
def throwaway_databases(*kinds: str, prefix: str = "mlp_test") -> Iterator[tuple[Postgres, dict[str, str]]]:
    """Create one fresh database per kind; yield the server and their names; drop them afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    pg = server()
    try:
        admin = psycopg2.connect(
            host=pg.host, port=pg.port, user=pg.user, dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {pg.host}:{pg.port} as {pg.user} ({exc}); set MLP_TEST_POSTGRES")
    admin.autocommit = True
    names = {kind: f"{prefix}_{kind}_{uuid.uuid4().hex[:8]}" for kind in kinds}
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield pg, names
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

"""The transports: openlineage-python's own FileTransport (JSON lines), HttpTransport, NoopTransport."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openlineage.client.transport import Transport

    from ml_platform.lineage.openlineage.config import OpenLineageConfig


def make_transport(config: OpenLineageConfig) -> Transport:
    """The transport ``config`` names.

    * ``file``: one JSON line per event, appended to ``config.events_file``.
    * ``http``: ``POST <url>/<endpoint>`` (Marquez: ``/api/v1/lineage``), ``Authorization: Bearer``
      with the API key when one is set; 5xx answers are retried by the client's default policy.
    * ``none``: events are built and validated, and go nowhere.
    """
    if config.transport == "file":
        from openlineage.client.transport.file import FileConfig, FileTransport

        config.events_file.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(config.events_file), append=True))
    if config.transport == "http":
        from openlineage.client.transport.http import (
            ApiKeyTokenProvider,
            HttpConfig,
            HttpTransport,
            TokenProvider,
        )

        assert config.url, "checked by OpenLineageConfig"
        return HttpTransport(
            HttpConfig(
                # a trailing slash keeps a path of the URL (a proxy prefix) when the endpoint is joined
                url=config.url.rstrip("/") + "/",
                endpoint=config.endpoint.lstrip("/"),
                timeout=config.timeout_s,
                auth=ApiKeyTokenProvider({"api_key": config.api_key})
                if config.api_key
                else TokenProvider({}),
            )
        )
    from openlineage.client.transport.noop import NoopConfig, NoopTransport

    return NoopTransport(NoopConfig())

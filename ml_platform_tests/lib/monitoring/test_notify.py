"""Tests of the alert notifiers against a real local HTTP receiver (no mocks of urllib)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ml_platform.lib.monitoring.notify import (
    MAX_SLACK_FIELDS,
    Alert,
    FanoutNotifier,
    LogNotifier,
    NotificationError,
    WebhookNotifier,
    build_notifier,
)

#: The retrain sensor's minimum interval: an alert must go out well within one of them.
SENSOR_INTERVAL_S = 60.0
#: Backoff used in tests, so retries cost milliseconds.
FAST_BACKOFF_S = 0.01


@dataclass
class Receiver:
    """State of the local webhook receiver."""

    url: str
    #: One ``(path, headers, parsed JSON body)`` per request received.
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    #: Status codes to answer with, in order; 200 once exhausted.
    statuses: deque[int] = field(default_factory=deque)
    #: Seconds to wait before answering.
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client has given up (timeout tests) before the answer."""


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with receiver.lock:
            receiver.requests.append((self.path, dict(self.headers.items()), json.loads(raw)))
            status = receiver.statuses.popleft() if receiver.statuses else 200
        if receiver.delay_s:
            time.sleep(receiver.delay_s)
        body = b"ok" if status == 200 else f"error {status}: ".encode() + b"x" * 500
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Talk to 127.0.0.1 directly even if the environment configures an HTTP proxy."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = _ReceiverServer(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.receiver = Receiver(url=f"http://{host!s}:{port}/hook")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_url() -> str:
    """A URL on a local port that nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def _alert(**overrides: Any) -> Alert:
    values: dict[str, Any] = {
        "title": "Drift on drift_report 2013-04-10",
        "severity": "error",
        "text": "Feature drift over threshold.\nRetrain requested.",
        "fields": {"asset": "drift_report", "partition": "2013-04-10", "features": "temp (psi 2.1 > 0.5)"},
        "occurred_at": datetime(2013, 4, 10, 6, 0, tzinfo=UTC),
        "dedupe_key": "drift:drift_report:2013-04-10",
        "link": "http://localhost:3000/assets/drift_report",
    }
    values.update(overrides)
    return Alert(**values)


def _block(payload: dict[str, Any], kind: str, *, with_fields: bool = False) -> dict[str, Any]:
    blocks = [b for b in payload["blocks"] if b["type"] == kind and ("fields" in b) == with_fields]
    assert blocks, f"no {kind} block in {payload['blocks']}"
    block: dict[str, Any] = blocks[0]
    return block


# --- webhook delivery ---------------------------------------------------------------------------


def test_webhook_posts_one_slack_block_kit_message(receiver: Receiver) -> None:
    alert = _alert()
    WebhookNotifier(receiver.url, backoff_s=FAST_BACKOFF_S).send(alert)

    assert len(receiver.requests) == 1
    path, headers, body = receiver.requests[0]
    assert path == "/hook"
    assert headers["Content-Type"].split(";")[0] == "application/json"
    assert body == WebhookNotifier.payload(alert)

    assert body["text"].startswith("[ERROR] Drift on drift_report 2013-04-10")
    assert "Retrain requested." in body["text"]
    header = _block(body, "header")
    assert header["text"] == {"type": "plain_text", "text": alert.title, "emoji": True}
    assert _block(body, "section")["text"]["type"] == "mrkdwn"
    assert "Feature drift over threshold." in _block(body, "section")["text"]["text"]
    fields = _block(body, "section", with_fields=True)["fields"]
    assert {"type": "mrkdwn", "text": "*asset*\ndrift_report"} in fields
    assert {"type": "mrkdwn", "text": "*partition*\n2013-04-10"} in fields
    assert {"type": "mrkdwn", "text": "*features*\ntemp (psi 2.1 &gt; 0.5)"} in fields
    context = " ".join(e["text"] for e in _block(body, "context")["elements"])
    assert "drift:drift_report:2013-04-10" in context
    assert "error" in context
    assert "2013-04-10T06:00:00+00:00" in context
    assert alert.link is not None
    assert any(alert.link in json.dumps(b) for b in body["blocks"] if b["type"] == "section")


def test_payload_folds_fields_beyond_slack_limit_and_skips_optional_blocks() -> None:
    many = {f"k{i}": f"v{i}" for i in range(MAX_SLACK_FIELDS + 3)}
    payload = WebhookNotifier.payload(_alert(fields=many, link=None, severity="info"))

    fields = _block(payload, "section", with_fields=True)["fields"]
    assert len(fields) == MAX_SLACK_FIELDS
    assert fields[0]["text"] == "*k0*\nv0"
    folded = fields[-1]["text"]
    for i in range(MAX_SLACK_FIELDS - 1, MAX_SLACK_FIELDS + 3):
        assert f"k{i}: v{i}" in folded
    assert payload["text"].startswith("[INFO] ")
    assert not any("Open details" in json.dumps(b) for b in payload["blocks"])

    bare = WebhookNotifier.payload(_alert(fields={}, text="", link=None))
    assert [b["type"] for b in bare["blocks"]] == ["header", "context"]


def test_500_then_200_is_retried_and_delivered_once(receiver: Receiver) -> None:
    receiver.statuses.extend([500, 200])
    WebhookNotifier(receiver.url, retries=2, backoff_s=FAST_BACKOFF_S).send(_alert())
    assert len(receiver.requests) == 2
    assert receiver.requests[0][2] == receiver.requests[1][2]


def test_429_is_retried(receiver: Receiver) -> None:
    receiver.statuses.extend([429])
    WebhookNotifier(receiver.url, retries=1, backoff_s=FAST_BACKOFF_S).send(_alert())
    assert len(receiver.requests) == 2


def test_400_is_not_retried_and_error_has_context(receiver: Receiver) -> None:
    receiver.statuses.extend([400, 200, 200])
    alert = _alert()
    notifier = WebhookNotifier(receiver.url, retries=2, backoff_s=FAST_BACKOFF_S)
    with pytest.raises(NotificationError) as caught:
        notifier.send(alert)

    assert len(receiver.requests) == 1
    message = str(caught.value)
    assert "400" in message
    assert alert.dedupe_key in message
    assert notifier.name in message
    assert caught.value.status == 400
    assert caught.value.dedupe_key == alert.dedupe_key
    assert caught.value.body is not None
    assert caught.value.body.startswith("error 400")
    assert len(caught.value.body) == 200


def test_persistent_failure_raises_after_retries_plus_one_attempts(receiver: Receiver) -> None:
    receiver.statuses.extend([503] * 10)
    with pytest.raises(NotificationError, match="503") as caught:
        WebhookNotifier(receiver.url, retries=3, backoff_s=FAST_BACKOFF_S).send(_alert())
    assert len(receiver.requests) == 4
    assert "4 attempt(s)" in str(caught.value)


def test_connection_refused_raises_after_retries(closed_url: str) -> None:
    alert = _alert()
    with pytest.raises(NotificationError) as caught:
        WebhookNotifier(closed_url, retries=2, backoff_s=FAST_BACKOFF_S).send(alert)
    message = str(caught.value)
    assert "3 attempt(s)" in message
    assert alert.dedupe_key in message
    assert caught.value.status is None


def test_timeout_is_a_delivery_failure(receiver: Receiver) -> None:
    receiver.delay_s = 0.5
    with pytest.raises(NotificationError, match="1 attempt"):
        WebhookNotifier(receiver.url, timeout_s=0.1, retries=0).send(_alert())


def test_error_does_not_leak_url_secrets(receiver: Receiver) -> None:
    receiver.statuses.extend([404])
    secret_url = receiver.url + "/T000/B000/s3cr3t?token=abc"
    notifier = WebhookNotifier(secret_url, retries=0)
    with pytest.raises(NotificationError) as caught:
        notifier.send(_alert())
    message = str(caught.value)
    assert receiver.requests[0][0] == "/hook/T000/B000/s3cr3t?token=abc"
    for secret in ("s3cr3t", "B000", "token", "abc"):
        assert secret not in message
        assert secret not in notifier.name
    assert f"url={receiver.url}/***" in message


def test_webhook_url_with_credentials_is_rejected_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        build_notifier(["webhook:https://user:pw@hooks.example.com/services/T/B/s3cr3t"])
    assert "pw" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_delivery_is_well_within_one_sensor_interval(receiver: Receiver) -> None:
    start = time.perf_counter()
    WebhookNotifier(receiver.url).send(_alert())
    elapsed = time.perf_counter() - start
    assert len(receiver.requests) == 1
    assert elapsed < 5.0 < SENSOR_INTERVAL_S


# --- alert, log and fan-out ------------------------------------------------------------------------


def test_alert_requires_timezone_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _alert(occurred_at=datetime(2013, 4, 10, 6, 0))


@pytest.mark.parametrize(
    ("severity", "level"),
    [("info", logging.INFO), ("warning", logging.WARNING), ("error", logging.ERROR)],
)
def test_log_notifier_writes_one_line_at_severity_level(
    caplog: pytest.LogCaptureFixture, severity: str, level: int
) -> None:
    logger = logging.getLogger("ml_platform_tests.notify")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    LogNotifier(logger).send(_alert(severity=severity))

    records = [r for r in caplog.records if r.name == logger.name]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == level
    line = record.getMessage()
    assert "\n" not in line
    assert f"[{severity.upper()}]" in line
    assert "Drift on drift_report 2013-04-10" in line
    assert "asset=drift_report" in line
    assert "partition=2013-04-10" in line
    assert "dedupe_key=drift:drift_report:2013-04-10" in line


def test_fanout_delivers_to_working_notifier_then_names_failed_one(
    receiver: Receiver, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broken = WebhookNotifier(closed_url, retries=0)
    working = WebhookNotifier(receiver.url, backoff_s=FAST_BACKOFF_S)
    fanout = FanoutNotifier([broken, LogNotifier(), working])
    alert = _alert()

    with pytest.raises(NotificationError) as caught:
        fanout.send(alert)

    assert len(receiver.requests) == 1
    assert any("dedupe_key=" + alert.dedupe_key in r.getMessage() for r in caplog.records)
    assert caught.value.failed == (broken.name,)
    message = str(caught.value)
    assert broken.name in message
    assert "1 of 3" in message
    assert alert.dedupe_key in message


def test_fanout_without_failures_does_not_raise(receiver: Receiver) -> None:
    FanoutNotifier([LogNotifier(), WebhookNotifier(receiver.url)]).send(_alert())
    assert len(receiver.requests) == 1


# --- build_notifier ------------------------------------------------------------------------------


def test_build_notifier_parses_targets(receiver: Receiver) -> None:
    assert isinstance(build_notifier([]), LogNotifier)
    assert isinstance(build_notifier(["log"]), LogNotifier)

    webhook = build_notifier([f"webhook:{receiver.url}"])
    assert isinstance(webhook, WebhookNotifier)
    assert webhook.name == f"webhook:{receiver.url}"
    webhook.send(_alert())
    assert len(receiver.requests) == 1

    both = build_notifier(["log", "webhook:https://hooks.example.com/services/T/B/secret"])
    assert isinstance(both, FanoutNotifier)
    assert [type(n) for n in both.notifiers] == [LogNotifier, WebhookNotifier]
    assert "secret" not in both.name


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("email:x", "email:x"),
        ("webhook:ftp://x", "webhook:ftp://x"),
        ("webhook:", "webhook:"),
        ("webhook:http://", "webhook:http://"),
        ("slack", "slack"),
    ],
)
def test_build_notifier_rejects_bad_targets(target: str, shown: str) -> None:
    with pytest.raises(ValueError, match="invalid notification target") as caught:
        build_notifier(["log", target])
    assert shown in str(caught.value)

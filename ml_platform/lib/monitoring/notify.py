"""Alert notifiers of the monitoring subsystem: log lines and Slack-compatible webhooks.

Alerts are sent by the retrain sensor in the same tick that sees the evidence (a drift report over
its threshold, a failed gate, a stale partition), not by a later job or a separate schedule. An
alert therefore goes out within one sensor interval of detection: the only delay between the
evidence landing and the message is the wait for the next tick plus the delivery itself, which is
bounded by ``timeout_s`` and the retry backoff of :class:`WebhookNotifier`.

Delivery is synchronous and stdlib-only (``urllib.request``), so the notifiers can run inside a
sensor evaluation without extra dependencies. Nothing here imports dagster.

Targets are configured as strings (see :func:`build_notifier`):

* ``"log"``: one log line per alert (:class:`LogNotifier`);
* ``"webhook:<http(s) url>"``: a Slack-compatible incoming webhook (:class:`WebhookNotifier`).

Several targets are combined into a :class:`FanoutNotifier`, which delivers to every target even
when some of them fail.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, get_args
from urllib.parse import urlsplit, urlunsplit

Severity = Literal["info", "warning", "error"]

#: Slack allows at most 10 fields in one section block.
MAX_SLACK_FIELDS: Final = 10
#: Slack's limits on the texts of header blocks, section texts and section fields.
_MAX_HEADER_CHARS: Final = 150
_MAX_SECTION_CHARS: Final = 3000
_MAX_FIELD_CHARS: Final = 2000
#: How much of a failed response body a :class:`NotificationError` quotes.
_BODY_EXCERPT_CHARS: Final = 200
#: Upper bound on a server's ``Retry-After`` that a :class:`WebhookNotifier` honours, in seconds.
_MAX_RETRY_AFTER_S: Final = 10.0

_LOG_LEVELS: Final[Mapping[str, int]] = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@dataclass(frozen=True)
class Alert:
    """One alert, independent of where it is sent.

    Attributes:
        title: Short summary, used as the message header.
        severity: ``"info"``, ``"warning"`` or ``"error"``.
        text: One or more lines of plain text.
        fields: Key/value facts, e.g. ``{"asset": "drift_report", "partition": "2013-04-10"}``.
            Stored as a read-only copy.
        occurred_at: When the evidence was seen; must be timezone-aware.
        dedupe_key: Identifies the condition, so repeated alerts of it can be recognised.
        link: Optional URL with details, e.g. a Dagster UI run or asset page.

    Raises:
        ValueError: If ``occurred_at`` is naive or ``severity`` is not one of the three levels.
    """

    title: str
    severity: Severity
    text: str
    fields: Mapping[str, str] = field(hash=False)
    occurred_at: datetime
    dedupe_key: str
    link: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in get_args(Severity):
            raise ValueError(f"Alert severity must be one of {get_args(Severity)}, got {self.severity!r}")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise ValueError(f"Alert.occurred_at must be timezone-aware, got {self.occurred_at!r}")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


class Notifier(Protocol):
    """Something that delivers alerts somewhere."""

    @property
    def name(self) -> str:
        """A short, secret-free description of the target, used in errors and logs."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise :class:`NotificationError` if it could not be delivered."""
        ...


class NotificationError(RuntimeError):
    """An alert could not be delivered.

    The message carries the context needed to debug the delivery without leaking secrets: the
    notifier's name, the target URL without credentials, query string or secret path segments, the
    HTTP status, the first 200 characters of the response body and the alert's dedupe key.

    Attributes:
        notifier: Name of the notifier that failed (for a fan-out: the fan-out itself).
        dedupe_key: The undelivered alert's dedupe key.
        url: The redacted target URL, if any.
        status: The HTTP status of the last attempt, if the server answered.
        body: The first 200 characters of the last response body, if any.
        failed: For a fan-out, the names of every notifier that failed.
    """

    def __init__(
        self,
        message: str,
        *,
        notifier: str = "",
        dedupe_key: str | None = None,
        url: str | None = None,
        status: int | None = None,
        body: str | None = None,
        failed: Sequence[str] = (),
    ) -> None:
        self.notifier = notifier
        self.dedupe_key = dedupe_key
        self.url = url
        self.status = status
        self.body = body
        self.failed = tuple(failed)
        context = [
            f"{label}={value}"
            for label, value in (
                ("url", url),
                ("status", status),
                ("body", None if body is None else repr(body)),
                ("dedupe_key", dedupe_key),
            )
            if value is not None
        ]
        prefix = f"{notifier}: " if notifier else ""
        suffix = f" ({', '.join(context)})" if context else ""
        super().__init__(f"{prefix}{message}{suffix}")


class LogNotifier:
    """Writes one log line per alert, at the level matching its severity.

    Args:
        logger: Where to log; defaults to this module's logger.
    """

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger(__name__)

    def send(self, alert: Alert) -> None:
        """Log ``alert`` as one line with its severity, title, text, fields and dedupe key."""
        fields = ", ".join(f"{key}={value}" for key, value in alert.fields.items())
        text = " / ".join(line.strip() for line in alert.text.splitlines() if line.strip())
        link = f" | link={alert.link}" if alert.link else ""
        self._logger.log(
            _LOG_LEVELS[alert.severity],
            "ALERT [%s] %s | %s | %s | dedupe_key=%s%s",
            alert.severity.upper(),
            alert.title,
            text,
            fields,
            alert.dedupe_key,
            link,
        )


class WebhookNotifier:
    """POSTs alerts as Slack Block Kit JSON to an incoming webhook.

    Connection errors, timeouts and HTTP 5xx/429 answers are retried with exponential backoff
    (``backoff_s``, then twice that, ...; a 429's ``Retry-After`` is honoured up to 10 s). Other
    4xx answers are not retried. Once every attempt has failed, :class:`NotificationError` is
    raised. The worst case of one :meth:`send` is therefore about
    ``(retries + 1) * timeout_s + backoff_s * (2**retries - 1)`` seconds.

    Args:
        url: The webhook URL (http or https). It may contain secrets (Slack puts them in the path);
            they never appear in :attr:`name` or in errors.
        timeout_s: Socket timeout of one attempt, in seconds.
        retries: Attempts after the first one.
        backoff_s: Wait before the first retry, in seconds; doubled before each further one.

    Raises:
        ValueError: If ``url`` is not an http(s) URL with a host, or a number is out of range.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.5) -> None:
        _check_http_url(url)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self._url = url
        self._safe_url = redact_url(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    @property
    def name(self) -> str:
        """``"webhook:<redacted url>"``."""
        return f"webhook:{self._safe_url}"

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        """Return the Slack-compatible JSON payload that :meth:`send` posts for ``alert``.

        The payload has a fallback ``text`` (``"[ERROR] title"`` plus the text, used by
        notifications and clients without blocks) and ``blocks``: a ``header`` with the title, a
        ``section`` with the text, a ``section`` with up to 10 ``fields`` (further fields are folded
        into the last one), a ``context`` with severity, time and dedupe key, and, if the alert has
        a link, a ``section`` linking to it.

        Args:
            alert: The alert to render.

        Returns:
            A JSON-serialisable dict.
        """
        fallback = f"[{alert.severity.upper()}] {alert.title}"
        if alert.text.strip():
            fallback += f"\n{alert.text}"
        if alert.link:
            fallback += f"\n{alert.link}"

        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(alert.title, _MAX_HEADER_CHARS), "emoji": True},
            }
        ]
        if alert.text.strip():
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _clip(_escape(alert.text), _MAX_SECTION_CHARS)},
                }
            )
        field_texts = [f"*{_escape(key)}*\n{_escape(value)}" for key, value in alert.fields.items()]
        if len(field_texts) > MAX_SLACK_FIELDS:
            extra = list(alert.fields.items())[MAX_SLACK_FIELDS - 1 :]
            folded = "\n".join(f"{_escape(key)}: {_escape(value)}" for key, value in extra)
            field_texts = [*field_texts[: MAX_SLACK_FIELDS - 1], f"*more*\n{folded}"]
        if field_texts:
            blocks.append(
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": _clip(text, _MAX_FIELD_CHARS)} for text in field_texts
                    ],
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"*severity:* {alert.severity}"},
                    {"type": "mrkdwn", "text": f"*occurred_at:* {alert.occurred_at.isoformat()}"},
                    {"type": "mrkdwn", "text": f"*dedupe_key:* `{_escape(alert.dedupe_key)}`"},
                ],
            }
        )
        if alert.link:
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"<{_escape(alert.link)}|Open details>"},
                }
            )
        return {"text": fallback, "blocks": blocks}

    def send(self, alert: Alert) -> None:
        """POST ``alert`` to the webhook, retrying transient failures.

        Args:
            alert: The alert to deliver.

        Raises:
            NotificationError: If the webhook answered a non-retryable status, or every attempt
                failed.
        """
        data = json.dumps(self.payload(alert)).encode("utf-8")
        attempts = self.retries + 1
        status: int | None = None
        body: str | None = None
        reason = ""
        retry_after: float | None = None
        last_exc: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            request = urllib.request.Request(
                self._url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                status = exc.code
                body = _read_excerpt(exc)
                reason = f"HTTP {exc.code} {exc.reason}"
                if exc.code != 429 and exc.code < 500:
                    raise self._error(
                        f"webhook rejected the alert with {reason}", alert, status, body
                    ) from exc
                retry_after = _retry_after_s(exc.headers.get("Retry-After")) if exc.code == 429 else None
                last_exc = exc
            except (OSError, http.client.HTTPException) as exc:
                status, body = None, None
                reason = self._scrub(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
                last_exc = exc
        raise self._error(
            f"delivery failed after {attempts} attempt(s), last: {reason}", alert, status, body
        ) from last_exc

    def _scrub(self, text: str) -> str:
        """Remove the secret parts of the URL (path beyond its first segment, query) from ``text``."""
        parts = urlsplit(self._url)
        secrets = [self._url, parts.query, parts.path if redact_url(self._url).endswith("***") else ""]
        for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff: float = self.backoff_s * 2.0 ** (attempt - 1)
        return max(backoff, retry_after) if retry_after is not None else backoff

    def _error(self, message: str, alert: Alert, status: int | None, body: str | None) -> NotificationError:
        return NotificationError(
            message,
            notifier=self.name,
            url=self._safe_url,
            status=status,
            body=body,
            dedupe_key=alert.dedupe_key,
        )


class FanoutNotifier:
    """Sends every alert to several notifiers.

    A failing notifier does not stop the others: all are tried, then one
    :class:`NotificationError` names every notifier that failed.

    Args:
        notifiers: The notifiers, tried in order.
    """

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers: tuple[Notifier, ...] = tuple(notifiers)

    @property
    def name(self) -> str:
        """``"fanout(<name>, <name>, ...)"``."""
        return f"fanout({', '.join(n.name for n in self.notifiers)})"

    def send(self, alert: Alert) -> None:
        """Send ``alert`` to every notifier.

        Args:
            alert: The alert to deliver.

        Raises:
            NotificationError: If at least one notifier failed, after all were tried. Its
                ``failed`` attribute lists the failed notifiers' names.
        """
        failures: list[tuple[str, Exception]] = []
        for notifier in self.notifiers:
            try:
                notifier.send(alert)
            except Exception as exc:  # one broken target must not silence the others
                failures.append((notifier.name, exc))
        if failures:
            details = "; ".join(f"[{name}] {exc}" for name, exc in failures)
            raise NotificationError(
                f"{len(failures)} of {len(self.notifiers)} notifier(s) failed: {details}",
                notifier=self.name,
                dedupe_key=alert.dedupe_key,
                failed=[name for name, _ in failures],
            ) from failures[0][1]


def build_notifier(targets: Sequence[str]) -> Notifier:
    """Build a notifier from target strings.

    Args:
        targets: Each ``"log"`` or ``"webhook:<url>"`` with an http(s) URL.

    Returns:
        A :class:`LogNotifier` for an empty list, the single notifier for one target, otherwise a
        :class:`FanoutNotifier` over all of them (in order).

    Raises:
        ValueError: If a target is not of a known kind or a webhook URL is not http(s); the message
            names the bad target (with secrets of its URL redacted).
    """
    if isinstance(targets, str):  # a lone string is a Sequence[str] of characters; refuse it
        raise ValueError(f"targets must be a sequence of target strings, got the string {targets!r}")
    notifiers: list[Notifier] = []
    for raw in targets:
        target = raw.strip()
        kind, sep, rest = target.partition(":")
        if target == "log":
            notifiers.append(LogNotifier())
        elif kind == "webhook" and sep:
            try:
                notifiers.append(WebhookNotifier(rest))
            except ValueError as exc:
                raise ValueError(f"invalid notification target 'webhook:{redact_url(rest)}': {exc}") from None
        else:
            shown = f"{kind}:{redact_url(rest)}" if "://" in rest else target
            raise ValueError(
                f"invalid notification target {shown!r}: expected 'log' or 'webhook:<http(s) url>'"
            )
    if not notifiers:
        return LogNotifier()
    if len(notifiers) == 1:
        return notifiers[0]
    return FanoutNotifier(notifiers)


def redact_url(url: str) -> str:
    """Return ``url`` without credentials, query string, fragment or secret path segments.

    Only the scheme, host, port and first path segment are kept; later segments (where Slack and
    similar services put the webhook's secret) are replaced by ``***``.

    Args:
        url: Any URL.

    Returns:
        The redacted URL, e.g. ``https://hooks.slack.com/services/***``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    segments = parts.path.split("/")
    path = "/".join([*segments[:2], "***"]) if len(segments) > 2 else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _check_http_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook URL must be http or https, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook URL must not contain credentials (user:password@)")


def _escape(text: str) -> str:
    """Escape the three characters that Slack mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(4 * _BODY_EXCERPT_CHARS)
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        exc.close()
    return raw.decode("utf-8", errors="replace")[:_BODY_EXCERPT_CHARS]


def _retry_after_s(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or HTTP date), capped at 10 s."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)

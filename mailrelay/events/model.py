"""The one shape every provider's events take (`Event`), the request a webhook arrived in
(`WebhookRequest`, free of any web framework) and the ways a webhook is refused.

The taxonomy follows the one django-anymail made common (its `signals.py`): a provider's
own event names are mapped onto these words, and a refusal carries a reject reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from mailrelay.clock import iso_text
from mailrelay.datarecord import field, record
from mailrelay.errors import ExitCode, MailrelayError

EVENT_TYPES = (
    "queued",
    "sent",
    "rejected",
    "failed",
    "bounced",
    "deferred",
    "delivered",
    "complained",
    "unsubscribed",
    "opened",
    "clicked",
    "unknown",
)
REJECT_REASONS = ("invalid", "bounced", "timed_out", "blocked", "spam", "unsubscribed", "other")
MAX_AGE = 15 * 60  # seconds: a signed request older (or newer) than this is stale


class WebhookError(MailrelayError):
    """A webhook request refused: `kind` is forged, stale or malformed (what metrics count)."""

    exit_code = ExitCode.DATAERR
    http_status = 400

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def forged(message: str) -> WebhookError:
    error = WebhookError("forged", message)
    error.http_status = 401
    return error


def stale(message: str) -> WebhookError:
    error = WebhookError("stale", message)
    error.http_status = 401
    return error


def malformed(message: str) -> WebhookError:
    return WebhookError("malformed", message)


@record
class Event:
    """One thing a provider reports about one recipient of one message."""

    provider: str  # the configured provider's name
    type: str  # the provider type ("postmark", ...)
    event: str  # one of EVENT_TYPES
    event_id: str  # the provider's id for this event (what duplicates are known by)
    timestamp: datetime  # UTC
    recipient: str | None = None
    message_id: str | None = None  # the provider's message id
    reject_reason: str | None = None  # one of REJECT_REASONS, for rejected/bounced/failed
    description: str = ""  # the provider's own words (its event name, a bounce text)
    raw_event: str = ""  # the provider's event name, e.g. "hard_bounce"
    tags: list[str] = field(default_factory=list)
    rfc_message_id: str | None = None  # the message's Message-ID, when the ESP reports it

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "type": self.type,
            "event": self.event,
            "event_id": self.event_id,
            "timestamp": iso_text(self.timestamp),
            "recipient": self.recipient,
            "message_id": self.message_id,
            "reject_reason": self.reject_reason,
            "raw_event": self.raw_event,
            "description": self.description,
        }


@record
class WebhookRequest:
    """What a webhook handler needs of an HTTP request: its URL as the provider called it,
    its headers (looked up case-insensitively), its raw body and, for a form, its fields."""

    url: str
    headers: dict[str, str]
    body: bytes
    form: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise malformed(f"the body is not JSON: {exc}") from None


def utc_from_epoch(value: object, *, millis: bool = False) -> datetime:
    """A provider's epoch seconds (or milliseconds) as a UTC datetime."""
    try:
        seconds = float(value) / (1000 if millis else 1)  # type: ignore[arg-type]
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise malformed(f"not a timestamp: {str(value)[:40]!r}") from None


def utc_from_iso(value: object) -> datetime:
    """A provider's ISO 8601 time (a trailing Z allowed) as a UTC datetime."""
    if not isinstance(value, str):
        raise malformed(f"not a timestamp: {str(value)[:40]!r}")
    text = value.strip().replace("Z", "+00:00").replace(" ", "T", 1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise malformed(f"not a timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def check_age(signed_at: datetime, now: datetime, max_age: float = MAX_AGE) -> None:
    """Refuse a request signed more than `max_age` seconds from now, either way."""
    age = abs((now - signed_at).total_seconds())
    if age > max_age:
        raise stale(f"the request was signed {int(age)} s from now (at most {int(max_age)} s)")


def as_dict(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise malformed(f"{where} is not a JSON object")
    return value


def as_list(value: object, where: str) -> list[Any]:
    """A batch: a JSON array, or one object taken as a batch of one."""
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise malformed(f"{where} is not a JSON array or object")
    return value


def sub(value: object, key: str) -> dict[str, Any]:
    """The object under `key` of a JSON object, or an empty one when absent or not one."""
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def text(value: object) -> str | None:
    """A string field as sent, or None when absent or not a string."""
    return value if isinstance(value, str) and value else None

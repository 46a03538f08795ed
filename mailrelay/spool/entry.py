"""A spool entry and its file format: `QueuedMessage` (a message waiting for another try)
and `HeldMessage` (one the configuration did not allow sending yet), their queue ids, and
the JSON documents they are written as.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailrelay.clock import age_text, iso_text, utcnow
from mailrelay.datarecord import field, record

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.result import SendResult


SCHEMA = 1
SUFFIX = ".json"
FAILED = "failed"
CORRUPT = "corrupt"
HELD = "held"

ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: no words, no O/0 or I/1
ID_LENGTH = 12


def new_queue_id() -> str:
    """12 random characters (about 59 bits), as Postfix's queue ids are random from the first
    character: a few of them tell messages apart, and the time has its own field."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def _traceparent(value: object) -> str | None:
    from mailrelay.telemetry import valid_traceparent

    if value is not None and valid_traceparent(value) is None:
        raise ValueError("traceparent: expected a W3C traceparent")
    return valid_traceparent(value)


def _parse_time(doc: dict[str, Any], key: str) -> datetime:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key}: not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key}: no time zone")
    return parsed.astimezone(timezone.utc)


@record
class QueuedMessage:
    """One spool file: the message, its envelope and every try so far."""

    id: str
    created: datetime
    tries: int
    next_try: datetime
    sender: str
    recipients: list[str]
    message_doc: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    failed_reason: str | None = None
    failed_at: datetime | None = None
    path: Path | None = None
    sent_at: datetime | None = None  # accepted, but the file could not be removed then
    traceparent: str | None = None  # the first send's W3C trace context: retries join it

    @property
    def subject(self) -> str:
        value = self.message_doc.get("subject")
        return value if isinstance(value, str) else ""

    @property
    def last_error(self) -> str | None:
        for entry in reversed(self.history):
            failures = [a for a in entry.get("attempts", []) if a.get("outcome") != "accepted"]
            if failures:
                last = failures[-1]
                return f"{last.get('provider')}: {last.get('outcome')}: {last.get('detail')}"
        return None

    def expired_reason(self, now: datetime, max_age: float) -> str | None:
        """Why a flush gives up on it at `now` (older than `max_age` seconds), or None."""
        age = (now - self.created).total_seconds()
        if age <= max_age:
            return None
        why = f"expired: not delivered after {age_text(age)} and {self.tries} tries"
        if self.last_error:
            why += f"; last error: {self.last_error}"
        return why

    def refused_reason(self) -> str:
        """Why it failed when a provider refused the message itself."""
        why = "refused permanently"
        if self.last_error:
            why += f": {self.last_error}"
        return why

    def record_try(self, result: SendResult, tried_at: datetime) -> None:
        """Count a flush's try and keep its attempts in the history."""
        self.tries += 1
        self.history.append(
            {"time": iso_text(tried_at), "attempts": [a.to_dict() for a in result.attempts]}
        )

    def message(self, *, max_size: int | None = None) -> Message:
        from mailrelay.message import DEFAULT_MAX_SIZE, message_from_dict

        message = message_from_dict(
            self.message_doc,
            where=f"spool file {self.path or self.id}",
            max_size=max_size or DEFAULT_MAX_SIZE,
        )
        message.traceparent = self.traceparent
        return message

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "created": iso_text(self.created),
            "tries": self.tries,
            "next_try": iso_text(self.next_try),
            "history": self.history,
            "envelope": {"sender": self.sender, "recipients": self.recipients},
            "message": self.message_doc,
        }
        if self.failed_reason is not None:
            doc["failed_reason"] = self.failed_reason
            doc["failed_at"] = iso_text(self.failed_at or utcnow())
        if self.sent_at is not None:
            doc["sent_at"] = iso_text(self.sent_at)
        if self.traceparent is not None:
            doc["traceparent"] = self.traceparent
        return doc

    def info(self, now: datetime) -> dict[str, Any]:
        """What `queue list` shows: no body, no attachment bytes."""
        info: dict[str, Any] = {
            "id": self.id,
            "created": iso_text(self.created),
            "age_seconds": max(0, int((now - self.created).total_seconds())),
            "tries": self.tries,
            "next_try": iso_text(self.next_try),
            "due": self.next_try <= now,
            "from": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "last_error": self.last_error,
        }
        if self.failed_reason is not None:
            info["failed_reason"] = self.failed_reason
            info["failed_at"] = iso_text(self.failed_at) if self.failed_at else None
        return info

    @classmethod
    def from_document(cls, doc: object, path: Path | None = None) -> QueuedMessage:
        """Validate a parsed spool file; raises ValueError naming the bad field."""
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r} is not supported (expected {SCHEMA})")
        ident = doc.get("id")
        if not isinstance(ident, str) or not ident:
            raise ValueError("id: expected a string")
        tries = doc.get("tries")
        if type(tries) is not int or tries < 0:
            raise ValueError("tries: expected a whole number")
        history = doc.get("history")
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ValueError("history: expected a list of objects")
        envelope = doc.get("envelope")
        if not isinstance(envelope, dict):
            raise ValueError("envelope: expected an object")
        sender = envelope.get("sender")
        recipients = envelope.get("recipients")
        if not isinstance(sender, str):
            raise ValueError("envelope.sender: expected a string")
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ValueError("envelope.recipients: expected a list of strings")
        message = doc.get("message")
        if not isinstance(message, dict):
            raise ValueError("message: expected an object")
        reason = doc.get("failed_reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("failed_reason: expected a string")
        return cls(
            id=ident,
            created=_parse_time(doc, "created"),
            tries=tries,
            next_try=_parse_time(doc, "next_try"),
            sender=sender,
            recipients=list(recipients),
            message_doc=message,
            history=list(history),
            failed_reason=reason,
            failed_at=_parse_time(doc, "failed_at") if "failed_at" in doc else None,
            path=path,
            sent_at=_parse_time(doc, "sent_at") if "sent_at" in doc else None,
            traceparent=_traceparent(doc.get("traceparent")),
        )


@record
class HeldMessage:
    """A message kept as it came (sendmail mode) because the configuration did not allow
    sending it yet; `options` are sendmail's (recipients, extract, sender, full_name)."""

    id: str
    created: datetime
    reason: str
    raw: bytes
    options: dict[str, Any]
    message_id: str | None = None
    path: Path | None = None

    def _header(self, name: str) -> str:
        from email.parser import BytesHeaderParser
        from email.policy import default

        value = BytesHeaderParser(policy=default).parsebytes(self.raw).get(name)
        return " ".join(str(value).split()) if value is not None else ""

    @property
    def subject(self) -> str:
        return self._header("Subject")

    @property
    def recipients(self) -> list[str]:
        given = [str(r) for r in self.options.get("recipients", [])]
        if self.options.get("extract"):
            given += [v for v in (self._header("To"), self._header("Cc")) if v]
        return given

    def to_document(self) -> dict[str, Any]:
        import base64

        return {
            "schema": SCHEMA,
            "id": self.id,
            "created": iso_text(self.created),
            "held": True,
            "reason": self.reason,
            "message_id": self.message_id,
            "sendmail": self.options,
            "raw": base64.b64encode(self.raw).decode("ascii"),
        }

    def info(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": iso_text(self.created),
            "age_seconds": max(0, int((now - self.created).total_seconds())),
            "held": True,
            "reason": self.reason,
            "from": str(self.options.get("sender") or self._header("From")),
            "recipients": self.recipients,
            "subject": self.subject,
        }

    @classmethod
    def from_document(cls, doc: object, path: Path | None = None) -> HeldMessage:
        """Validate a parsed held file; raises ValueError naming the bad field."""
        import base64
        import binascii

        if not isinstance(doc, dict) or doc.get("held") is not True:
            raise ValueError("expected a held message (a JSON object with held: true)")
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r} is not supported (expected {SCHEMA})")
        ident, reason, raw = doc.get("id"), doc.get("reason"), doc.get("raw")
        options, message_id = doc.get("sendmail"), doc.get("message_id")
        if not isinstance(ident, str) or not ident:
            raise ValueError("id: expected a string")
        if not isinstance(reason, str):
            raise ValueError("reason: expected a string")
        if not isinstance(options, dict):
            raise ValueError("sendmail: expected an object")
        if message_id is not None and not isinstance(message_id, str):
            raise ValueError("message_id: expected a string")
        if not isinstance(raw, str):
            raise ValueError("raw: expected base64 text")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("raw: not base64") from None
        return cls(ident, _parse_time(doc, "created"), reason, data, options, message_id, path)


def load_document(data: bytes) -> Any:
    """A spool file's JSON; ValueError (one line) when it is not UTF-8, not JSON, or nested
    too deeply for the parser (RecursionError)."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None

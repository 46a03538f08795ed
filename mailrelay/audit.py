"""The JSON-lines audit log (`--log-file`, `log_file` in the config): what happened, per attempt.

One record per attempt and one per final result, appended as a line of JSON. Records say
which provider was tried, how it ended and how long it took; never a secret (details are
scrubbed here again), never the body, the subject or an attachment. Each record is a single
`os.write` on an O_APPEND descriptor, so lines from concurrent threads and processes never
interleave. A log that cannot be written costs a warning, never the mail.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailrelay.clock import iso_text, utcnow
from mailrelay.errors import ExitCode, MailrelayError
from mailrelay.fsutil import make_private_dirs, open_own_file
from mailrelay.providers.base import Outcome
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.result import Attempt, SendResult

MAX_ERROR = 1000  # characters of a provider's error kept in a record


class AuditLogError(MailrelayError):
    exit_code = ExitCode.CANTCREAT


def rfc3339_now() -> str:
    """Now in UTC as RFC 3339 with milliseconds: 2026-11-22T09:14:03.123Z."""
    return iso_text(utcnow(), timespec="milliseconds")


def _clean(value: Any) -> Any:
    """Scrub every string of a record (a secret could hide in any provider's text)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def attempt_record(message: Message, attempt: Attempt) -> dict[str, Any]:
    accepted = attempt.outcome is Outcome.ACCEPTED
    error = None if accepted else attempt.detail[:MAX_ERROR]
    return {
        "time": rfc3339_now(),
        "event": "attempt",
        "message_id": message.message_id,
        "provider": attempt.provider,
        "type": attempt.type,
        "outcome": attempt.outcome.value,
        "status": attempt.status,
        "error": error,
        "latency_ms": round(attempt.latency * 1000, 1),
        "provider_message_id": attempt.message_id if accepted else None,
    }


def result_record(message: Message, result: SendResult) -> dict[str, Any]:
    winner = result.winner
    return {
        "time": rfc3339_now(),
        "event": "result",
        "message_id": message.message_id,
        "delivered": result.delivered,
        "provider": winner.provider if winner else None,
        "attempts": sum(1 for a in result.attempts if a.tried),
        "exit_code": int(result.exit_code),
    }


class AuditLog:
    """An engine `Listener` appending JSON lines to `path` (created 0600, folders 0700)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self._lock = threading.Lock()
        self._reported: set[str] = set()  # each distinct failure is told once per process

    def attempt(self, message: Message, attempt: Attempt) -> None:
        self.write(attempt_record(message, attempt))

    def result(self, message: Message, result: SendResult) -> None:
        self.write(result_record(message, result))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_clean(record), ensure_ascii=False, separators=(", ", ": ")) + "\n"
        data = line.encode("utf-8", "surrogateescape")
        with self._lock:
            try:
                self._append(data)
            except OSError as exc:
                why = exc.strerror or str(exc)
                note = f"audit log {self.path}: cannot write: {why}"
                if note in self._reported:
                    return  # said once already: the mail matters more than repeating it
                self._reported.add(note)
                raise AuditLogError(note) from None

    def _append(self, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_APPEND
        try:
            fd = open_own_file(self.path, flags)
        except FileNotFoundError:
            make_private_dirs(self.path.parent)
            fd = open_own_file(self.path, flags)
        try:
            # one write per record: O_APPEND makes each land whole at the end of the file
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        finally:
            os.close(fd)

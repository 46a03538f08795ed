"""Flushing the spool: try every due message again, oldest first, and report what became
of each (sent, queued, held, failed, not due, locked, corrupt). What a send's result makes
of an entry is the rule every front end follows (`SendResult.fate`, see mailrelay.delivery).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mailrelay.clock import iso_text
from mailrelay.datarecord import field, record
from mailrelay.errors import ExitCode, MailrelayError
from mailrelay.spool.backoff import next_try_time
from mailrelay.spool.entry import QueuedMessage
from mailrelay.spool.files import SpoolError
from mailrelay.spool.store import SpoolStore

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.metrics import SpoolStats
    from mailrelay.result import SendResult


# What a flush did with one spool file: a delivery's status (mailrelay.delivery), or one of
# a flush's own: not due yet, locked by another flush, unreadable (moved to corrupt/)
FlushStatus = Literal["sent", "queued", "held", "failed", "not_due", "locked", "corrupt"]


@record
class FlushItem:
    """What a flush did with one spool file."""

    id: str
    status: FlushStatus
    detail: str = ""
    result: SendResult | None = None
    next_try: datetime | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "outcome": self.status,  # the JSON's word since it was first written
            "detail": self.detail,
            "next_try": iso_text(self.next_try) if self.next_try else None,
            "path": str(self.path) if self.path else None,
            "result": self.result.to_dict() if self.result else None,
        }


@record
class FlushReport:
    items: list[FlushItem] = field(default_factory=list)

    def count(self, status: FlushStatus) -> int:
        return sum(1 for item in self.items if item.status == status)

    @property
    def exit_code(self) -> int:
        """69 when a message needs a person (failed/ or corrupt/), else 75 when some stay
        queued after a try, else 78 when some stay held (the configuration does not allow
        sending them), else 0 (everything tried was sent, or nothing was due)."""
        if self.count("failed") or self.count("corrupt"):
            return int(ExitCode.UNAVAILABLE)
        if self.count("queued"):
            return int(ExitCode.TEMPFAIL)
        if self.count("held"):  # the configuration still does not allow sending them
            return int(ExitCode.CONFIG)
        return int(ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        statuses: tuple[FlushStatus, ...] = (
            "sent",
            "queued",
            "held",
            "failed",
            "corrupt",
            "not_due",
            "locked",
        )
        return {
            **{status: self.count(status) for status in statuses},
            "exit_code": self.exit_code,
            "messages": [item.to_dict() for item in self.items],
        }


Sender = Callable[["Message"], "SendResult"]


class Spool(SpoolStore):
    """The spool folder: `<id>.json` files, plus `failed/` and `corrupt/` beside them (the
    folder's QueueStore, mailrelay.spool.protocol)."""

    # --- what every spool answers (QueueStore) ------------------------------------------

    def held_keys(self) -> list[Path]:
        """What take_held, held_exists and move_corrupt take: the held files' paths."""
        return self.held_files()

    def held_exists(self, key: Path) -> bool:
        return key.exists()

    def depth(self) -> int:
        """How many messages wait (queued and held)."""
        return len(self.files()) + len(self.held_files())

    def pending(self) -> bool:
        return bool(self.files()) or bool(self.held_files())

    def place(self, entry: QueuedMessage) -> str:
        """Where an entry is, for a person: its file."""
        return str(entry.path)

    def close(self) -> None:
        """Nothing to let go of (the spool in Redis closes its connection)."""

    def stats(self) -> SpoolStats:
        """What `metrics` reports: messages per folder, the oldest queued one's age."""
        from mailrelay.metrics import spool_stats

        return spool_stats(self.path)

    def deferred_durability(self) -> contextlib.AbstractContextManager[None]:
        """Each file is fsynced as it is written: nothing to defer."""
        return contextlib.nullcontext()

    def durability_warning(self) -> str | None:
        """None: a queued message's file is fsynced before the command says so."""
        return None

    # --- flushing --------------------------------------------------------------------------

    def flush(
        self,
        send: Sender,
        *,
        retry: float,
        max_retry: float,
        max_age: float,
        ignore_backoff: bool = False,
        max_size: int | None = None,
        progress: Callable[[FlushItem | None], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> FlushReport:
        """Try every due message, oldest first, through `send` (an engine's send)."""
        report = FlushReport()
        files = self.oldest_first(self.files())
        self._remove_stale_temps()
        if on_start is not None:
            on_start(len(files))
        for path in files:
            item = self._flush_one(
                path,
                send,
                retry=retry,
                max_retry=max_retry,
                max_age=max_age,
                ignore_backoff=ignore_backoff,
                max_size=max_size,
            )
            if item is not None:  # None: sent or moved by another flush, not ours to report
                report.items.append(item)
            if progress is not None:
                progress(item)
        return report

    def _flush_one(
        self,
        path: Path,
        send: Sender,
        *,
        retry: float,
        max_retry: float,
        max_age: float,
        ignore_backoff: bool,
        max_size: int | None,
    ) -> FlushItem | None:
        ident = path.stem
        with self._locked(path) as fd:
            if fd is None:
                if path.exists():
                    return FlushItem(ident, "locked", "being sent by another flush", path=path)
                return None
            try:
                data = os.read(fd, os.fstat(fd).st_size + 1)
                entry = self._parse(data, path)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                aside = self._move(path, self.corrupt_dir)
                return FlushItem(ident, "corrupt", f"unreadable ({reason})", path=aside)
            now = self.now()
            expired = entry.expired_reason(now, max_age)
            if expired is not None:
                moved = self._fail(entry, path, expired)
                return FlushItem(ident, "failed", expired, path=moved)
            if entry.next_try > now and not ignore_backoff:
                return FlushItem(ident, "not_due", "", next_try=entry.next_try, path=path)
            if entry.sent_at is not None:  # a provider accepted it: never send it again
                return self._forget_sent(entry, path)
            try:
                message = entry.message(max_size=max_size)
            except MailrelayError as exc:  # a field that no longer validates
                aside = self._move(path, self.corrupt_dir)
                return FlushItem(ident, "corrupt", f"unreadable message ({exc})", path=aside)
            try:  # opened before sending, so a delivery can be recorded whatever follows
                marker = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                why = f"not sent: cannot open {path} to record a delivery ({exc.strerror})"
                return FlushItem(ident, "queued", why, next_try=entry.next_try, path=path)
            try:
                result = send(message)
                tried_at = self.now()
                entry.record_try(result, tried_at)
                fate = result.fate  # the rule of every front end (mailrelay.delivery)
                if fate == "sent":  # remove it
                    return self._sent(entry, path, marker, result)
            finally:
                os.close(marker)
            if fate == "refused":  # a provider refused the message itself: failed/
                why = entry.refused_reason()
                moved = self._fail(entry, path, why)
                return FlushItem(ident, "failed", why, result=result, path=moved)
            # "retry": it stays queued, tried again after its backoff
            entry.next_try = next_try_time(tried_at, entry.tries, retry, max_retry, rand=self.rand)
            self._write(path, entry.to_document())
            return FlushItem(
                ident,
                "queued",
                entry.last_error or "",
                result=result,
                next_try=entry.next_try,
                path=path,
            )

    def _sent(self, entry: QueuedMessage, path: Path, marker: int, result: SendResult) -> FlushItem:
        """A provider accepted it: remove the file; when that fails, record the delivery in
        the file itself (through `marker`, opened before the send), so that no later flush
        sends it again. Only a SIGKILL between the answer and this leaves it to be resent."""
        winner = result.winner
        detail = f"via {winner.provider}" if winner else ""
        try:
            os.unlink(path)
            self._sync_dir(path.parent)
            return FlushItem(entry.id, "sent", detail, result=result)
        except FileNotFoundError:
            return FlushItem(entry.id, "sent", detail, result=result)
        except (OSError, SpoolError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        entry.sent_at = self.now()
        data = json.dumps(entry.to_document(), indent=1, ensure_ascii=False).encode() + b"\n"
        try:
            os.ftruncate(marker, 0)
            os.pwrite(marker, data, 0)
            os.fsync(marker)
        except OSError as exc:
            raise self._error(f"sent {entry.id} but cannot remove or mark {path}", exc) from None
        self.warn(
            f"sent {entry.id} but cannot remove {path} ({reason}); marked as sent, it will not "
            "be sent again"
        )
        return FlushItem(entry.id, "sent", f"{detail}; marked as sent".lstrip("; "), result=result)

    def _forget_sent(self, entry: QueuedMessage, path: Path) -> FlushItem | None:
        """A file an earlier flush marked as sent: remove it now, or leave it (unsent)."""
        try:
            os.unlink(path)
            self._sync_dir(path.parent)
        except FileNotFoundError:
            return None
        except (OSError, SpoolError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            when = iso_text(entry.sent_at) if entry.sent_at else "?"
            why = f"sent at {when}; its spool file cannot be removed ({reason})"
            return FlushItem(entry.id, "not_due", why, path=path)
        return None

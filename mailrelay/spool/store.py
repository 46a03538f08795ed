"""The spool folder: one JSON file per message (written, locked and moved by files.py).

One JSON file per message (mode 0600) in the spool folder (0700), written as a temp file in
the same folder, fsynced, renamed into place, and the folder fsynced: a message the command
said was queued survives a crash. A flush takes an exclusive, non-blocking `flock` on each
message file and checks that the path still names the file it locked, so two flushes at once
never send one message twice; a file is removed only after a provider accepted the message.
Messages past the maximum age, or refused permanently, move to `failed/`; a file that cannot
be read moves to `corrupt/`. A message the configuration did not allow sending yet (sendmail
mode with no config, no usable From, no providers) waits in `held/` as it came, with the
reason, until a flush can send it. Nothing is ever deleted but by delivery or `queue drop`.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mailrelay.backoff import Random
from mailrelay.clock import Now, iso_text, utcnow
from mailrelay.errors import ExitCode, InputFileError, MailrelayError
from mailrelay.spool.backoff import next_try_time
from mailrelay.spool.entry import (
    CORRUPT,
    FAILED,
    HELD,
    SUFFIX,
    HeldMessage,
    QueuedMessage,
    load_document,
    new_queue_id,
)
from mailrelay.spool.files import NameTaken, SpoolError, SpoolFiles

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.result import Attempt


def default_spool_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mailrelay")) / "spool"


T = TypeVar("T")


class UnknownQueueId(InputFileError):
    """No queued or failed message has this id (exit 66)."""


class QueueIdBusy(MailrelayError):
    """The message is locked by a flush that is sending it right now (exit 75: retry)."""

    exit_code = ExitCode.TEMPFAIL


class SpoolStore(SpoolFiles):
    """The spool folder's files: `<id>.json`, plus `failed/`, `corrupt/` and `held/` beside
    them; writing, reading, locking and moving them (`Spool` adds the flush)."""

    def __init__(
        self,
        path: Path,
        *,
        warn: Callable[[str], None] | None = None,
        now: Now = utcnow,
        rand: Random = random.random,
    ) -> None:
        self.path = Path(path)
        self.failed_dir = self.path / FAILED
        self.corrupt_dir = self.path / CORRUPT
        self.held_dir = self.path / HELD
        self.warn = warn or (lambda _msg: None)
        self.now = now
        self.rand = rand  # the jitter of each retry's wait (mailrelay.backoff)
        self.where = str(self.path)  # what messages and `queue list` call this spool
        self.failed_where = str(self.failed_dir)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    # --- writing ---------------------------------------------------------------------------

    def add(
        self,
        message: Message,
        attempts: list[Attempt],
        *,
        retry: float,
        max_retry: float,
    ) -> QueuedMessage:
        """Queue a message after its first try failed; raises SpoolError when it cannot."""
        from mailrelay.message import message_to_dict

        now = self.now()
        entry = QueuedMessage(
            id=new_queue_id(),
            created=now,
            tries=1,
            next_try=next_try_time(now, 1, retry, max_retry, rand=self.rand),
            sender=str(message.envelope_from or message.sender),
            recipients=[str(a) for a in message.recipients()],
            message_doc=message_to_dict(message),
            history=[{"time": iso_text(now), "attempts": [a.to_dict() for a in attempts]}],
            traceparent=message.traceparent,
        )
        entry.path = self._write_new(self.path, entry)
        return entry

    def _write_new(self, directory: Path, entry: QueuedMessage | HeldMessage) -> Path:
        """Write a new entry under a queue id nobody holds yet; its path."""
        self._make_dir(directory)
        for _ in range(8):  # a clash is a one in 2**59 event: a fresh id settles it
            target = directory / f"{entry.id}{SUFFIX}"
            try:
                self._write(target, entry.to_document(), exclusive=True)
                return target
            except NameTaken:
                entry.id = new_queue_id()
        raise SpoolError(f"spool {self.path}: no free queue id after 8 tries")

    def hold(
        self, raw: bytes, *, reason: str, options: dict[str, Any], message_id: str | None
    ) -> HeldMessage:
        """Keep a message as it came in held/, with the reason; raises SpoolError."""
        now = self.now()
        entry = HeldMessage(new_queue_id(), now, reason, raw, options, message_id)
        entry.path = self._write_new(self.held_dir, entry)
        return entry

    def held_dirs(self) -> list[Path]:
        """held/ here, and the default spool's, where sendmail mode keeps a message when
        it could not read the configuration (and so this spool's place)."""
        dirs = [self.held_dir]
        fallback = default_spool_dir() / HELD
        if fallback != self.held_dir:
            dirs.append(fallback)
        return dirs

    def held_files(self) -> list[Path]:
        files: list[Path] = []
        for directory in self.held_dirs():
            files += self._listdir(directory)
        return sorted(files, key=lambda p: p.name)

    def held(self) -> list[HeldMessage]:
        """Every readable held message, oldest first."""
        out: list[HeldMessage] = []
        for path in self.held_files():
            try:
                out.append(self.read_held(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                self.warn(f"held file {path} is unreadable ({reason}); skipped")
        return sorted(out, key=lambda entry: entry.created)  # ids are random: sort by time

    def read_held(self, path: Path) -> HeldMessage:
        with open(path, "rb") as f:
            return HeldMessage.from_document(load_document(f.read()), path)

    @contextlib.contextmanager
    def take_held(self, path: Path) -> Iterator[HeldMessage | None]:
        """The held message at `path` under its lock; None when another process has it or
        it is gone. An unreadable file moves to corrupt/ and raises ValueError."""
        with self._locked(path) as fd:
            if fd is None:
                yield None
                return
            try:
                entry = HeldMessage.from_document(
                    load_document(os.read(fd, os.fstat(fd).st_size + 1)), path
                )
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                aside = self._move(path, self.corrupt_dir)
                raise ValueError(f"unreadable ({reason}); moved to {aside}") from None
            yield entry

    def release(self, entry: HeldMessage) -> None:
        """Remove a held message (sent, or queued in its place); call under take_held."""
        assert entry.path is not None
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(f"cannot remove {entry.path}", exc) from None
        self._sync_dir(entry.path.parent)

    def rehold(self, entry: HeldMessage, reason: str) -> None:
        """Keep a held message with a new reason (under take_held)."""
        assert entry.path is not None
        entry.reason = reason
        self._write(entry.path, entry.to_document())

    def move_corrupt(self, path: Path) -> Path:
        return self._move(path, self.corrupt_dir)

    def fail(self, entry: QueuedMessage, reason: str) -> Path:
        """Move a queued message to failed/ with the reason (a permanent refusal)."""
        assert entry.path is not None
        return self._fail(entry, entry.path, reason)

    # --- reading ---------------------------------------------------------------------------

    def files(self, *, failed: bool = False) -> list[Path]:
        """The message files, by name (see oldest_first for the order they were queued)."""
        return self._listdir(self.failed_dir if failed else self.path)

    def read(self, path: Path) -> QueuedMessage:
        """One spool file; raises ValueError (unreadable) or FileNotFoundError (gone)."""
        with open(path, "rb") as f:
            return self._parse(f.read(), path)

    @staticmethod
    def _parse(data: bytes, path: Path) -> QueuedMessage:
        return QueuedMessage.from_document(load_document(data), path)

    def oldest_first(self, paths: list[Path]) -> list[Path]:
        """Paths in the order their messages were queued (ids are random); unreadable last."""

        def created(path: Path) -> tuple[int, float, str]:
            try:
                return (0, self.read(path).created.timestamp(), path.name)
            except (OSError, ValueError):
                return (1, 0.0, path.name)

        return sorted(paths, key=created)

    def entries(self, *, failed: bool = False) -> list[QueuedMessage]:
        """Every readable message, oldest first; an unreadable file is reported and left
        for the next flush to move aside."""
        out: list[QueuedMessage] = []
        for path in self.files(failed=failed):
            try:
                out.append(self.read(path))
            except FileNotFoundError:
                continue  # sent or moved by a flush meanwhile
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                self.warn(f"spool file {path} is unreadable ({reason}); skipped")
        return sorted(out, key=lambda e: e.created)

    def find(self, ident: str) -> QueuedMessage:
        """A message by id (or a unique start of one), queued or failed."""
        return _read_found(ident, self._locate(ident), self.read, "spool file")

    def find_any(self, ident: str) -> QueuedMessage | HeldMessage:
        """A message by id (or a unique start of one): queued, failed or held."""
        path = self._locate(ident)
        if path.parent not in self.held_dirs():
            return self.find(ident)
        return _read_found(ident, path, self.read_held, "held file")

    def _locate(self, ident: str) -> Path:
        ident = ident.strip()
        if ident.endswith(SUFFIX):
            ident = ident[: -len(SUFFIX)]
        if not ident or "/" in ident or ident.startswith("."):
            raise UnknownQueueId(f"queue: no message {ident!r}")
        candidates = self.files() + self.files(failed=True) + self.held_files()
        exact = [p for p in candidates if p.name == f"{ident}{SUFFIX}"]
        if exact:
            return exact[0]
        found = [p for p in candidates if p.name.startswith(ident)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UnknownQueueId(
                f"queue: {ident} matches {len(found)} messages; give more of the id"
            )
        raise UnknownQueueId(
            f"queue: no message {ident} in {self.path} (see 'mailrelay queue list')"
        )

    # --- removing --------------------------------------------------------------------------

    def drop(self, ident: str) -> QueuedMessage:
        """Remove a queued or failed message for good (under its lock)."""
        path = self._locate(ident)
        with self._locked(path) as fd:
            if fd is None:
                raise QueueIdBusy(
                    f"queue: message {path.stem} is being sent by a flush right now; "
                    "try again in a moment"
                )
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise UnknownQueueId(f"queue: no message {ident} (sent meanwhile)") from None
            except OSError as exc:
                raise self._error(f"cannot read {path}", exc) from None
            try:
                entry = self._parse(data, path)
            except ValueError:
                entry = QueuedMessage(path.stem, self.now(), 0, self.now(), "", [], {}, path=path)
            try:
                os.unlink(path)
            except OSError as exc:
                raise self._error(f"cannot remove {path}", exc) from None
            self._sync_dir(path.parent)
            return entry

    # --- moving -----------------------------------------------------------------------------

    def _fail(self, entry: QueuedMessage, path: Path, reason: str) -> Path:
        """Move to failed/ with the reason recorded; the file is kept for a person."""
        entry.failed_reason = reason
        entry.failed_at = self.now()
        self._make_dir(self.failed_dir)
        target = self._free_name(self.failed_dir, path)
        self._write(target, entry.to_document(), exclusive=True)
        try:
            os.unlink(path)  # under our lock: no other flush sees it in between
        except OSError as exc:
            raise self._error(
                f"moved {path.stem} to failed/ but cannot remove {path}", exc
            ) from None
        self._sync_dir(path.parent)
        return target


def _read_found(ident: str, path: Path, read: Callable[[Path], T], kind: str) -> T:
    """`read(path)` of the file found for `ident`; gone meanwhile or unreadable, refused."""
    try:
        return read(path)
    except FileNotFoundError:
        raise UnknownQueueId(f"queue: no message {ident} (sent or dropped meanwhile)") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise InputFileError(f"{kind} {path} is unreadable: {reason}") from None

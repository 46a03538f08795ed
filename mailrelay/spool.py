"""The spool: messages every provider refused for now, kept until one accepts them.

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
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailrelay.errors import ExitCode, InputFileError, MailrelayError, StateError
from mailrelay.fsutil import fsync_directory, make_private_dirs
from mailrelay.datarecord import field, record

if TYPE_CHECKING:
    from mailrelay.engine import Attempt, SendResult
    from mailrelay.message import Message

SCHEMA = 1
SUFFIX = ".json"
FAILED = "failed"
CORRUPT = "corrupt"
HELD = "held"
_TMP_PREFIX = ".tmp-"
_STALE_TMP = 3600.0  # a temp file this old was left by a writer that died

Now = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_spool_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mailrelay")) / "spool"


class SpoolError(StateError):
    """The spool cannot be written (exit 73): the message is NOT queued."""


class UnknownQueueId(InputFileError):
    """No queued or failed message has this id (exit 66)."""


class QueueIdBusy(MailrelayError):
    """The message is locked by a flush that is sending it right now (exit 75: retry)."""

    exit_code = ExitCode.TEMPFAIL


def retry_delay(tries: int, retry: float, max_retry: float) -> float:
    """Seconds to wait after the `tries`-th failed try: retry, 2*retry, 4*retry ... capped."""
    exponent = min(max(tries - 1, 0), 60)  # 2**60 s is beyond any cap; avoid float overflow
    return float(min(retry * float(2**exponent), max_retry))


def next_try_time(now: datetime, tries: int, retry: float, max_retry: float) -> datetime:
    return now + timedelta(seconds=retry_delay(tries, retry, max_retry))


ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: no words, no O/0 or I/1
ID_LENGTH = 12


def new_queue_id() -> str:
    """12 random characters (about 59 bits), as Postfix's queue ids are random from the first
    character: a few of them tell messages apart, and the time has its own field."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


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


class _IdTaken(Exception):
    """The new id's file exists already (Spool.add draws another)."""


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

    def message(self, *, max_size: int | None = None) -> Message:
        from mailrelay.message import DEFAULT_MAX_SIZE, message_from_dict

        return message_from_dict(
            self.message_doc,
            where=f"spool file {self.path or self.id}",
            max_size=max_size or DEFAULT_MAX_SIZE,
        )

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "created": _iso(self.created),
            "tries": self.tries,
            "next_try": _iso(self.next_try),
            "history": self.history,
            "envelope": {"sender": self.sender, "recipients": self.recipients},
            "message": self.message_doc,
        }
        if self.failed_reason is not None:
            doc["failed_reason"] = self.failed_reason
            doc["failed_at"] = _iso(self.failed_at or utcnow())
        if self.sent_at is not None:
            doc["sent_at"] = _iso(self.sent_at)
        return doc

    def info(self, now: datetime) -> dict[str, Any]:
        """What `queue list` shows: no body, no attachment bytes."""
        info: dict[str, Any] = {
            "id": self.id,
            "created": _iso(self.created),
            "age_seconds": max(0, int((now - self.created).total_seconds())),
            "tries": self.tries,
            "next_try": _iso(self.next_try),
            "due": self.next_try <= now,
            "from": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "last_error": self.last_error,
        }
        if self.failed_reason is not None:
            info["failed_reason"] = self.failed_reason
            info["failed_at"] = _iso(self.failed_at) if self.failed_at else None
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
            "created": _iso(self.created),
            "held": True,
            "reason": self.reason,
            "message_id": self.message_id,
            "sendmail": self.options,
            "raw": base64.b64encode(self.raw).decode("ascii"),
        }

    def info(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": _iso(self.created),
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


@record
class FlushItem:
    """What a flush did with one spool file."""

    id: str
    outcome: str  # sent | queued | held | failed | not_due | locked | corrupt
    detail: str = ""
    result: SendResult | None = None
    next_try: datetime | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "outcome": self.outcome,
            "detail": self.detail,
            "next_try": _iso(self.next_try) if self.next_try else None,
            "path": str(self.path) if self.path else None,
            "result": self.result.to_dict() if self.result else None,
        }


@record
class FlushReport:
    items: list[FlushItem] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

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
        outcomes = ("sent", "queued", "held", "failed", "corrupt", "not_due", "locked")
        return {
            **{outcome: self.count(outcome) for outcome in outcomes},
            "exit_code": self.exit_code,
            "messages": [item.to_dict() for item in self.items],
        }


Sender = Callable[["Message"], "SendResult"]


class Spool:
    """The spool folder: `<id>.json` files, plus `failed/` and `corrupt/` beside them."""

    def __init__(
        self,
        path: Path,
        *,
        warn: Callable[[str], None] | None = None,
        now: Now = utcnow,
    ) -> None:
        self.path = Path(path)
        self.failed_dir = self.path / FAILED
        self.corrupt_dir = self.path / CORRUPT
        self.held_dir = self.path / HELD
        self.warn = warn or (lambda _msg: None)
        self.now = now

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
            next_try=next_try_time(now, 1, retry, max_retry),
            sender=str(message.envelope_from or message.sender),
            recipients=[str(a) for a in message.recipients()],
            message_doc=message_to_dict(message),
            history=[{"time": _iso(now), "attempts": [a.to_dict() for a in attempts]}],
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
            except _IdTaken:
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
            return HeldMessage.from_document(_load_json(f.read()), path)

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
                    _load_json(os.read(fd, os.fstat(fd).st_size + 1)), path
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

    def _write(self, target: Path, doc: dict[str, Any], *, exclusive: bool = False) -> None:
        """Atomically: temp file in the same folder, fsync, rename, fsync the folder."""
        directory = target.parent
        tmp = directory / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        data = json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._error(f"cannot write to {directory}", exc) from None
        try:
            with open(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:  # a new id: never replace another message's file
                try:
                    os.link(tmp, target)
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, target)
        except FileExistsError:
            raise _IdTaken from None
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error(f"cannot write {target}", exc) from None
        self._sync_dir(directory)

    def _make_dir(self, directory: Path) -> None:
        try:
            make_private_dirs(directory)
        except NotADirectoryError as exc:
            raise SpoolError(f"spool {self.path}: {exc.filename} is not a directory") from None
        except OSError as exc:
            raise self._error(f"cannot create {exc.filename or directory}", exc) from None
        if not directory.is_dir():
            raise SpoolError(f"spool {self.path}: {directory} is not a directory")

    def _sync_dir(self, directory: Path) -> None:
        try:
            fsync_directory(directory)
        except OSError as exc:
            raise self._error(f"cannot sync {directory}", exc) from None

    def _error(self, what: str, exc: OSError) -> SpoolError:
        reason = exc.strerror or type(exc).__name__
        return SpoolError(f"spool {self.path}: {what}: {reason}")

    # --- reading ---------------------------------------------------------------------------

    def files(self, *, failed: bool = False) -> list[Path]:
        """The message files, by name (see oldest_first for the order they were queued)."""
        return self._listdir(self.failed_dir if failed else self.path)

    def _listdir(self, directory: Path) -> list[Path]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error(f"cannot read {directory}", exc) from None
        return [
            directory / n for n in sorted(names) if n.endswith(SUFFIX) and not n.startswith(".")
        ]

    def read(self, path: Path) -> QueuedMessage:
        """One spool file; raises ValueError (unreadable) or FileNotFoundError (gone)."""
        with open(path, "rb") as f:
            return self._parse(f.read(), path)

    @staticmethod
    def _parse(data: bytes, path: Path) -> QueuedMessage:
        return QueuedMessage.from_document(_load_json(data), path)

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
        path = self._locate(ident)
        try:
            return self.read(path)
        except FileNotFoundError:
            raise UnknownQueueId(f"queue: no message {ident} (sent or dropped meanwhile)") from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise InputFileError(f"spool file {path} is unreadable: {reason}") from None

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

    # --- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[int | None]:
        """Yield an fd holding an exclusive flock on `path`, or None when another process
        holds it or the path no longer names the file that was locked (sent, moved)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise self._error(f"cannot open {path}", exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                yield None  # another flush sent it, moved it or rewrote it while we waited
                return
            yield fd
        finally:
            os.close(fd)  # also releases the lock

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
            if (now - entry.created).total_seconds() > max_age:
                age = _age_text((now - entry.created).total_seconds())
                why = f"expired: not delivered after {age} and {entry.tries} tries"
                if entry.last_error:
                    why += f"; last error: {entry.last_error}"
                moved = self._fail(entry, path, why)
                return FlushItem(ident, "failed", why, path=moved)
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
                entry.tries += 1
                entry.history.append(
                    {"time": _iso(tried_at), "attempts": [a.to_dict() for a in result.attempts]}
                )
                if result.delivered:
                    return self._sent(entry, path, marker, result)
            finally:
                os.close(marker)
            if not result.retryable:  # the provider refused the message itself
                why = "refused permanently"
                if entry.last_error:
                    why += f": {entry.last_error}"
                moved = self._fail(entry, path, why)
                return FlushItem(ident, "failed", why, result=result, path=moved)
            entry.next_try = next_try_time(tried_at, entry.tries, retry, max_retry)
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
            when = _iso(entry.sent_at) if entry.sent_at else "?"
            why = f"sent at {when}; its spool file cannot be removed ({reason})"
            return FlushItem(entry.id, "not_due", why, path=path)
        return None

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

    @staticmethod
    def _free_name(directory: Path, path: Path) -> Path:
        target = directory / path.name
        n = 1
        while target.exists():
            n += 1
            target = directory / f"{path.stem}-{n}{path.suffix}"
        return target

    def _move(self, path: Path, directory: Path) -> Path:
        self._make_dir(directory)
        target = self._free_name(directory, path)
        try:
            os.rename(path, target)
        except OSError as exc:
            raise self._error(f"cannot move {path} to {directory}", exc) from None
        self._sync_dir(directory)
        self._sync_dir(path.parent)
        return target

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - _STALE_TMP
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path):
                if entry.name.startswith(_TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)


def _load_json(data: bytes) -> Any:
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


def _age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


age_text = _age_text

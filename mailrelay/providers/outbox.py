"""The outbox provider: one .eml file per message in a local folder.

For local use, demos and tests: the message is written atomically (temp file, fsync,
rename, fsync the folder) with mode 0600, and the envelope is kept as `Return-Path` and
`X-Envelope-To` headers so a reader of the folder sees who each message was for.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    Provider,
    ProviderError,
    Receipt,
    header_lines,
    tag_header_lines,
)

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL

SUFFIX = ".eml"
_TEMP_PREFIX = ".tmp-"  # hidden, so a reader of the folder never picks up a half-written file

# A full disk or quota may clear up by itself; the rest needs someone to fix the folder.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_PROVIDER_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EROFS,
        errno.EEXIST,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
# Directory fsync is not supported everywhere (some network and FUSE file systems).
_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


def _classify(exc: OSError) -> Outcome:
    if exc.errno in _TRANSIENT_ERRNOS:
        return Outcome.TRANSIENT
    if exc.errno in _PROVIDER_ERRNOS:
        return Outcome.PROVIDER
    return Outcome.TRANSIENT  # e.g. EIO: worth another try later


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or type(exc).__name__
    return f"{text} ({name})" if name else text


def _make_folder(path: Path) -> None:
    """Create `path` and its missing parents, each 0700 whatever the umask."""
    missing: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # made by a concurrent send
        os.chmod(folder, 0o700)


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def count_messages(path: Path) -> int:
    return sum(
        1 for e in os.scandir(path) if e.name.endswith(SUFFIX) and not e.name.startswith(".")
    )


class OutboxProvider(Provider):
    type: ClassVar[str] = "outbox"
    url_schemes: ClassVar[tuple[str, ...]] = ("outbox",)
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    health_check: ClassVar[str] = "folder exists (or can be made) and is writable"

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> OutboxProvider:
        raw = cfg.get_required_str("path")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            # cron and interactive shells have different working folders
            raise cfg.error("path", f"must be an absolute path (or start with ~), got {raw!r}")
        return cls(cfg.name, path)

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        if url.host not in (None, "", "localhost"):
            raise url.error("an outbox is a local folder: use outbox:///absolute/path")
        if url.username or url.password or url.port:
            raise url.error("an outbox URL takes no user, password or port")
        if not url.path.startswith("/"):
            raise url.error("the folder must be an absolute path: outbox:///absolute/path")
        return {"path": url.path}

    def describe(self) -> dict[str, str]:
        return {"path": str(self.path)}

    def _fail(self, exc: OSError, doing: str) -> ProviderError:
        # name the folder only: never the message, never the temp file's random name
        return ProviderError(_classify(exc), f"outbox {self.path}: {doing}: {_reason(exc)}")

    def _final_name(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        return self.path / f"{stamp}-{secrets.token_hex(8)}{SUFFIX}"

    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        envelope = [
            ("Return-Path", f"<{message.return_path.email}>"),
            ("X-Envelope-To", ", ".join(a.email for a in message.recipients())),
        ]
        head = header_lines(envelope) + tag_header_lines(message)
        stream = message.byte_stream()  # attachments encoded while writing, never held whole
        try:
            _make_folder(self.path)
        except OSError as exc:
            raise self._fail(exc, "cannot create the folder") from None
        if not self.path.is_dir():
            raise ProviderError(Outcome.PROVIDER, f"outbox {self.path}: is not a folder")
        temp = self.path / f"{_TEMP_PREFIX}{secrets.token_hex(8)}{SUFFIX}.part"
        final = self._final_name()
        try:
            fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise self._fail(exc, "cannot write") from None
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask cannot loosen it, but be explicit
                for chunk in itertools.chain((head,), stream):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise self._fail(exc, "cannot write") from None
        try:
            _fsync_folder(self.path)
        except OSError as exc:
            # not durable: take it back rather than report a message that may vanish
            with contextlib.suppress(OSError):
                os.unlink(final)
            raise self._fail(exc, "cannot sync the folder") from None
        return Receipt(provider=self.name, message_id=message.message_id, detail=str(final))

    def check(self, *, timeout: float) -> Health:
        path = self.path
        if not path.exists():
            ancestor = path.parent
            while not ancestor.exists() and ancestor != ancestor.parent:
                ancestor = ancestor.parent
            if not ancestor.is_dir():
                return Health(False, f"{path}: {ancestor} is not a folder", Outcome.PROVIDER)
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return Health(
                    False, f"{path} is missing and {ancestor} is not writable", Outcome.PROVIDER
                )
            return Health(True, f"{path} is missing; it will be made at the first send")
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            return Health(False, f"{path}: {_reason(exc)}", _classify(exc))
        if not stat.S_ISDIR(mode):
            return Health(False, f"{path} is not a folder", Outcome.PROVIDER)
        probe = path / f"{_TEMP_PREFIX}check-{secrets.token_hex(8)}"
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.unlink(probe)
            count = count_messages(path)
        except OSError as exc:
            return Health(False, f"{path} is not writable: {_reason(exc)}", _classify(exc))
        return Health(True, f"{path} writable, {count} message{'s' if count != 1 else ''}")

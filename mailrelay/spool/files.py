"""The spool folder's files, written and moved so that a crash loses nothing: a temp file in
the same folder, fsynced, renamed (or linked, for a new name) into place, and the folder
fsynced; locks that check the path still names the file locked; unique names in failed/ and
corrupt/. `SpoolStore` (store.py) stands on these.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailrelay.errors import StateError
from mailrelay.fsutil import fsync_directory, make_private_dirs
from mailrelay.spool.entry import SUFFIX

_TMP_PREFIX = ".tmp-"
_STALE_TMP = 3600.0  # a temp file this old was left by a writer that died


class SpoolError(StateError):
    """The spool cannot be written (exit 73): the message is NOT queued."""


class NameTaken(Exception):
    """An exclusive write found a file of that name already (Spool.add draws another id)."""


class SpoolFiles:
    """Safe writing, listing, locking and moving of the files under `path`."""

    path: Path

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
            raise NameTaken from None
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

    # --- moving -----------------------------------------------------------------------------

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

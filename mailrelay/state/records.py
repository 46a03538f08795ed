"""Keyed records beside the state, each with an optional expiry: what provider events leave
behind (the suppression list, the event ids already handled, message statuses). The file
store keeps them in a TOML file next to the state file (`state.toml` → `state.records.toml`),
changed only under an exclusive flock on its own lock file, written to a temp file, fsynced
and renamed (0600); the Redis store (`redisrecords`) keeps them in the same Redis as the
state, so a fleet shares them.

A record is a flat table of strings and numbers; `kind` names the collection
("suppression", "event", "message") and `key` the record in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from mailrelay.errors import StateError
from mailrelay.fsutil import fsync_directory, make_private_dirs, open_own_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Record = dict[str, Any]
EXPIRES = "expires"  # epoch seconds after which a record is gone (absent: kept)


class RecordStore(Protocol):
    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None: ...

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        """Add an empty record unless one is there: True when this call added it."""
        ...

    def get(self, kind: str, key: str) -> Record | None: ...

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]: ...

    def remove(self, kind: str, key: str) -> bool: ...

    def items(self, kind: str) -> dict[str, Record]: ...


def records_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.stem + ".records.toml")


def _live(record: object, now: float) -> bool:
    if not isinstance(record, dict):
        return False
    expires = record.get(EXPIRES)
    return not isinstance(expires, (int, float)) or expires > now


class FileRecordStore:
    """The records in a TOML file beside the state file."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.clock = clock

    def __repr__(self) -> str:
        return f"FileRecordStore({str(self.path)!r})"

    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None:
        record = {k: v for k, v in value.items() if v is not None}
        if ttl is not None:
            record[EXPIRES] = self.clock() + ttl

        def change(doc: dict[str, Any]) -> None:
            doc.setdefault(kind, {})[key] = record

        self._update(change)

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        added = []

        def change(doc: dict[str, Any]) -> None:
            table = doc.setdefault(kind, {})
            if not _live(table.get(key), self.clock()):
                table[key] = {EXPIRES: self.clock() + ttl}
                added.append(key)

        self._update(change)
        return bool(added)

    def get(self, kind: str, key: str) -> Record | None:
        return self.get_many(kind, [key]).get(key)

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]:
        table = self.items(kind)
        return {k: table[k] for k in keys if k in table}

    def remove(self, kind: str, key: str) -> bool:
        removed = []

        def change(doc: dict[str, Any]) -> None:
            if doc.get(kind, {}).pop(key, None) is not None:
                removed.append(key)

        self._update(change)
        return bool(removed)

    def items(self, kind: str) -> dict[str, Record]:
        now = self.clock()
        table = self._read().get(kind, {})
        return {k: v for k, v in table.items() if _live(v, now)}

    # -- the file -------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise StateError(f"records file {self.path}: cannot read it: {exc}") from None
        return {k: v for k, v in doc.items() if isinstance(v, dict)}

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self._locked():
            doc = self._read()
            change(doc)
            now = self.clock()
            for kind, table in doc.items():  # expired records go at each write
                doc[kind] = {k: v for k, v in table.items() if _live(v, now)}
            self._write(tomli_w.dumps(doc))

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_directory(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateError(f"records file {self.path}: cannot write it: {exc.strerror}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            make_private_dirs(self.path.parent)
            fd = open_own_file(self.lock_path, os.O_RDWR)
        except OSError as exc:
            raise StateError(f"records file {self.path}: cannot lock it: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # short critical sections: wait
            yield
        finally:
            os.close(fd)

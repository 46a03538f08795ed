"""Keyed records beside the state, each with an optional expiry: what provider events leave
behind (the suppression list, the event ids already handled, message statuses).

The file store keeps one small JSON file per record (mode 0600) in a folder beside the
state file (`state.toml` → `state.records/<kind>/<digest of the key>.json`, folders 0700),
so a write costs the same with ten records or a million: a record is written to a temp file
and renamed over, a claim is an O_EXCL create, and expired records are removed when a kind
is listed and, now and then, when one is claimed. The Redis store (`redisrecords`) keeps
them in the same Redis as the state, so a fleet shares them.

A record is a flat JSON object; `kind` names the collection ("suppression", "event",
"message") and `key` the record in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from mailrelay.errors import StateError
from mailrelay.fsutil import (
    fsync_directory,
    make_private_dirs,
    open_own_file,
    read_regular_file,
    replace_private,
)

Record = dict[str, Any]
EXPIRES = "expires"  # epoch seconds after which a record is gone (absent: kept)
SWEEP_EVERY = 256  # claims between two sweeps of a kind's expired records (on average)


class RecordStore(Protocol):
    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None: ...

    def put_many(self, kind: str, items: Iterable[tuple[str, Record]]) -> int: ...

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        """Add an empty record unless a live one is there: True when this call added it."""
        ...

    def get(self, kind: str, key: str) -> Record | None: ...

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]: ...

    def remove(self, kind: str, key: str) -> bool: ...

    def items(self, kind: str) -> dict[str, Record]: ...


def records_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.stem + ".records")


def _live(record: Record, now: float) -> bool:
    expires = record.get(EXPIRES)
    return not isinstance(expires, (int, float)) or expires > now


class FileRecordStore:
    """The records as files in a folder beside the state file."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock

    def __repr__(self) -> str:
        return f"FileRecordStore({str(self.path)!r})"

    def _file(self, kind: str, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.path / kind / f"{digest}.json"

    def _folder(self, kind: str) -> Path:
        folder = self.path / kind
        try:
            make_private_dirs(folder)
        except OSError as exc:
            raise self._error(f"cannot create {folder}", exc) from None
        return folder

    def _error(self, what: str, exc: OSError) -> StateError:
        return StateError(f"records {self.path}: {what}: {exc.strerror or exc}")

    def _document(self, key: str, value: Record, ttl: float | None) -> bytes:
        record = {k: v for k, v in value.items() if v is not None}
        if ttl is not None:
            record[EXPIRES] = self.clock() + ttl
        return json.dumps({"key": key, "value": record}, ensure_ascii=False).encode("utf-8")

    def _write(self, target: Path, data: bytes, *, sync: bool = True) -> None:
        try:
            replace_private(target, data, sync=sync)
        except OSError as exc:
            raise self._error(f"cannot write {target.name}", exc) from None

    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None:
        folder = self._folder(kind)
        self._write(self._file(kind, key), self._document(key, value, ttl))
        self._sync(folder)

    def put_many(self, kind: str, items: Iterable[tuple[str, Record]]) -> int:
        """Many records at once (an import): one directory sync at the end."""
        folder = self._folder(kind)
        count = 0
        for key, value in items:
            self._write(self._file(kind, key), self._document(key, value, None), sync=False)
            count += 1
        os.sync()
        self._sync(folder)
        return count

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        folder = self._folder(kind)
        target = self._file(kind, key)
        if int.from_bytes(os.urandom(2), "big") % SWEEP_EVERY == 0:
            self.items(kind)  # removes the expired ones
        data = self._document(key, {}, ttl)
        if self._link(target, data):
            return True
        # taken: live, or expired and to be claimed afresh, one process at a time
        with self._locked(folder):
            found = self._read(target)
            if found is not None and _live(found[1], self.clock()):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return self._link(target, data)

    def _link(self, target: Path, data: bytes) -> bool:
        """Put `data` at `target` whole, unless a file is there (link(2) is atomic)."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        self._write(tmp, data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._error(f"cannot create {target.name}", exc) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._sync(target.parent)
        return True

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        try:
            fd = open_own_file(folder / ".lock", os.O_RDWR)
        except OSError as exc:
            raise self._error("cannot open its lock file", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, kind: str, key: str) -> Record | None:
        return self.get_many(kind, [key]).get(key)

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]:
        now = self.clock()
        out: dict[str, Record] = {}
        for key in keys:
            found = self._read(self._file(kind, key))
            if found is not None and found[0] == key and _live(found[1], now):
                out[key] = found[1]
        return out

    def remove(self, kind: str, key: str) -> bool:
        try:
            os.unlink(self._file(kind, key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error("cannot remove a record", exc) from None
        return True

    def items(self, kind: str) -> dict[str, Record]:
        folder = self.path / kind
        now = self.clock()
        out: dict[str, Record] = {}
        expired: list[Path] = []
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return out
        except OSError as exc:
            raise self._error(f"cannot list {folder}", exc) from None
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            found = self._read(folder / name)
            if found is None:
                continue
            if _live(found[1], now):
                out[found[0]] = found[1]
            else:
                expired.append(folder / name)
        if expired:  # under the lock a reclaim takes: never remove a fresh claim
            with self._locked(folder):
                for path in expired:
                    again = self._read(path)
                    if again is not None and not _live(again[1], self.clock()):
                        with contextlib.suppress(OSError):
                            os.unlink(path)
        return out

    def _read(self, path: Path) -> tuple[str, Record] | None:
        """(key, record) of a record file; None when missing or unreadable."""
        try:
            doc = json.loads(read_regular_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a damaged record is no record; the next put replaces it
        if not isinstance(doc, dict) or not isinstance(doc.get("value"), dict):
            return None
        return str(doc.get("key", "")), doc["value"]

    def _sync(self, folder: Path) -> None:
        with contextlib.suppress(OSError):
            fsync_directory(folder)

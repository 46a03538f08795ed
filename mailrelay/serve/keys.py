"""Idempotency-Key: the same key gets the same answer and at most one delivery.

The key store is a folder of small files, one per key (named by the key's SHA-256, so a
key never becomes a path), shared by every thread and worker of one host. The file is made
with O_EXCL: whoever creates it sends; everyone else reads it. While the send runs the file
has no answer (the key is in flight: 409); then the answer replaces it atomically (temp
file and rename). Keys live 24 hours (the IETF httpapi Idempotency-Key draft's advice).

A claim names its owner (host, boot, pid and the process's start time) and when it runs
out (the longest a send may take: the engine's deadline, plus a margin). A worker killed
mid-send (SIGKILL, the OOM killer, gunicorn's worker timeout) leaves a claim nobody will
finish: the next request with the key takes it over, under a lock, once the owner process
is gone (or is another process with a reused pid) or the claim has run out.

`begin`, `finish` and `release` are the whole protocol, so another store (serve/fleet.py's
`RedisKeyStore`) can stand in for this one. Whether an owner still runs is liveness.py's
question; the probe claims of the service are probegate.py's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from mailrelay.datarecord import record
from mailrelay.fsutil import make_private_dirs, replace_private
from mailrelay.serve.answer import Answer
from mailrelay.serve.liveness import owner, owner_alive

KEY_TTL = 24 * 3600.0
INFLIGHT_MARGIN = 60.0  # beyond the send's deadline: parsing, the spool, a slow disk
MAX_KEY_LENGTH = 255
_SUFFIX = ".json"
_LOCK = ".lock"


@record
class Seen:
    """What `begin` found: "new" (this request sends), "done" (`answer` is the first
    request's), "busy" (the first request is still sending) or "mismatch" (the key came
    with another request body)."""

    kind: str
    answer: Answer | None = None


class KeyStore(Protocol):
    def begin(self, key: str, fingerprint: str) -> Seen: ...

    def finish(self, key: str, fingerprint: str, answer: Answer) -> None: ...

    def release(self, key: str) -> None: ...


def fingerprint(*parts: bytes) -> str:
    """The request a key was first used with (method, path, body)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


class FileKeyStore:
    def __init__(
        self,
        path: Path,
        *,
        ttl: float = KEY_TTL,
        inflight: float = 30.0 + INFLIGHT_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.inflight = inflight  # the longest a claim may stay unanswered
        self.clock = clock

    def _file(self, key: str) -> Path:
        return self.path / (hashlib.sha256(key.encode("utf-8")).hexdigest() + _SUFFIX)

    def begin(self, key: str, fingerprint: str) -> Seen:
        make_private_dirs(self.path)
        target = self._file(key)
        for _ in range(3):
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(self._claim(fingerprint), f)
                return Seen("new")
            doc, age = self._read(target)
            if age is not None and age > self.ttl:
                self._expire(target)
                continue
            if doc is None or doc.get("answer") is None:
                if age is not None and self._take_over(target, fingerprint):
                    return Seen("new")
                return Seen("busy")  # still being written, or its send still runs
            if doc.get("fingerprint") != fingerprint:
                return Seen("mismatch")
            answer = doc["answer"]
            assert isinstance(answer, dict)  # written by finish()
            return Seen("done", Answer.from_dict(answer))
        return Seen("busy")

    def _claim(self, fingerprint: str) -> dict[str, object]:
        return {
            "fingerprint": fingerprint,
            "answer": None,
            "owner": owner(),
            "until": self.clock() + self.inflight,
        }

    def _abandoned(self, doc: dict[str, object] | None, age: float) -> bool:
        if doc is None:  # its writer died between creating and writing it
            return age > self.inflight
        until = doc.get("until")
        if isinstance(until, (int, float)) and self.clock() > until:
            return True
        if not isinstance(until, (int, float)) and age > self.inflight:
            return True  # a claim from before claims had owners
        return not owner_alive(doc.get("owner"))

    def _take_over(self, target: Path, fingerprint: str) -> bool:
        """Claim the key for this request when its claim was abandoned (under the lock,
        checked again: of several requests waiting on a dead claim, one sends)."""
        doc, age = self._read(target)
        if age is None or not self._abandoned(doc, age):
            return False
        with self._locked():
            doc, age = self._read(target)
            if age is None or (doc is not None and doc.get("answer") is not None):
                return False
            if not self._abandoned(doc, age):
                return False
            self._write(target, self._claim(fingerprint))
            return True

    def _write(self, target: Path, doc: dict[str, object]) -> None:
        replace_private(target, json.dumps(doc).encode("utf-8"), sync=False)

    def finish(self, key: str, fingerprint: str, answer: Answer) -> None:
        self._write(self._file(key), {"fingerprint": fingerprint, "answer": answer.to_dict()})

    def release(self, key: str) -> None:
        """Forget a key whose request ended without an answer worth repeating (a 503)."""
        with contextlib.suppress(FileNotFoundError):
            self._file(key).unlink()

    def sweep(self) -> int:
        """Remove keys older than the TTL; the number removed."""
        removed = 0
        try:
            names = [n for n in os.listdir(self.path) if n.endswith(_SUFFIX)]
        except FileNotFoundError:
            return 0
        for name in names:
            _, age = self._read(self.path / name)
            if age is not None and age > self.ttl:
                removed += self._expire(self.path / name)
        return removed

    def _read(self, target: Path) -> tuple[dict[str, object] | None, float | None]:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None, None
        with os.fdopen(fd, "rb") as f:
            age = self.clock() - os.fstat(f.fileno()).st_mtime
            data = f.read()
        try:
            doc = json.loads(data)
        except ValueError:
            return None, age
        return (doc if isinstance(doc, dict) else None), age

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _expire(self, target: Path) -> int:
        # under the lock and checked again: two workers must not both remove (one of them
        # would remove the other's fresh key)
        with self._locked():
            _, age = self._read(target)
            if age is None or age <= self.ttl:
                return 0
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return 1

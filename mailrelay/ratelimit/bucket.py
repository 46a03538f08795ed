"""The budget's arithmetic and the stores that keep it for a host: in memory (one process)
and in a small file under the data dir, locked with flock, shared by every process of the
user on this host. The Redis store (redisbucket.py) runs the same arithmetic on the server.

The arithmetic is the generic cell-rate algorithm (GCRA), a token bucket kept as one time
per limit: the theoretical arrival time (TAT) of the next token. A send of cost C reserves
C tokens at once and is told how long to wait for them; a reservation is made only when
that wait fits what the caller can afford, so a refused caller spends nothing. On top of
the configured limits sit a pace learned from the provider's header fields (until its
window resets) and a block (a rate 429's Retry-After, a spent quota's reset).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mailrelay.datarecord import record
from mailrelay.ratelimit.spec import Limit

LEARNED = "learned"


@record(frozen=True)
class Verdict:
    """May a send go: `go` after `wait` seconds (reserved), or not before `wait` (not
    reserved). `kind` says what holds it back: "rate", "quota" or "" (nothing)."""

    go: bool
    wait: float
    kind: str = ""


@record(frozen=True)
class Remaining:
    """What a provider has left now: per limit text, the tokens one period could still
    take; and the block, if any (seconds left, kind)."""

    tokens: dict[str, float]
    blocked: float = 0.0
    kind: str = ""


class BudgetStore(Protocol):
    """Where the budgets live (host file, Redis, memory); every call is atomic."""

    location: str

    def reserve(
        self, name: str, limits: Sequence[Limit], cost: float, max_wait: float
    ) -> Verdict: ...

    def learn(self, name: str, interval: float | None, seconds: float) -> None:
        """Pace at `interval` for `seconds` (None: forget a learned pace)."""
        ...

    def block(self, name: str, seconds: float, kind: str) -> None: ...

    def peek(self, name: str, limits: Sequence[Limit]) -> Remaining: ...


# --- the arithmetic, on one provider's entry (a JSON object) ---------------------------


def _pairs(
    entry: dict[str, Any], limits: Sequence[Limit], now: float
) -> list[tuple[str, float, float]]:
    """(key, interval, burst tolerance) of each limit in force, the learned pace included."""
    pairs = [(limit.text, limit.interval, limit.interval * (limit.burst - 1)) for limit in limits]
    learned = entry.get(LEARNED)
    if isinstance(learned, list) and len(learned) == 2 and learned[1] > now:
        pairs.append((LEARNED, float(learned[0]), 0.0))
    return pairs


def reserve_in(
    entry: dict[str, Any], limits: Sequence[Limit], cost: float, max_wait: float, now: float
) -> Verdict:
    block = entry.get("block")
    start, kind = now, ""
    if isinstance(block, list) and len(block) == 2 and block[0] > now:
        start, kind = float(block[0]), str(block[1])
    tats = entry.setdefault("tat", {})
    wait = start - now
    new: dict[str, float] = {}
    for key, interval, tau in _pairs(entry, limits, now):
        tat = max(float(tats.get(key, 0.0)), start) + cost * interval
        new[key] = tat
        if tat - interval - tau - now > wait:
            wait = tat - interval - tau - now
            kind = kind or "rate"
    if wait > max_wait:
        return Verdict(False, wait, kind or "rate")
    tats.update(new)
    return Verdict(True, max(wait, 0.0), kind if wait > 0 else "")


def learn_in(entry: dict[str, Any], interval: float | None, seconds: float, now: float) -> None:
    if interval is None or interval <= 0:
        entry.pop(LEARNED, None)
    else:  # the newest answer is the freshest word on the window: it replaces the last
        entry[LEARNED] = [interval, now + seconds]


def block_in(entry: dict[str, Any], seconds: float, kind: str, now: float) -> None:
    block = entry.get("block")
    until = now + seconds
    if isinstance(block, list) and len(block) == 2 and block[0] > now:
        if block[1] == "quota" and kind != "quota":
            return  # a rate 429 while the quota is spent says nothing new
        until = max(until, float(block[0])) if block[1] == kind else until
    entry["block"] = [until, kind]


def peek_in(entry: dict[str, Any], limits: Sequence[Limit], now: float) -> Remaining:
    tats = entry.get("tat", {})
    tokens = {}
    for limit in limits:
        backlog = max(float(tats.get(limit.text, 0.0)) - now, 0.0)
        tokens[limit.text] = max(limit.count - backlog / limit.interval, 0.0)
    block = entry.get("block")
    if isinstance(block, list) and len(block) == 2 and block[0] > now:
        return Remaining(tokens, float(block[0]) - now, str(block[1]))
    return Remaining(tokens)


# --- stores -----------------------------------------------------------------------------


class MemoryBudgets:
    """One process's budgets (no state store to share them through)."""

    location = "memory"

    def __init__(self, clock: Any = time.time) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def reserve(self, name: str, limits: Sequence[Limit], cost: float, max_wait: float) -> Verdict:
        with self._lock:
            entry = self._entries.setdefault(name, {})
            return reserve_in(entry, limits, cost, max_wait, self._clock())

    def learn(self, name: str, interval: float | None, seconds: float) -> None:
        with self._lock:
            learn_in(self._entries.setdefault(name, {}), interval, seconds, self._clock())

    def block(self, name: str, seconds: float, kind: str) -> None:
        with self._lock:
            block_in(self._entries.setdefault(name, {}), seconds, kind, self._clock())

    def peek(self, name: str, limits: Sequence[Limit]) -> Remaining:
        with self._lock:
            return peek_in(self._entries.get(name, {}), limits, self._clock())


class FileBudgets:
    """The budgets of this host: one JSON file (0600) changed under an exclusive flock, so
    every process of this user (cron sends, batches, serve workers) spends one budget. The
    times are the wall clock, the one clock the processes of a host share."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        # what the file held when last read, by (inode, size, mtime): a provider with no
        # configured limit asks only this copy while the file is unchanged and holds
        # nothing for it, so its sends cost a stat(), not a locked read
        self._seen: tuple[int, int, int] | None = None
        self._copy: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _free(self, name: str) -> bool:
        """Whether nothing in the file holds `name` back (no learned pace, no block)."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return True
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if seen != self._seen:
                self._seen = None
                return False  # changed: the locked read below refreshes the copy
            entry = self._copy.get(name)
        if not isinstance(entry, dict):
            return True
        now = time.time()
        learned, block = entry.get(LEARNED), entry.get("block")
        held = isinstance(block, list) and len(block) == 2 and block[0] > now
        pacing = isinstance(learned, list) and len(learned) == 2 and learned[1] > now
        return not (held or pacing)

    def _change(self, name: str, change: Any) -> Any:
        from mailrelay.fsutil import make_private_dirs, open_own_file

        make_private_dirs(self.path.parent)
        fd = open_own_file(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = b""
            while chunk := os.read(fd, 65536):
                raw += chunk
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                data = {}  # a torn or foreign file: budgets start afresh
            if not isinstance(data, dict):
                data = {}
            entry = data.get(name)
            if not isinstance(entry, dict):
                entry = data[name] = {}
            before = json.dumps(data, sort_keys=True)
            result = change(entry, time.time())
            after = json.dumps(data, sort_keys=True)
            if after != before:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, after.encode())
            info = os.fstat(fd)
            with self._lock:
                self._seen = (info.st_ino, info.st_size, info.st_mtime_ns)
                self._copy = data
            return result
        finally:
            os.close(fd)  # releases the lock

    def reserve(self, name: str, limits: Sequence[Limit], cost: float, max_wait: float) -> Verdict:
        if not limits and self._free(name):
            return Verdict(True, 0.0)
        result: Verdict = self._change(
            name, lambda entry, now: reserve_in(entry, limits, cost, max_wait, now)
        )
        return result

    def learn(self, name: str, interval: float | None, seconds: float) -> None:
        self._change(name, lambda entry, now: learn_in(entry, interval, seconds, now))

    def block(self, name: str, seconds: float, kind: str) -> None:
        self._change(name, lambda entry, now: block_in(entry, seconds, kind, now))

    def peek(self, name: str, limits: Sequence[Limit]) -> Remaining:
        if not self.path.exists():  # a look creates nothing (`providers` on a fresh host)
            return peek_in({}, limits, time.time())
        result: Remaining = self._change(name, lambda entry, now: peek_in(entry, limits, now))
        return result

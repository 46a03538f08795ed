"""Held messages in the spool in Redis (a hash, `spool:held`: queue id -> document), and
the local folder's while Redis could not be reached: keys are ids for Redis's, paths for
the folder's, so one listing covers both. A flush takes one under a lock key that expires
after `claim_idle`, so a flush killed while it holds one does not keep it for ever.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mailrelay.clock import Now
from mailrelay.secrets import scrub
from mailrelay.spool import redisscripts as lua
from mailrelay.spool.entry import HeldMessage, QueuedMessage, load_document
from mailrelay.state import redisclient

if TYPE_CHECKING:
    from mailrelay.spool.flush import Spool

Entry = TypeVar("Entry", QueuedMessage, HeldMessage)


class RedisDown(Exception):
    """Redis cannot be used now; `reason` says why (the caller falls back or stops)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RedisHeld:
    """RedisSpool's base: talking to Redis, and the held messages."""

    _server: redisclient.Target
    _timeout: float
    _per_thread: threading.local
    _conns: list[redisclient.Connection]
    _conns_lock: threading.Lock
    local: Spool
    prefix: str
    docs: str
    retry: str
    stream: str
    sids: str
    failed: str
    corrupt: str
    held_key: str
    where: str
    location: str
    claim_idle: float
    warn: Callable[[str], None]
    now: Now
    _down_warned: bool
    _tokens: dict[str, str]

    # --- talking to Redis ------------------------------------------------------------------

    @property
    def client(self) -> redisclient.Connection:
        """This thread's connection (opened on first use)."""
        conn: redisclient.Connection | None = getattr(self._per_thread, "conn", None)
        if conn is None:
            conn = redisclient.Connection(self._server, timeout=self._timeout)
            self._per_thread.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def call(self, *args: redisclient.Arg) -> Any:
        try:
            return self.client.execute(*args)
        except (OSError, redisclient.RedisError) as exc:
            raise RedisDown(scrub(str(exc) or type(exc).__name__)) from None

    def run(
        self, script: redisclient.Script, keys: Sequence[redisclient.Arg], args: Sequence[Any]
    ) -> Any:
        try:
            return script(self.client, keys, args)
        except (OSError, redisclient.RedisError) as exc:
            raise RedisDown(scrub(str(exc) or type(exc).__name__)) from None

    def atomically(self, *commands: list[redisclient.Arg]) -> None:
        """The commands in one MULTI/EXEC: all of them or none."""
        try:
            replies = self.client.pipeline([["MULTI"], *commands, ["EXEC"]])
        except (OSError, redisclient.RedisError) as exc:
            raise RedisDown(scrub(str(exc) or type(exc).__name__)) from None
        failed = [r for r in replies if isinstance(r, redisclient.ReplyError)]
        if failed:
            raise RedisDown(scrub(failed[0].message))

    def sent_key(self, ident: str) -> str:
        return f"{self.prefix}sent:{ident}"

    def down(self, exc: RedisDown, doing: str) -> None:
        """Warn once per process that Redis is unreachable and what is done instead."""
        if not self._down_warned:
            self._down_warned = True
            self.warn(f"spool {self.location} unavailable ({exc.reason}); {doing}")

    def held_keys(self) -> list[Path | str]:
        keys: list[Path | str] = list(self.local.held_keys())
        try:
            keys += sorted(_text(k) for k in self.call("HKEYS", self.held_key))
        except RedisDown as exc:
            self.down(exc, "showing the local spool's messages only")
        return keys

    def held(self) -> list[HeldMessage]:
        return self.with_local(
            self.local.held(),
            lambda: field_pairs(self.call("HGETALL", self.held_key)),
            HeldMessage.from_document,
            "held message {} in {} is unreadable ({})",
        )

    def with_local(
        self,
        out: list[Entry],
        pairs: Callable[[], list[tuple[str, bytes]]],
        read: Callable[[dict[str, Any]], Entry],
        unreadable: str,
    ) -> list[Entry]:
        """The local folder's `out` and the documents `pairs` reads from Redis, oldest first;
        an unreadable document is warned of (`unreadable`: id, place, reason) and left out,
        and with Redis unreachable the local folder's alone."""
        try:
            for ident, doc in pairs():
                try:
                    out.append(read(load_document(doc)))
                except ValueError as exc:
                    self.warn(unreadable.format(ident, self.where, exc))
        except RedisDown as exc:
            self.down(exc, "showing the local spool's messages only")
        return sorted(out, key=lambda e: e.created)

    def held_exists(self, key: Path | str) -> bool:
        if isinstance(key, Path):
            return self.local.held_exists(key)
        return bool(self.call("HEXISTS", self.held_key, key))

    def take_held(self, key: Path | str) -> Any:
        if isinstance(key, Path):
            return self.local.take_held(key)
        return _TakeHeld(self, key)

    def release(self, entry: HeldMessage, document: str = "") -> None:
        if entry.path is not None:
            self.local.release(entry)
            return
        token = self._tokens.pop(entry.id, "")
        lock = f"{self.prefix}heldlock:{entry.id}"
        self.run(lua.RELEASE_HELD, [self.held_key, lock], [entry.id, token, document])

    def rehold(self, entry: HeldMessage, reason: str) -> None:
        if entry.path is not None:
            self.local.rehold(entry, reason)
            return
        entry.reason = reason
        self.release(entry, json.dumps(entry.to_document(), separators=(",", ":")))

    def move_corrupt(self, key: Path | str) -> Path | None:
        if isinstance(key, Path):
            return self.local.move_corrupt(key)
        doc = self.call("HGET", self.held_key, key)
        if doc is not None:
            self.atomically(["HSET", self.corrupt, key, doc], ["HDEL", self.held_key, key])
        return None

    def fail(self, entry: QueuedMessage, reason: str) -> Path | None:
        """Move a queued message to failed (a permanent refusal)."""
        if entry.path is not None:
            return self.local.fail(entry, reason)
        entry.failed_reason, entry.failed_at = reason, self.now()
        doc = json.dumps(entry.to_document(), separators=(",", ":"), ensure_ascii=False)
        self.atomically(
            ["HSET", self.failed, entry.id, doc],
            ["ZREM", self.retry, entry.id],
            ["HDEL", self.docs, entry.id],
        )
        return None


class _TakeHeld:
    """`with spool.take_held(id) as entry`: the held message under a lock in Redis, or None
    when another flush has it or it is gone."""

    def __init__(self, spool: RedisHeld, ident: str) -> None:
        self.spool, self.ident = spool, ident

    def __enter__(self) -> HeldMessage | None:
        s, token = self.spool, secrets.token_hex(8)
        lock = f"{s.prefix}heldlock:{self.ident}"
        ms = int(s.claim_idle * 1000)
        state, doc = s.run(lua.TAKE_HELD, [s.held_key, lock], [self.ident, token, ms])
        if state != b"ok":
            return None
        try:
            entry = HeldMessage.from_document(load_document(doc))
        except ValueError as exc:
            s.atomically(
                ["HSET", s.corrupt, self.ident, doc],
                ["HDEL", s.held_key, self.ident],
                ["DEL", lock],
            )
            raise ValueError(f"unreadable ({exc}); moved to {s.where} corrupt") from None
        s._tokens[entry.id] = token
        return entry

    def __exit__(self, *exc: object) -> None:
        s = self.spool
        if s._tokens.pop(self.ident, None) is not None:  # neither released nor reheld
            s.call("DEL", f"{s.prefix}heldlock:{self.ident}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def field_pairs(flat: list[Any]) -> list[tuple[str, bytes]]:
    return [(_text(flat[i]), flat[i + 1]) for i in range(0, len(flat) - 1, 2)]

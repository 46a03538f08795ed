"""The records of `records.py` in Redis, beside the state and under its hash tag: one
string key per record (`{prefix}:rec:<kind>:<key>`, JSON, with a PX expiry when it has
one) and one set per kind naming its keys, pruned of expired keys when listed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mailrelay.errors import StateError
from mailrelay.secrets import scrub
from mailrelay.state import redisclient
from mailrelay.state.records import EXPIRES, Record, RecordStore
from mailrelay.state.redisstore import RETRY_AFTER, RedisStateStore

T = TypeVar("T")


class RedisRecordStore:
    def __init__(self, store: RedisStateStore) -> None:
        self.client = store.client
        self.prefix = store.prefix
        self.location = store.location

    def __repr__(self) -> str:
        return f"RedisRecordStore({self.location!r})"

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}rec:{kind}:{key}"

    def _index(self, kind: str) -> str:
        return f"{self.prefix}recs:{kind}"

    def _run(self, *commands: list[Any], readonly: bool = False) -> list[Any]:
        try:
            replies = self.client.pipeline(list(commands), readonly=readonly)
        except (redisclient.RedisError, OSError) as exc:
            raise StateError(f"state {self.location}: {scrub(str(exc))}") from None
        for reply in replies:
            if isinstance(reply, redisclient.ReplyError):
                raise StateError(f"state {self.location}: {scrub(str(reply))}")
        return replies

    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None:
        record = {k: v for k, v in value.items() if v is not None}
        if ttl is not None:
            record[EXPIRES] = time.time() + ttl
        data = json.dumps(record)
        expiry = ["PX", max(1, int(ttl * 1000))] if ttl is not None else []
        self._run(["SET", self._key(kind, key), data, *expiry], ["SADD", self._index(kind), key])

    def put_many(self, kind: str, items: Iterable[tuple[str, Record]]) -> int:
        """Many records at once (an import), 500 to a round trip."""
        batch: list[list[Any]] = []
        count = 0
        for key, value in items:
            record = json.dumps({k: v for k, v in value.items() if v is not None})
            batch += [["SET", self._key(kind, key), record], ["SADD", self._index(kind), key]]
            count += 1
            if len(batch) >= 1000:
                self._run(*batch)
                batch = []
        if batch:
            self._run(*batch)
        return count

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        px = max(1, int(ttl * 1000))
        reply, _ = self._run(
            ["SET", self._key(kind, key), "{}", "NX", "PX", px], ["SADD", self._index(kind), key]
        )
        return reply is not None

    def get(self, kind: str, key: str) -> Record | None:
        return self.get_many(kind, [key]).get(key)

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]:
        if not keys:
            return {}
        [values] = self._run(["MGET", *(self._key(kind, k) for k in keys)], readonly=True)
        out: dict[str, Record] = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is not None:
                out[key] = json.loads(raw)
        return out

    def remove(self, kind: str, key: str) -> bool:
        deleted, _ = self._run(["DEL", self._key(kind, key)], ["SREM", self._index(kind), key])
        return bool(deleted)

    def items(self, kind: str) -> dict[str, Record]:
        [members] = self._run(["SMEMBERS", self._index(kind)], readonly=True)
        keys = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        found = self.get_many(kind, keys)
        gone = [k for k in keys if k not in found]
        if gone:
            self._run(["SREM", self._index(kind), *gone])
        return found


class FallbackRecordStore:
    """The records in Redis, or, while Redis cannot be reached, in the local folder beside
    this user's state file: as FallbackStore does for the state, which already warned once
    (the suppression list checked there is this host's only until Redis is back). Redis is
    tried again after RETRY_AFTER seconds."""

    def __init__(
        self, primary: Callable[[], RecordStore], local: Callable[[], RecordStore]
    ) -> None:
        self._primary_factory = primary
        self._local_factory = local
        self._primary: RecordStore | None = None
        self._local: RecordStore | None = None
        self._down_until = 0.0

    def __repr__(self) -> str:
        return "FallbackRecordStore()"

    def _use(self, call: Callable[[RecordStore], T]) -> T:
        if time.monotonic() >= self._down_until:
            try:
                if self._primary is None:
                    self._primary = self._primary_factory()
                return call(self._primary)
            except (StateError, OSError):
                self._down_until = time.monotonic() + RETRY_AFTER
        if self._local is None:
            self._local = self._local_factory()
        return call(self._local)

    def put(self, kind: str, key: str, value: Record, ttl: float | None = None) -> None:
        self._use(lambda s: s.put(kind, key, value, ttl))

    def put_many(self, kind: str, items: Iterable[tuple[str, Record]]) -> int:
        listed = list(items)
        return self._use(lambda s: s.put_many(kind, listed))

    def claim(self, kind: str, key: str, ttl: float) -> bool:
        return self._use(lambda s: s.claim(kind, key, ttl))

    def get(self, kind: str, key: str) -> Record | None:
        return self._use(lambda s: s.get(kind, key))

    def get_many(self, kind: str, keys: list[str]) -> dict[str, Record]:
        return self._use(lambda s: s.get_many(kind, keys))

    def remove(self, kind: str, key: str) -> bool:
        return self._use(lambda s: s.remove(kind, key))

    def items(self, kind: str) -> dict[str, Record]:
        return self._use(lambda s: s.items(kind))

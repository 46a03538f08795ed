"""Idempotency-Key claims and the one-probe gate in Redis, for a fleet of `serve` hosts.

When the state is a Redis URL, every host that names it shares these too, so a client's retry
through any host gets the first answer (or 409 while the first request still sends), and a
resting provider gets one probe per cooldown period from the whole fleet, not one per host.

- A key is `{prefix}:idem:<sha256 of the key>`, made with SET NX semantics inside a script:
  the claim (fingerprint, owner, a random token) runs out on the server's clock at the send's
  deadline plus a margin, when any host may take it over; a claim of this host whose process
  is gone is taken over at once. The answer replaces the claim; both live 24 hours (PX).
- A probe is `{prefix}:probe:<provider>:<cooldown end>`, SET NX with the cooldown key's
  remaining time as its expiry: the cooldown end is the cooldown key's value, written by the
  state script with the server's clock, so every host names the same period.
- Every script is idempotent (a retried call carries the same token and finds its own claim),
  so the client may send it again when a pooled connection broke under it.

While Redis cannot be reached, the keys and probes of this host's data folder stand in (the
file stores of keys.py and probegate.py), with one warning; a key claimed there is finished there.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailrelay.errors import ConfigError
from mailrelay.secrets import scrub
from mailrelay.serve.answer import Answer
from mailrelay.serve.keys import INFLIGHT_MARGIN, KEY_TTL, FileKeyStore, KeyStore, Seen
from mailrelay.serve.liveness import owner, owner_alive
from mailrelay.serve.probegate import FileProbeGate
from mailrelay.state import redisclient

if TYPE_CHECKING:
    from mailrelay.config import Settings
    from mailrelay.policy import ProbeGate
    from mailrelay.state.redisstore import RedisStateStore

RETRY_AFTER = 5.0  # seconds before trying a Redis that failed again (the state store's pause)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] the key; ARGV[1] the claim (JSON, without `until`), ARGV[2] its token, ARGV[3] how
# long it may stay unanswered (ms), ARGV[4] how long the key lives (ms), ARGV[5] the token
# of an abandoned claim to take over ("" for none). Returns {"new"} or {"seen", the value}.
_BEGIN = (
    _NOW
    + """
local cur = redis.call('GET', KEYS[1])
local ok, doc = false, nil
if cur then ok, doc = pcall(cjson.decode, cur) end
if ok and type(doc) == 'table' then
  if doc.token == ARGV[2] and doc.answer == nil then return {'new'} end  -- sent again
  local over = doc.answer == nil and (tonumber(doc['until']) or 0) < now
  if not over and not (ARGV[5] ~= '' and doc.token == ARGV[5] and doc.answer == nil) then
    return {'seen', cur}
  end
end
local claim = cjson.decode(ARGV[1])
claim['until'] = now + tonumber(ARGV[3])
redis.call('SET', KEYS[1], cjson.encode(claim), 'PX', ARGV[4])
return {'new'}
"""
)

# KEYS[1] the key; ARGV[1] the token; ARGV[2] the answer (JSON) or "" to release; ARGV[3] ms.
# Only the claim's holder writes: a request whose claim was taken over leaves the new one.
_END = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and doc.token ~= ARGV[1] then return 0 end
end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# KEYS[1] the provider's cooldown key; ARGV[1] "{prefix}:probe:NAME:", ARGV[2] a token,
# ARGV[3] "claim" or "ask". Returns 0: not cooling; 1: claimed now (or asked: taken); 2: taken.
_PROBE = """
local ends = redis.call('GET', KEYS[1])
if not ends then return 0 end
local key = ARGV[1] .. ends
if ARGV[3] == 'ask' then return redis.call('EXISTS', key) end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
if redis.call('SET', key, ARGV[2], 'NX', 'PX', left) then return 1 end
if redis.call('GET', key) == ARGV[2] then return 1 end
return 2
"""

_BEGIN_SCRIPT = redisclient.Script(_BEGIN)
_END_SCRIPT = redisclient.Script(_END)
_PROBE_SCRIPT = redisclient.Script(_PROBE)
_ERRORS = (redisclient.RedisError, OSError, ConfigError)  # ConfigError: the password secret


class RedisAccess:
    """The state store's URL, login and prefix, on a connection of its own (built on first
    use); `unavailable` says, once per outage, that the local stand-in is used."""

    def __init__(self, connect: Callable[[], RedisStateStore], warn: Callable[[str], None]) -> None:
        self._connect = connect
        self._store: RedisStateStore | None = None
        self._warn = warn
        self._warned = False
        self._down_until: float | None = None  # no request waits on a Redis that is down
        self._lock = threading.Lock()

    def call(self, script: redisclient.Script, keys: list[str], args: list[str]) -> Any:
        if self._down_until is not None and time.monotonic() < self._down_until:
            raise ConnectionError("not tried again yet")  # as the state store: a pause
        try:
            with self._lock:
                if self._store is None:
                    self._store = self._connect()
                store = self._store
            reply = script(store.client, keys, args, idempotent=True)
        except _ERRORS:
            self._down_until = time.monotonic() + RETRY_AFTER
            raise
        self._down_until = None
        self._warned = False
        return reply

    @property
    def prefix(self) -> str:
        with self._lock:
            if self._store is None:
                self._store = self._connect()
            return self._store.prefix

    def unavailable(self, what: str, exc: BaseException, local: Path) -> None:
        if not self._warned:
            self._warned = True
            reason = scrub(str(exc) or type(exc).__name__)
            self._warn(f"{what} in Redis unavailable ({reason}); using {local} on this host")


class RedisKeyStore:
    """Idempotency-Key claims and answers in Redis (see the module's docstring)."""

    def __init__(
        self, redis: RedisAccess, local: FileKeyStore, *, inflight: float, ttl: float = KEY_TTL
    ) -> None:
        self.redis = redis
        self.local = local  # while Redis cannot be reached
        self.inflight = inflight
        self.ttl = ttl
        self._held: dict[str, str] = {}  # key -> the token of this process's claim ("": local)
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        return self.redis.prefix + "idem:" + hashlib.sha256(key.encode("utf-8")).hexdigest()

    def begin(self, key: str, fingerprint: str) -> Seen:
        token = os.urandom(16).hex()
        claim = {"fingerprint": fingerprint, "owner": owner(), "token": token}
        args = [json.dumps(claim), token, str(int(self.inflight * 1000)), str(int(self.ttl * 1000))]
        doc: Any = None
        try:
            reply = self.redis.call(_BEGIN_SCRIPT, [self._key(key)], [*args, ""])
            if reply[0] == b"seen":
                doc = json.loads(reply[1])
                if doc.get("answer") is None and not owner_alive(doc.get("owner")):
                    # this host's process that claimed it is gone: no need to wait it out
                    reply = self.redis.call(
                        _BEGIN_SCRIPT, [self._key(key)], [*args, str(doc.get("token"))]
                    )
                    doc = json.loads(reply[1]) if reply[0] == b"seen" else None
        except _ERRORS as exc:
            self.redis.unavailable("Idempotency-Key claims", exc, self.local.path)
            seen = self.local.begin(key, fingerprint)
            if seen.kind == "new":
                self._hold(key, "")
            return seen
        if reply[0] == b"new":
            self._hold(key, token)
            return Seen("new")
        if not isinstance(doc, dict) or not isinstance(doc.get("answer", {}), dict):
            return Seen("busy")  # not a value of ours: it expires with its 24 hours
        if doc.get("answer") is None:
            return Seen("busy")
        if doc.get("fingerprint") != fingerprint:
            return Seen("mismatch")
        return Seen("done", Answer.from_dict(doc["answer"]))

    def _hold(self, key: str, token: str) -> None:
        with self._lock:
            self._held[key] = token

    def _release_hold(self, key: str) -> str | None:
        with self._lock:
            return self._held.pop(key, None)

    def finish(self, key: str, fingerprint: str, answer: Answer) -> None:
        token = self._release_hold(key)
        if token == "":
            self.local.finish(key, fingerprint, answer)
            return
        doc = {"fingerprint": fingerprint, "answer": answer.to_dict(), "token": token}
        self._end(key, token, json.dumps(doc))

    def release(self, key: str) -> None:
        token = self._release_hold(key)
        if token == "":
            self.local.release(key)
            return
        self._end(key, token, "")

    def _end(self, key: str, token: str | None, value: str) -> None:
        if token is None:
            return  # never claimed here
        try:
            self.redis.call(
                _END_SCRIPT, [self._key(key)], [token, value, str(int(self.ttl * 1000))]
            )
        except _ERRORS as exc:
            # the claim runs out at the send's deadline: a retry after it sends again
            self.redis.unavailable("Idempotency-Key answers", exc, self.local.path)

    def sweep(self) -> int:
        """Expired keys of the local stand-in (Redis expires its own)."""
        return self.local.sweep()


class RedisProbeGate:
    """Policy.skip_cooling's one probe per cooldown period, for every host of the fleet."""

    def __init__(self, redis: RedisAccess, local: FileProbeGate) -> None:
        self.redis = redis
        self.local = local

    def claim(self, provider: str, until: datetime) -> bool:
        return self._ask(provider, until, "claim") != 2

    def taken(self, provider: str, until: datetime) -> bool:
        return self._ask(provider, until, "ask") == 1

    def _ask(self, provider: str, until: datetime, mode: str) -> int:
        try:
            prefix = self.redis.prefix
            keys = [f"{prefix}cooldown:{provider}"]
            args = [f"{prefix}probe:{provider}:", os.urandom(8).hex(), mode]
            return int(self.redis.call(_PROBE_SCRIPT, keys, args))
        except _ERRORS as exc:
            self.redis.unavailable("probe claims", exc, self.local.path)
            if mode == "claim":
                return 1 if self.local.claim(provider, until) else 2
            return 1 if self.local.taken(provider, until) else 0


def fleet_stores(
    settings: Settings, url: str, local: Path, warn: Callable[[str], None]
) -> tuple[KeyStore, ProbeGate]:
    """The key store and probe gate in the Redis the state URL names; `local` is this host's
    data folder, for the stand-ins while Redis cannot be reached."""
    from mailrelay.state.redisstore import RedisStateStore

    def connect() -> RedisStateStore:
        secret = settings.state_password
        return RedisStateStore(url, password=secret.reveal() if secret else None)

    redis = RedisAccess(connect, warn)
    inflight = settings.timeout + INFLIGHT_MARGIN
    keys = RedisKeyStore(
        redis, FileKeyStore(local / "idempotency", inflight=inflight), inflight=inflight
    )
    probes = RedisProbeGate(redis, FileProbeGate(local / "probes", keep=settings.max_cooldown + 60))
    return keys, probes

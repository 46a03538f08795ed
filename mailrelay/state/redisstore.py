"""The state in Redis (or Valkey), shared by every host and process that names the same URL.

Every read is one script call and every update one atomic script (EVALSHA through
`mailrelay.state.redisclient`, which speaks RESP itself: importing redis-py cost a cron send more
than the send itself): the engine's changes arrive as data (`StateDelta`), the script
applies them with the server's clock (`TIME`), and a cooldown is a key with a PX expiry, so
hosts with skewed clocks agree on who is resting. All keys share one hash tag, `{prefix}`,
so a Redis Cluster keeps them in one slot (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).

The store never holds mail up: `FallbackStore` uses the local TOML file, with one warning,
while Redis is unreachable or refuses the login, and tries Redis again after a short pause.
This module (and the client) is imported only when the state is a URL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from mailrelay.errors import ConfigError
from mailrelay.secrets import scrub
from mailrelay.state import redisclient
from mailrelay.state.protocol import Changes, ProviderState, State, StateStore
from mailrelay.state.redisurl import masked, server_of
from mailrelay.state.tomlstore import TomlStateStore

TIMEOUT = 0.5  # connect and reply: the state must never hold mail up
RETRY_AFTER = 5.0  # seconds before a long-running process tries an unreachable Redis again

_INTS = ("sent", "failed", "consecutive_failures")
_TIMES = ("last_success", "last_failure")
_TEXTS = ("last_error", "last_outcome")
_OUTCOME = "outcome:"  # hash fields counting attempts per outcome class
_MINUTE = "minute:"  # hash fields "minute:MINUTE:OUTCOME", the last hour's attempts
_MESSAGE = "message:"  # failover hash fields counting messages by final result

# KEYS[1] failover hash, KEYS[2] set of provider names; ARGV[1] the key prefix "{p}:".
# Returns {failover fields, name, provider fields, cooldown PTTL, name, ...}. Keys other than
# KEYS carry the same hash tag, so they are in the same cluster slot.
_READ = """
local out = {redis.call('HGETALL', KEYS[1])}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'provider:' .. name)
  out[#out + 1] = redis.call('PTTL', ARGV[1] .. 'cooldown:' .. name)
end
return out
"""

# KEYS[1], KEYS[2] as above, then for each provider changed its hash and its cooldown key;
# ARGV[1] the prefix, ARGV[2] the deltas as JSON (see _encode), ARGV[3] the update's id.
# Atomic: no update is lost; and applied once: an id seen in the last UPDATE_ID_TTL ms (the
# same update sent again after its reply was lost) changes nothing.
_UPDATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counters = {sent = true, failed = true, consecutive_failures = true}
local fresh = redis.call('SET', ARGV[1] .. 'update:' .. ARGV[3], '1', 'NX', 'PX', ARGV[4])
local steps_in = {}
if fresh then steps_in = cjson.decode(ARGV[2]) end
-- what alerts compare with: the last result and each changed provider's failure run, before
local before = {redis.call('HGET', KEYS[1], 'last_result') or ''}
for _, step in ipairs(steps_in) do
  for _, c in ipairs(step.changes) do
    before[#before + 1] = c.name
    before[#before + 1] = redis.call('HGET', KEYS[c.k], 'consecutive_failures') or '0'
  end
end
for _, step in ipairs(steps_in) do
  if step.msg then
    redis.call('HINCRBY', KEYS[1], 'message:' .. step.msg, 1)
    if step.msg ~= 'rejected' then redis.call('HSET', KEYS[1], 'last_result', step.msg) end
  end
  for _, c in ipairs(step.changes) do
    local h, cool = KEYS[c.k], KEYS[c.k + 1]
    redis.call('SADD', KEYS[2], c.name)
    for key, n in pairs(c.add) do redis.call('HINCRBY', h, key, n) end
    if c.count then
      redis.call('HINCRBY', h, 'outcome:' .. c.count, 1)
      -- the last hour by minute (the status page's chart): count this one, drop the older
      local minute = math.floor(now / 60000)
      redis.call('HINCRBY', h, 'minute:' .. minute .. ':' .. c.count, 1)
      for _, f in ipairs(redis.call('HKEYS', h)) do
        local m = tonumber(string.match(f, '^minute:(%d+):'))
        if m and m <= minute - 60 then redis.call('HDEL', h, f) end
      end
    end
    for _, key in ipairs(c.clear) do
      if key == 'cooldown_until' then redis.call('DEL', cool)
      elseif counters[key] then redis.call('HSET', h, key, 0)
      else redis.call('HDEL', h, key) end
    end
    for _, key in ipairs(c.stamp) do redis.call('HSET', h, key, now) end
    for key, text in pairs(c.texts) do redis.call('HSET', h, key, text) end
    local steps = c.cooldowns
    if #steps > 0 then
      local n = tonumber(redis.call('HGET', h, 'consecutive_failures') or '0')
      n = math.max(1, math.min(n, #steps))
      local ms = math.floor(steps[n] * 1000)
      if ms > 0 then redis.call('SET', cool, now + ms, 'PX', ms) else redis.call('DEL', cool) end
    end
  end
  if step.last then
    redis.call('HSET', KEYS[1], 'last_provider', step.last)
    if step.index then redis.call('HSET', KEYS[1], 'last_index', step.index)
    else redis.call('HDEL', KEYS[1], 'last_index') end
  end
end
""" + _READ.replace(
    "return out", "out[#out + 1] = before\nout[#out + 1] = fresh and 1 or 0\nreturn out"
)
UPDATE_ID_TTL = 300_000  # ms: far longer than a resend's distance from the first send


_READ_SCRIPT = redisclient.Script(_READ)  # the SHA1s are computed once, at import
_UPDATE_SCRIPT = redisclient.Script(_UPDATE)


class StateUnavailable(Exception):
    """Redis cannot be used now (unreachable, login refused, ...); `reason` says why.
    `maybe_applied`: the command went out and its reply was lost, so it may have run."""

    def __init__(self, reason: str, *, maybe_applied: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.maybe_applied = maybe_applied


class UpdateUncertain(StateUnavailable):
    """An update went out, and neither it nor its one resend (same id) got an answer: Redis
    may have applied it, so it must not be applied anywhere else as well."""


class RedisStateStore:
    """The state in Redis: one script call per read, one atomic script per update."""

    shared = True  # read by other hosts: a local problem is never recorded here

    def __init__(self, url: str, *, password: str | None = None, timeout: float = TIMEOUT) -> None:
        self.location = masked(url)
        server, prefix = server_of(url, password, "state")
        self.prefix = f"{{{prefix}}}:"  # the hash tag: every key in one cluster slot
        self._keys = [self.prefix + "failover", self.prefix + "providers"]
        self.client = redisclient.Connection(server, timeout=timeout)
        self._errors: tuple[type[BaseException], ...] = (redisclient.RedisError, OSError)

    def __repr__(self) -> str:
        return f"RedisStateStore({self.location!r})"

    def load(self) -> State:
        return self._decode(self._call(_READ_SCRIPT, self._keys, [self.prefix], readonly=True))

    def update(self, change: Callable[[State], None]) -> State:
        deltas = Changes([change]).deltas()
        if deltas is None:
            raise TypeError("the Redis state store applies StateDelta changes only")
        keys = list(self._keys)
        steps = []
        for delta in deltas:
            changes = []
            for c in delta.changes:
                name = c.provider
                key = self.prefix + "provider:" + name
                if key not in keys:
                    keys += [key, self.prefix + "cooldown:" + name]
                item: dict[str, Any] = {"k": keys.index(key) + 1, "name": name, "add": c.add}
                item.update(clear=list(c.clear), stamp=list(c.stamp), texts=c.texts)
                item["cooldowns"] = list(c.cooldowns)
                if c.count is not None:
                    item["count"] = c.count
                changes.append(item)
            step: dict[str, Any] = {"changes": changes}
            if delta.message is not None:
                step["msg"] = delta.message
            if delta.last_provider is not None:  # JSON null would be true in Lua: omit it
                step["last"] = delta.last_provider
                if delta.last_index is not None:
                    step["index"] = delta.last_index
            steps.append(step)
        # cjson turns an empty JSON object and an empty array alike into an empty table
        argv = [self.prefix, json.dumps(steps, separators=(",", ":"))]
        argv += [os.urandom(12).hex(), str(UPDATE_ID_TTL)]
        try:
            reply = self._call(_UPDATE_SCRIPT, keys, argv)
        except StateUnavailable as exc:
            if not exc.maybe_applied:
                raise
            try:  # one resend on a new connection: its id makes the script apply it once (and
                # EVAL, as the first EVALSHA may have found no script and changed nothing)
                reply = self._call(_UPDATE_SCRIPT, keys, argv, whole=True)
            except StateUnavailable as again:
                raise UpdateUncertain(again.reason) from None
        after = self._decode(reply[:-2])
        observed = [d.observer for d in deltas if d.observer is not None]
        fresh = reply[-1] == 1  # not a resend of an update the server had already applied
        if len(deltas) == 1 and observed and fresh:  # one send: its before and after
            observed[0].begin(_before(reply[-2]))
            observed[0].detect(after)
        return after

    def _call(
        self,
        script: redisclient.Script,
        keys: list[str],
        argv: list[str],
        readonly: bool = False,
        whole: bool = False,
    ) -> Any:
        try:
            return script(self.client, keys, argv, readonly=readonly, whole=whole)
        except self._errors as exc:
            reason = scrub(str(exc) or type(exc).__name__)
            lost = isinstance(exc, redisclient.ReplyLost)
            raise StateUnavailable(reason, maybe_applied=lost) from None

    def _decode(self, reply: list[Any]) -> State:
        local_now = datetime.now(timezone.utc)
        state = State()
        failover = _pairs(reply[0])
        state.last_provider = failover.get("last_provider")
        state.last_result = failover.get("last_result")
        for key, value in failover.items():
            if key.startswith(_MESSAGE):
                state.messages[key[len(_MESSAGE) :]] = _int(value)
        if failover.get("last_index", "").isdigit():
            state.last_index = int(failover["last_index"])
        for i in range(1, len(reply) - 2, 3):
            name = _text(reply[i])
            fields = _pairs(reply[i + 1])
            entry = ProviderState()
            for key in _INTS:
                setattr(entry, key, _int(fields.get(key)))
            for key in _TIMES:
                ms = fields.get(key)
                if ms is not None and ms.isdigit():
                    setattr(entry, key, datetime.fromtimestamp(int(ms) / 1000, timezone.utc))
            for key in _TEXTS:
                setattr(entry, key, fields.get(key))
            for key, value in fields.items():
                if key.startswith(_OUTCOME):
                    entry.outcomes[key[len(_OUTCOME) :]] = _int(value)
                elif key.startswith(_MINUTE):
                    entry.minutes[key[len(_MINUTE) :]] = _int(value)
            pttl = int(reply[i + 2])
            if pttl > 0:  # the key's time to live, on this host's clock
                entry.cooldown_until = local_now + timedelta(milliseconds=pttl)
            state.providers[name] = entry
        return state


def _before(flat: list[Any]) -> State:
    """The state as the update script found it, as far as alerts compare it."""
    items = [_text(v) for v in flat]
    state = State(last_result=items[0] or None)
    for name, failures in zip(items[1::2], items[2::2], strict=False):
        state.provider(name).consecutive_failures = _int(failures)
    return state


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    items = [_text(v) for v in flat]
    return dict(zip(items[::2], items[1::2], strict=False))


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


class FallbackStore:
    """Redis while it answers; the local TOML file (one warning) while it does not."""

    shared = True  # a local problem is never recorded, in Redis nor in the stand-in file

    def __init__(
        self,
        connect: Callable[[], StateStore],
        location: str,
        fallback: TomlStateStore | Callable[[], TomlStateStore],
        *,
        warn: Callable[[str], None],
        retry_after: float = RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect  # builds the Redis store (and opens its connection lazily)
        self._primary: StateStore | None = None
        self.location = location
        # built when first needed: finding the user data dir (platformdirs) costs a send ~15 ms
        self._fallback = fallback
        self.warn = warn
        self.retry_after = retry_after
        self.clock = clock
        self._down_until: float | None = None
        self._warned = False  # one warning per outage

    def __repr__(self) -> str:
        return f"FallbackStore({self.location!r})"

    @property
    def fallback(self) -> TomlStateStore:
        if not isinstance(self._fallback, TomlStateStore):
            self._fallback = self._fallback()
        return self._fallback

    @property
    def using_fallback(self) -> bool:
        return self._down_until is not None and self.clock() < self._down_until

    def load(self) -> State:
        return self._use(lambda store: store.load(), lambda: self.fallback.load())

    def update(self, change: Callable[[State], None]) -> State:
        return self._use(lambda store: store.update(change), lambda: self.fallback.update(change))

    def _use(self, call: Callable[[StateStore], State], otherwise: Callable[[], State]) -> State:
        if not self.using_fallback:
            try:
                if self._primary is None:
                    self._primary = self._connect()
                state = call(self._primary)
            except (StateUnavailable, ConfigError) as exc:
                # ConfigError: e.g. the state_password secret cannot be read now
                reason = exc.reason if isinstance(exc, StateUnavailable) else str(exc)
                self._down_until = self.clock() + self.retry_after
                if isinstance(exc, UpdateUncertain):  # counted in Redis, perhaps: not here too
                    self._warned = True
                    self.warn(
                        scrub(
                            f"state {self.location}: no answer to an update ({reason}); it "
                            "may have been recorded there, so it is not recorded in the local "
                            f"state file {self.fallback.location} as well"
                        )
                    )
                    return self.fallback.load()
                if not self._warned:
                    self._warned = True
                    self.warn(
                        scrub(
                            f"state {self.location} unavailable ({reason}); "
                            f"using the local state file {self.fallback.location}"
                        )
                    )
            else:
                self._down_until = None
                self._warned = False
                return state
        return otherwise()

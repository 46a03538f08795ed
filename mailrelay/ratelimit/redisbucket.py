"""The fleet's budgets in Redis: the arithmetic of bucket.py, each call one Lua script run
on the server's clock (`TIME`), so hosts with skewed clocks spend one budget. One hash per
provider, `{prefix}:rate:NAME`, beside the state's keys under the same hash tag.

When Redis cannot be reached the budgets fall back to this host's file (`FallbackBudgets`),
as the state does: the mail goes out paced per host rather than not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mailrelay.ratelimit.bucket import LEARNED, BudgetStore, Remaining, Verdict
from mailrelay.ratelimit.spec import Limit
from mailrelay.secrets import scrub
from mailrelay.state import redisclient

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = KEYS[1]
local function num(field) return tonumber(redis.call('HGET', h, field) or '0') or 0 end
local function keep(until_) -- the hash outlives what it holds by a day
  local ttl = math.max(until_ - now, 0) + 86400
  if redis.call('TTL', h) < ttl then redis.call('EXPIRE', h, math.ceil(ttl)) end
end
"""

# ARGV: cost, max_wait, then (key, interval, burst tolerance) per configured limit.
# Returns {1 reserved | 0 not, wait as text, kind}.
_RESERVE = (
    _NOW
    + """
local cost, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local start, kind = now, ''
local b = num('block:until')
if b > now then start = b; kind = redis.call('HGET', h, 'block:kind') or 'rate' end
local pairs_ = {}
for i = 3, #ARGV, 3 do
  pairs_[#pairs_ + 1] = {ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
end
if num('learned:until') > now then pairs_[#pairs_ + 1] = {'LEARNED', num('learned:interval'), 0} end
local wait, new = start - now, {}
for i, p in ipairs(pairs_) do
  local tat = math.max(num('tat:' .. p[1]), start) + cost * p[2]
  new[i] = tat
  if tat - p[2] - p[3] - now > wait then
    wait = tat - p[2] - p[3] - now
    if kind == '' then kind = 'rate' end
  end
end
if wait > max_wait then
  if kind == '' then kind = 'rate' end
  return {0, tostring(wait), kind}
end
local last = now
for i, p in ipairs(pairs_) do
  redis.call('HSET', h, 'tat:' .. p[1], tostring(new[i]))
  last = math.max(last, new[i])
end
keep(last)
if wait <= 0 then kind = '' end
return {1, tostring(math.max(wait, 0)), kind}
""".replace("LEARNED", LEARNED)
)

# ARGV: interval ('' to forget), seconds
_LEARN = (
    _NOW
    + """
if ARGV[1] == '' then redis.call('HDEL', h, 'learned:interval', 'learned:until') return 0 end
local until_ = now + tonumber(ARGV[2])
redis.call('HSET', h, 'learned:interval', ARGV[1], 'learned:until', tostring(until_))
keep(now + tonumber(ARGV[2]))
return 1
"""
)

# ARGV: seconds, kind
_BLOCK = (
    _NOW
    + """
local until_, kind = now + tonumber(ARGV[1]), ARGV[2]
local b, old = num('block:until'), redis.call('HGET', h, 'block:kind')
if b > now then
  if old == 'quota' and kind ~= 'quota' then return 0 end
  if old == kind then until_ = math.max(until_, b) end
end
redis.call('HSET', h, 'block:until', tostring(until_), 'block:kind', kind)
keep(until_)
return 1
"""
)

# ARGV: (key, interval, count) per limit. Returns {block seconds, kind, tokens per limit...}
_PEEK = (
    _NOW
    + """
local b, kind = num('block:until') - now, redis.call('HGET', h, 'block:kind') or ''
local out = {tostring(math.max(b, 0)), b > 0 and kind or ''}
for i = 1, #ARGV, 3 do
  local backlog = math.max(num('tat:' .. ARGV[i]) - now, 0)
  out[#out + 1] = tostring(math.max(tonumber(ARGV[i + 2]) - backlog / tonumber(ARGV[i + 1]), 0))
end
return out
"""
)

_SCRIPTS = {
    name: redisclient.Script(source)
    for name, source in (
        ("reserve", _RESERVE),
        ("learn", _LEARN),
        ("block", _BLOCK),
        ("peek", _PEEK),
    )
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBudgets:
    """The budgets of every host that shares this Redis state."""

    def __init__(self, client: redisclient.Connection, prefix: str, location: str) -> None:
        self.client = client
        self.prefix = prefix  # "{name}:", the state's hash tag
        self.location = location

    def _run(self, script: str, name: str, args: Sequence[Any], readonly: bool = False) -> Any:
        key = f"{self.prefix}rate:{name}"
        return _SCRIPTS[script](self.client, [key], [str(a) for a in args], readonly=readonly)

    def reserve(self, name: str, limits: Sequence[Limit], cost: float, max_wait: float) -> Verdict:
        args: list[Any] = [repr(float(cost)), repr(float(max_wait))]
        for limit in limits:
            args += [limit.text, repr(limit.interval), repr(limit.interval * (limit.burst - 1))]
        go, wait, kind = self._run("reserve", name, args)
        return Verdict(bool(int(go)), float(_text(wait)), _text(kind))

    def learn(self, name: str, interval: float | None, seconds: float) -> None:
        self._run("learn", name, ["" if interval is None else repr(interval), repr(seconds)])

    def block(self, name: str, seconds: float, kind: str) -> None:
        self._run("block", name, [repr(float(seconds)), kind])

    def peek(self, name: str, limits: Sequence[Limit]) -> Remaining:
        args: list[Any] = []
        for limit in limits:
            args += [limit.text, repr(limit.interval), str(limit.count)]
        reply = self._run("peek", name, args)
        tokens = {limit.text: float(_text(v)) for limit, v in zip(limits, reply[2:], strict=True)}
        return Remaining(tokens, float(_text(reply[0])), _text(reply[1]))


def connect(url: str, password: str | None) -> RedisBudgets:
    """The budgets beside the state at this Redis URL (its `?prefix=` included)."""
    from mailrelay.state.redisurl import masked, server_of

    server, prefix = server_of(url, password, "state")
    return RedisBudgets(redisclient.Connection(server, timeout=0.5), f"{{{prefix}}}:", masked(url))


class FallbackBudgets:
    """Redis's budgets, or this host's file while Redis cannot be reached (said once)."""

    def __init__(
        self, connect: Callable[[], BudgetStore], local: BudgetStore, warn: Callable[[str], None]
    ) -> None:
        self._connect = connect
        self._primary: BudgetStore | None = None
        self.local = local
        self.warn = warn
        self._warned = False
        self.location = "redis"

    def _use(self, call: Callable[[BudgetStore], Any]) -> Any:
        try:
            if self._primary is None:
                self._primary = self._connect()
                self.location = self._primary.location
            return call(self._primary)
        except (redisclient.RedisError, OSError) as exc:
            if not self._warned:
                self._warned = True
                self.warn(
                    f"rate budgets in {self.location} unavailable "
                    f"({scrub(str(exc) or type(exc).__name__)}); pacing with this host's "
                    f"file {self.local.location}"
                )
            return call(self.local)

    def reserve(self, name: str, limits: Sequence[Limit], cost: float, max_wait: float) -> Verdict:
        result: Verdict = self._use(lambda s: s.reserve(name, limits, cost, max_wait))
        return result

    def learn(self, name: str, interval: float | None, seconds: float) -> None:
        self._use(lambda s: s.learn(name, interval, seconds))

    def block(self, name: str, seconds: float, kind: str) -> None:
        self._use(lambda s: s.block(name, seconds, kind))

    def peek(self, name: str, limits: Sequence[Limit]) -> Remaining:
        result: Remaining = self._use(lambda s: s.peek(name, limits))
        return result

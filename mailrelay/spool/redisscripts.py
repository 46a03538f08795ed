"""The Lua scripts of the spool in Redis (mailrelay.spool.redisspool): every change of an
entry is one atomic script, so no crash between two commands leaves a message half moved.

Keys (all under the state's hash tag `{prefix}:`, so a Redis Cluster keeps them in one slot):
`spool:docs` (hash: queue id -> the entry's JSON document, message included), `spool:retry`
(sorted set: queue id by its next try, in ms), `spool:stream` (the stream of due entries,
read by the consumer group `flushers`), `spool:sids` (hash: queue id -> its stream entry id),
`spool:failed`, `spool:corrupt` and `spool:held` (hashes: queue id -> document), and
`spool:sent:<id>` (a message a provider accepted, kept a week: never queued or sent again).
"""

from __future__ import annotations

from mailrelay.state.redisclient import Script

GROUP = "flushers"
SENT_TTL = 7 * 24 * 3600  # seconds a delivered message's id is remembered

# KEYS: docs, retry, failed, sent:<id>; ARGV: id, doc, next try (ms).
# 1: queued; 0: the id is taken (or was sent already: a migrated copy is dropped, not resent).
ADD = Script(
    """
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
   or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
)

# KEYS: retry, stream, sids; ARGV: up to (ms, or '+inf'), how many at most, group.
# Moves the due ids from the sorted set into the stream (creating the group); how many moved.
PROMOTE = Script(
    """
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[3], '0', 'MKSTREAM')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local sid = redis.call('XADD', KEYS[2], '*', 'id', id)
  redis.call('HSET', KEYS[3], id, sid)
end
return #ids
"""
)

# KEYS: stream, sids, docs, retry, failed, corrupt, sent:<id>; ARGV: group, stream id, queue
# id, what ('sent' | 'retry' | 'failed' | 'corrupt' | 'forget'), document, next try (ms).
# Acknowledges the stream entry in the same step as it records what became of the message.
FINISH = Script(
    """
local what, id = ARGV[4], ARGV[3]
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], id) == ARGV[2] then redis.call('HDEL', KEYS[2], id) end
if what == 'retry' then
  if redis.call('HEXISTS', KEYS[3], id) == 0 then return 0 end
  redis.call('HSET', KEYS[3], id, ARGV[5])
  redis.call('ZADD', KEYS[4], ARGV[6], id)
  return 1
end
redis.call('HDEL', KEYS[3], id)
if what == 'sent' then
  redis.call('SET', KEYS[7], ARGV[5], 'EX', tonumber(ARGV[6]))
elseif what == 'failed' then
  redis.call('HSET', KEYS[5], id, ARGV[5])
elseif what == 'corrupt' then
  redis.call('HSET', KEYS[6], id, ARGV[5])
end
return 1
"""
)

# KEYS: docs, retry, stream, sids, failed, held; ARGV: id, group, busy when idle below (ms).
# Returns {where, doc} ('queued' | 'failed' | 'held' | 'busy' | 'none').
DROP = Script(
    """
local id = ARGV[1]
local doc = redis.call('HGET', KEYS[1], id)
if doc then
  local sid = redis.call('HGET', KEYS[4], id)
  if sid then
    local p = redis.call('XPENDING', KEYS[3], ARGV[2], 'IDLE', 0, sid, sid, 1)
    if p[1] and tonumber(p[1][3]) < tonumber(ARGV[3]) then return {'busy', ''} end
    redis.call('XACK', KEYS[3], ARGV[2], sid)
    redis.call('XDEL', KEYS[3], sid)
    redis.call('HDEL', KEYS[4], id)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
  return {'queued', doc}
end
for i, where in ipairs({'failed', 'held'}) do
  doc = redis.call('HGET', KEYS[4 + i], id)
  if doc then
    redis.call('HDEL', KEYS[4 + i], id)
    return {where, doc}
  end
end
return {'none', ''}
"""
)

# KEYS: held, lock; ARGV: id, token, lock ms. The held document under a lock, or false.
TAKE_HELD = Script(
    """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return {'gone', ''} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then
  return {'locked', ''}
end
return {'ok', doc}
"""
)

# KEYS: held, lock; ARGV: id, token, new document ('' removes it).
RELEASE_HELD = Script(
    """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('DEL', KEYS[2])
return 1
"""
)

# KEYS: stream; ARGV: group, consumer, idle ms. Removes this flush's consumer, and those of
# flushes that were killed (idle longer than a claim, their entries taken over), when they
# hold no entry: DELCONSUMER would drop a holder's pending entries.
FORGET_CONSUMER = Script(
    """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  local gone = f['name'] == ARGV[2] or tonumber(f['idle']) > tonumber(ARGV[3])
  if tonumber(f['pending']) == 0 and gone then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""
)

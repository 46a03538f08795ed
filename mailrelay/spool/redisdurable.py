"""The durability half of the spool in Redis: the server's persistence, read once (is
`appendonly` on, has the server WAITAOF, has it replicas), the warning when a restart of
Redis would lose the queue, and the wait a queued answer makes for the server's fsync
(`WAITAOF 1 0`) and for a replica when it has any (`WAIT 1`: a failover promotes a replica,
and WAITAOF's replica count asks for the replica's own fsync, which a replica without
appendonly never gives), sent in the same round trip as the write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from mailrelay.secrets import scrub
from mailrelay.spool import redisscripts as lua
from mailrelay.spool.redisheld import RedisDown, RedisHeld
from mailrelay.state import redisclient

WAIT_MS = 1000  # WAITAOF / WAIT: how long a queued answer waits for the fsync or a replica


class RedisDurable(RedisHeld):
    """RedisSpool's persistence checks and durable writes."""

    _persistence: dict[str, Any] | None
    _deferred: bool
    _wait_warned: bool
    _unsynced: set[redisclient.Connection]

    def persistence(self) -> dict[str, Any]:
        """The server's persistence: `aof` (appendonly on), `waitaof` (the server has WAITAOF:
        Redis >= 7.2, Valkey) and `replicas` (connected replicas). Read once."""
        if self._persistence is None:
            try:
                replies = self.client.pipeline(
                    [["INFO", "persistence"], ["INFO", "server"], ["INFO", "replication"]],
                    readonly=True,
                )
            except (OSError, redisclient.RedisError) as exc:
                raise RedisDown(scrub(str(exc) or type(exc).__name__)) from None
            info: dict[str, str] = {}
            for reply in replies:
                if isinstance(reply, bytes):
                    for line in reply.decode("utf-8", "replace").splitlines():
                        key, sep, value = line.partition(":")
                        if sep:
                            info[key.strip()] = value.strip()
            self._persistence = {
                "aof": info.get("aof_enabled") == "1",
                "waitaof": "valkey_version" in info
                or _version(info.get("redis_version", "0")) >= (7, 2),
                "replicas": int(info.get("connected_slaves", "0") or 0),
            }
        return self._persistence

    def durability_warning(self) -> str | None:
        """A sentence when a restart of Redis would lose the queue (appendonly is off), or
        when Redis cannot be asked; None when all is well."""
        try:
            if self.persistence()["aof"]:
                return None
        except RedisDown as exc:
            return (
                f"spool {self.location} unavailable ({exc.reason}); until it is back, queued "
                f"messages wait in the local spool {self.local.path}"
            )
        return (
            f"spool {self.location}: the server's appendonly is off, so a restart of Redis "
            "loses the messages queued since its last snapshot; set 'appendonly yes' "
            "(see README, A fleet)"
        )

    def _wait_commands(self) -> list[list[redisclient.Arg]]:
        """What a queued answer waits for: the server's fsync, and a replica if any."""
        p = self.persistence()
        waits: list[list[redisclient.Arg]] = []
        if p["aof"] and p["waitaof"]:
            waits.append(["WAITAOF", 1, 0, WAIT_MS])
        if p["replicas"]:
            waits.append(["WAIT", 1, WAIT_MS])
        return waits

    @contextlib.contextmanager
    def deferred_durability(self) -> Iterator[None]:
        """Within: each add does not wait for the server's fsync; at the end one wait covers
        them all (a batch's exit status is its answer)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            conns, self._unsynced = self._unsynced, set()
            try:  # WAITAOF and WAIT cover the writes of the connection they are sent on
                waits = self._wait_commands() if conns else []
                for conn in conns:
                    for wait in waits:
                        self._check_wait(conn.execute(*wait))
            except (OSError, redisclient.RedisError, RedisDown) as exc:
                self.warn(f"spool {self.location}: cannot wait for the server's fsync ({exc})")

    def _check_wait(self, reply: Any) -> None:
        """WAITAOF answers [local fsyncs, replicas], WAIT the replicas: warn when none."""
        done = reply[0] if isinstance(reply, list) else reply
        if done == 0 and not self._wait_warned:
            self._wait_warned = True
            self.warn(
                f"spool {self.location}: the server did not confirm the queued messages on disk "
                f"(or on a replica) within {WAIT_MS} ms"
            )

    def _add_durably(self, keys: Sequence[redisclient.Arg], args: Sequence[Any]) -> int:
        """The ADD script and the durability wait in one round trip (EVAL when not cached)."""
        waits = [] if self._deferred else self._wait_commands()
        if self._deferred:
            self._unsynced.add(self.client)
        script = lua.ADD
        commands: list[list[redisclient.Arg]] = [["EVALSHA", script.sha, len(keys), *keys, *args]]
        try:
            replies = self.client.pipeline(commands + waits)
            if isinstance(replies[0], redisclient.ReplyError) and replies[0].code == "NOSCRIPT":
                replies[0] = self.client.execute("EVAL", script.source, len(keys), *keys, *args)
                replies[1:] = [self.client.execute(*wait) for wait in waits]
        except (OSError, redisclient.RedisError) as exc:
            raise RedisDown(scrub(str(exc) or type(exc).__name__)) from None
        if isinstance(replies[0], redisclient.ReplyError):
            raise RedisDown(scrub(replies[0].message))
        for reply in replies[1:]:
            self._check_wait(reply)
        return int(replies[0])


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return (0,)

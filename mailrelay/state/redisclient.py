"""A small Redis client on the standard library: RESP2 over `socket` (and `ssl` for rediss://).

Why not redis-py: a cron send is a fresh process, and `import redis` alone (it loads asyncio,
logging, concurrent.futures, its cluster client, ...) cost more than the whole send with file
state. The state store needs a handful of commands (AUTH, SELECT, EVALSHA, EVAL), so this
module speaks the protocol itself (resp.py): https://redis.io/docs/latest/develop/reference/protocol-spec/

- `parse_url` (redisurl.py) reads the URL forms redis-py reads, and Redis Sentinel's
  `redis+sentinel://host:26379,host2:26379/mymaster/0`.
- `Connection` opens the socket on first use with one timeout for connect and for each reply,
  and sends the handshake (AUTH, SELECT) in the same write as a read-only first command. A
  socket kept between commands is checked before reuse: one the server closed while it was
  idle (its `timeout`, a restart, CLIENT KILL, a NAT) is replaced before anything is sent, and
  a read-only or idempotent command whose reused connection breaks is sent once more on a new
  one. Any other command is never sent twice: its reply may have been lost after it ran.
- With Sentinel, each new connection asks the sentinels where the master is
  (SENTINEL get-master-addr-by-name), connects there and checks ROLE says master; a READONLY
  reply (a demoted master) drops the connection, so the next command asks again.
- `Script` runs a Lua script by its SHA1 (EVALSHA) and sends the body (EVAL, which also
  caches it) only when the server answers NOSCRIPT: one round trip in the common case.

Replies: simple strings and bulk strings are `bytes`, integers `int`, null bulk strings and
null arrays `None`, arrays `list`; an error reply raises `ReplyError` at the top level and is
a `ReplyError` value inside an array. Lengths are bounded (`MAX_BULK`, `MAX_ARRAY`,
`MAX_DEPTH`): a reply beyond them is a `ProtocolError`, never a huge allocation.
Errors: `RedisError` (protocol and server errors) or `OSError` (unreachable, timeout, TLS):
`ReplyLost`, an `OSError`, when the commands were written whole and no reply came (they may
have run).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

from mailrelay.state.redisurl import DEFAULT_PORT, SENTINEL_SCHEME, Target, parse_url
from mailrelay.state.resp import (
    MAX_ARRAY,
    MAX_BULK,
    MAX_DEPTH,
    MAX_LINE,
    Arg,
    ProtocolError,
    RedisError,
    ReplyError,
    encode,
    read_reply,
)

__all__ = [
    "DEFAULT_PORT",
    "MAX_ARRAY",
    "MAX_BULK",
    "MAX_DEPTH",
    "MAX_LINE",
    "SENTINEL_SCHEME",
    "Arg",
    "Connection",
    "ProtocolError",
    "RedisError",
    "ReplyError",
    "ReplyLost",
    "Script",
    "Target",
    "encode",
    "parse_url",
    "read_reply",
]


class ReplyLost(ConnectionError):
    """The command went out whole and its reply did not come (a timeout, a connection
    closed): the server may have run it, or may still run it. `timed_out` tells a reply that
    is late (the server may be busy: not resent) from a connection that broke."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Connection:
    """One connection to one server, opened on first use and again after an error.

    Safe to share between threads (one round trip at a time: a lock) and across fork (a
    child never uses its parent's socket: it opens its own).
    """

    def __init__(self, target: Target, *, timeout: float = 0.5) -> None:
        self.target = target
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._stream: BinaryIO | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._where = target.address  # the server the socket is connected to

    def __repr__(self) -> str:
        return f"Connection({self.target!r})"

    def execute(self, *args: Arg, readonly: bool = False, idempotent: bool = False) -> Any:
        """Send one command and return its reply; an error reply raises `ReplyError`."""
        (reply,) = self.pipeline([args], readonly=readonly, idempotent=idempotent)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(
        self,
        commands: Sequence[Sequence[Arg]],
        *,
        readonly: bool = False,
        idempotent: bool = False,
    ) -> list[Any]:
        """Send the commands in one write, read their replies (errors as `ReplyError` values).

        A new connection's handshake goes in the same write when every command is `readonly`:
        if the login fails, the commands after it failed too, and wrote nothing. Before a
        command that writes, the handshake's replies are read first. `readonly` and
        `idempotent` commands (running them twice does what running them once does) are sent
        again, once, when the connection they were sent on was an old one and broke.
        """
        with self._lock:
            if self._pid != os.getpid():  # forked: the socket is the parent's
                self._pid = os.getpid()
                self._drop()
            if self._sock is not None and self._closed_by_server():
                self._drop()  # nothing was sent on it: a new connection is safe for any command
            reused = self._sock is not None
            try:
                return self._pipeline(commands, readonly)
            except ConnectionError as exc:  # reset, broken pipe, closed; not a timeout
                late = isinstance(exc, ReplyLost) and exc.timed_out
                if late or not reused or not (readonly or idempotent):
                    raise
            return self._pipeline(commands, readonly)  # once, on a new connection

    def _closed_by_server(self) -> bool:
        """Whether the idle socket has something to read: between round trips that can only
        be its end (EOF, a reset) or a stray reply, and either way it is unusable. Under TLS
        a readable socket may hold only a record for the TLS layer (a TLS 1.3 session
        ticket): a read that wants more data says the connection is fine."""
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        try:
            poller.register(sock, select.POLLIN)
            if not poller.poll(0):
                return False
            if not self.target.tls:
                return True
            sock.setblocking(False)
            try:
                sock.recv(1)
            finally:
                sock.settimeout(self.timeout)
        except OSError as exc:
            import ssl  # only for rediss://, where it is loaded already

            return not isinstance(exc, (BlockingIOError, ssl.SSLWantReadError))
        except ValueError:
            return True
        return True  # the end of the stream, or bytes nobody asked for

    def _pipeline(self, commands: Sequence[Sequence[Arg]], readonly: bool) -> list[Any]:
        try:
            if self._sock is None:
                handshake = self._open()
                if handshake and readonly:
                    replies = self._round_trip([*handshake, *commands])
                    self._check_handshake(replies[: len(handshake)])
                    return self._checked(replies[len(handshake) :])
                if handshake:
                    self._check_handshake(self._round_trip(handshake))
            return self._checked(self._round_trip(commands))
        except (OSError, ProtocolError):
            self.close()  # the stream's position is unknown: start afresh next time
            raise
        except ReplyError:
            self.close()  # a refused login: log in again next time
            raise

    def _check_handshake(self, replies: list[Any]) -> None:
        _raise_first(replies)
        if self.target.sentinels:  # the last command was ROLE: is this still the master?
            role = replies[-1]
            if not (isinstance(role, list) and role and role[0] == b"master"):
                raise ConnectionError(f"{self._where} is not the master of {self.target.service}")

    def _checked(self, replies: list[Any]) -> list[Any]:
        if any(isinstance(r, ReplyError) and r.code == "READONLY" for r in replies):
            self.close()  # a replica now (a failover): find the master again next time
        return replies

    def _round_trip(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        assert self._sock is not None and self._stream is not None
        self._sock.sendall(b"".join(encode(c) for c in commands))
        try:
            return [read_reply(self._stream) for _ in commands]
        except OSError as exc:  # after a whole write: the fate of the commands is unknown
            late = isinstance(exc, TimeoutError)
            why = f"no reply within {self.timeout:g} s" if late else exc
            raise ReplyLost(f"{self.target.address}: {why}", timed_out=late) from None

    def _open(self) -> list[list[Arg]]:
        """Connect; the handshake commands to send first."""
        t = self.target
        host, port = self._locate() if t.sentinels else (t.host, t.port)
        self._where = f"{host}:{port}" if t.path is None else t.path
        try:
            if t.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(t.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((host, port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise ConnectionError(
                f"cannot connect to {self._where}: {exc.strerror or exc}"
            ) from None
        try:
            if t.tls:
                sock = self._wrap(sock)
            sock.settimeout(self.timeout)  # each reply
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._stream = sock.makefile("rb")
        handshake: list[list[Arg]] = []
        if t.password is not None or t.username is not None:
            user = [t.username] if t.username is not None else []
            handshake.append(["AUTH", *user, t.password or ""])
        if t.db:
            handshake.append(["SELECT", t.db])
        if t.sentinels:
            handshake.append(["ROLE"])
        return handshake

    def _locate(self) -> tuple[str, int]:
        """Where the sentinels say the master is: the first that answers is believed, and
        asked first next time (the Sentinel client guidelines,
        https://redis.io/docs/latest/develop/reference/sentinel-clients/)."""
        t = self.target
        problems = []
        for i, (host, port) in enumerate(t.sentinels):
            sentinel = Connection(
                Target(host, port, password=t.sentinel_password), timeout=self.timeout
            )
            try:
                reply = sentinel.execute(
                    "SENTINEL", "get-master-addr-by-name", t.service or "", readonly=True
                )
            except (OSError, RedisError) as exc:
                problems.append(f"sentinel {host}:{port}: {exc}")
                continue
            finally:
                sentinel.close()
            if isinstance(reply, list) and len(reply) == 2:
                if i:
                    rest = t.sentinels[:i] + t.sentinels[i + 1 :]
                    self.target = t.replace(sentinels=((host, port), *rest))
                return reply[0].decode("utf-8", "replace"), int(reply[1])
            problems.append(f"sentinel {host}:{port} knows no master {t.service!r}")
        raise ConnectionError("; ".join(problems))

    def _wrap(self, sock: socket.socket) -> socket.socket:
        import ssl  # only for rediss://

        t = self.target
        context = ssl.create_default_context(cafile=t.ssl_ca_certs)
        if t.ssl_cert_reqs != "required":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE if t.ssl_cert_reqs == "none" else ssl.CERT_OPTIONAL
        return context.wrap_socket(sock, server_hostname=t.host)

    def __del__(self) -> None:  # a store dropped without close(): no unclosed-socket warning
        self.close()

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        stream, sock = self._stream, self._sock
        self._stream = self._sock = None
        if stream is not None:
            stream.close()
        if sock is not None:
            sock.close()  # this process's descriptor only: no TLS close_notify, no shutdown


def _raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply


class Script:
    """A Lua script run by its SHA1 (EVALSHA), sent whole (EVAL) only when not cached."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(
        self,
        conn: Connection,
        keys: Sequence[Arg],
        args: Sequence[Arg] = (),
        *,
        readonly: bool = False,
        idempotent: bool = False,
        whole: bool = False,
    ) -> Any:
        """`whole`: send the body at once (EVAL), e.g. to resend a call whose EVALSHA may
        have met a server that had lost its script cache."""
        tail = [len(keys), *keys, *args]
        again = {"readonly": readonly, "idempotent": idempotent}
        if not whole:
            try:
                return conn.execute("EVALSHA", self.sha, *tail, **again)
            except ReplyError as exc:
                if exc.code != "NOSCRIPT":
                    raise
        return conn.execute("EVAL", self.source, *tail, **again)

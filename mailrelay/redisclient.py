"""A small Redis client on the standard library: RESP2 over `socket` (and `ssl` for rediss://).

Why not redis-py: a cron send is a fresh process, and `import redis` alone (it loads asyncio,
logging, concurrent.futures, its cluster client, ...) cost more than the whole send with file
state. The state store needs a handful of commands (AUTH, SELECT, EVALSHA, EVAL), so this
module speaks the protocol itself: https://redis.io/docs/latest/develop/reference/protocol-spec/

- `parse_url` (in `mailrelay.redisurl`, re-exported here) reads a URL into a `Target`.
- `Connection` opens the socket on first use with one timeout for connect and for each reply,
  and sends the handshake (AUTH, SELECT) in the same write as a read-only first command.
- `Script` runs a Lua script by its SHA1 (EVALSHA) and sends the body (EVAL, which also
  caches it) only when the server answers NOSCRIPT: one round trip in the common case.

Replies: simple strings and bulk strings are `bytes`, integers `int`, null bulk strings and
null arrays `None`, arrays `list`; an error reply raises `ReplyError` at the top level and is
a `ReplyError` value inside an array. Lengths are bounded (`MAX_BULK`, `MAX_ARRAY`,
`MAX_DEPTH`): a reply beyond them is a `ProtocolError`, never a huge allocation.
Errors: `RedisError` (protocol and server errors) or `OSError` (unreachable, timeout, TLS);
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

from mailrelay.redisurl import DEFAULT_PORT as DEFAULT_PORT
from mailrelay.redisurl import Target as Target
from mailrelay.redisurl import parse_url as parse_url

MAX_LINE = 64 * 1024  # a status, error or length line
MAX_BULK = 64 * 1024 * 1024  # one bulk string (Redis itself allows up to 512 MB)
MAX_ARRAY = 1024 * 1024  # elements of one array
MAX_DEPTH = 32  # arrays within arrays

Arg = str | bytes | int


class RedisError(Exception):
    """Something the server said or sent that is not a usable reply."""


class ReplyError(RedisError):
    """An error reply (`-ERR ...`, `-WRONGPASS ...`, `-NOSCRIPT ...`); `code` is its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0]


class ProtocolError(RedisError):
    """A reply that is not RESP2, or beyond this client's limits."""


class ReplyLost(ConnectionError):
    """The command went out whole and its reply did not come (a timeout, a connection
    closed): the server may have run it, or may still run it."""


def encode(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(stream: BinaryIO, depth: int = 0) -> Any:
    """One reply from a buffered stream; an error reply is returned as a `ReplyError`."""
    line = stream.readline(MAX_LINE)
    if not line:
        raise ConnectionError("the server closed the connection")
    if not line.endswith(b"\r\n"):
        raise ProtocolError("a reply line is too long or cut short")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        return ReplyError(body.decode("utf-8", "replace"))
    if kind == b":":
        return _number(body)
    if kind == b"$":
        n = _length(body, MAX_BULK, "bytes in a bulk string")
        if n < 0:
            return None
        data = stream.read(n + 2)
        if len(data) < n + 2:
            raise ConnectionError("the server closed the connection within a reply")
        if data[n:] != b"\r\n":
            raise ProtocolError("a bulk string does not end with CRLF")
        return data[:n]
    if kind == b"*":
        n = _length(body, MAX_ARRAY, "elements in an array")
        if n < 0:
            return None
        if depth >= MAX_DEPTH:
            raise ProtocolError("arrays nested beyond the limit")
        return [read_reply(stream, depth + 1) for _ in range(n)]
    raise ProtocolError(f"unknown reply type {kind!r}")


def _length(body: bytes, limit: int, what: str) -> int:
    """A bulk string's or an array's length (-1: null), refused beyond `limit`."""
    n = _number(body)
    if n > limit:
        raise ProtocolError(f"{n} {what} is beyond the limit of {limit}")
    return n


def _number(body: bytes) -> int:
    try:
        return int(body)
    except ValueError:
        raise ProtocolError("a malformed number in a reply") from None


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

    def __repr__(self) -> str:
        return f"Connection({self.target!r})"

    def execute(self, *args: Arg, readonly: bool = False) -> Any:
        """Send one command and return its reply; an error reply raises `ReplyError`."""
        (reply,) = self.pipeline([args], readonly=readonly)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Arg]], *, readonly: bool = False) -> list[Any]:
        """Send the commands in one write, read their replies (errors as `ReplyError` values).

        A new connection's handshake goes in the same write when every command is `readonly`:
        if the login fails, the commands after it failed too, and wrote nothing. Before a
        command that writes, the handshake's replies are read first.
        """
        with self._lock:
            if self._pid != os.getpid():  # forked: the socket is the parent's
                self._pid = os.getpid()
                self._drop()
            if self._sock is not None and self._stale():
                self._drop()  # closed by the server while idle: a command on it would be lost
            return self._pipeline(commands, readonly)

    def _pipeline(self, commands: Sequence[Sequence[Arg]], readonly: bool) -> list[Any]:
        try:
            if self._sock is None:
                handshake = self._open()
                if handshake and readonly:
                    replies = self._round_trip([*handshake, *commands])
                    _raise_first(replies[: len(handshake)])
                    return replies[len(handshake) :]
                if handshake:
                    _raise_first(self._round_trip(handshake))
            return self._round_trip(commands)
        except (OSError, ProtocolError):
            self.close()  # the stream's position is unknown: start afresh next time
            raise
        except ReplyError:
            self.close()  # a refused login: log in again next time
            raise

    def _stale(self) -> bool:
        """Whether the idle socket has something to read: the server's close, or bytes no
        command asked for. Checked before reuse, so that a command whose reply is lost went
        out on a socket the server had not closed before (its fate is then truly unknown)."""
        sock = self._sock
        assert sock is not None
        try:
            if not select.select([sock], [], [], 0)[0]:
                return False
            sock.setblocking(False)
            try:
                sock.recv(1)
            finally:
                sock.settimeout(self.timeout)
        except BlockingIOError:
            return False
        except OSError as exc:  # TLS: a record with no data for us (a session ticket)
            return type(exc).__name__ not in ("SSLWantReadError", "SSLWantWriteError")
        return True  # the server's close (b""), or data nobody asked for

    def _round_trip(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        assert self._sock is not None and self._stream is not None
        self._sock.sendall(b"".join(encode(c) for c in commands))
        try:
            return [read_reply(self._stream) for _ in commands]
        except OSError as exc:  # after a whole write: the fate of the commands is unknown
            why = f"no reply within {self.timeout:g} s" if isinstance(exc, TimeoutError) else exc
            raise ReplyLost(f"{self.target.address}: {why}") from None

    def _open(self) -> list[list[Arg]]:
        """Connect; the handshake commands to send first."""
        t = self.target
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
                sock = socket.create_connection((t.host, t.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {t.address}: {exc.strerror or exc}") from None
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
        return handshake

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
        whole: bool = False,
    ) -> Any:
        """`whole`: send the body at once (EVAL), e.g. to resend a call whose EVALSHA may
        have met a server that had lost its script cache."""
        tail = [len(keys), *keys, *args]
        if not whole:
            try:
                return conn.execute("EVALSHA", self.sha, *tail, readonly=readonly)
            except ReplyError as exc:
                if exc.code != "NOSCRIPT":
                    raise
        return conn.execute("EVAL", self.source, *tail, readonly=readonly)

"""A small Redis client on the standard library: RESP2 over `socket` (and `ssl` for rediss://).

Why not redis-py: a cron send is a fresh process, and `import redis` alone (it loads asyncio,
logging, concurrent.futures, its cluster client, ...) cost more than the whole send with file
state. The state store needs a handful of commands (AUTH, SELECT, EVALSHA, EVAL), so this
module speaks the protocol itself: https://redis.io/docs/latest/develop/reference/protocol-spec/

- `parse_url` reads the URL forms redis-py reads: `redis://[user[:password]@]host[:port][/db]`,
  `rediss://...` (TLS), `unix:///path/redis.sock`; query options `db`, `username`, `password`,
  `ssl_cert_reqs` (`required`, the default, `optional` or `none`) and `ssl_ca_certs` (a CA
  file). Anything else is refused, so a typo never goes unnoticed.
- `Connection` opens the socket on first use with one timeout for connect and for each reply,
  and sends the handshake (AUTH, SELECT) in the same write as a read-only first command.
- `Script` runs a Lua script by its SHA1 (EVALSHA) and sends the body (EVAL, which also
  caches it) only when the server answers NOSCRIPT: one round trip in the common case.

Replies: simple strings and bulk strings are `bytes`, integers `int`, null bulk strings and
null arrays `None`, arrays `list`; an error reply raises `ReplyError` at the top level and is
a `ReplyError` value inside an array. Lengths are bounded (`MAX_BULK`, `MAX_ARRAY`,
`MAX_DEPTH`): a reply beyond them is a `ProtocolError`, never a huge allocation.
Errors: `RedisError` (protocol and server errors) or `OSError` (unreachable, timeout, TLS).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
MAX_LINE = 64 * 1024  # a status, error or length line
MAX_BULK = 64 * 1024 * 1024  # one bulk string (Redis itself allows up to 512 MB)
MAX_ARRAY = 1024 * 1024  # elements of one array
MAX_DEPTH = 32  # arrays within arrays
_OPTIONS = ("db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs")
_CERT_REQS = ("required", "optional", "none")

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


class Target:
    """Where the server is and how to log in: what `parse_url` read from a URL.

    A plain class, not a dataclass: building one at import costs a cron send milliseconds.
    """

    __slots__ = _FIELDS = (
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "tls",
        "ssl_cert_reqs",
        "ssl_ca_certs",
    )

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        path: str | None = None,  # a unix socket instead of host and port
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ssl_cert_reqs: str = "required",
        ssl_ca_certs: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.ssl_cert_reqs = ssl_cert_reqs
        self.ssl_ca_certs = ssl_ca_certs

    def replace(self, **changes: Any) -> Target:
        fields = {name: getattr(self, name) for name in self._FIELDS}
        return Target(**{**fields, **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never the password
        where = self.path or f"{self.host}:{self.port}"
        return f"Target({where!r}, db={self.db}, tls={self.tls})"

    @property
    def address(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    """The server a `redis://`, `rediss://` or `unix://` URL names; ValueError if it names none.

    The user and password in the authority are percent-decoded and win over `?username=` and
    `?password=`; the db in the path wins over `?db=` only when the query has none (as redis-py).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        query[key] = value
    username = unquote(parts.username) if parts.username else query.get("username") or None
    password = unquote(parts.password) if parts.password else query.get("password") or None
    db_text = query.get("db")
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
        fields: dict[str, Any] = {"path": unquote(parts.path)}
    else:
        try:
            port = parts.port  # ValueError when it is not a number in 0-65535
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        fields = {"host": parts.hostname or "127.0.0.1", "port": port or DEFAULT_PORT}
        path = unquote(parts.path).strip("/")
        if db_text is None and path:
            db_text = path
    try:
        db = int(db_text or 0)
    except ValueError:
        raise ValueError(f"the db must be a number, not {db_text!r}") from None
    if db < 0:
        raise ValueError("the db must not be negative")
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    return Target(
        **fields,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss",
        ssl_cert_reqs=reqs,
        ssl_ca_certs=query.get("ssl_ca_certs") or None,
    )


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

    def _round_trip(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        assert self._sock is not None and self._stream is not None
        self._sock.sendall(b"".join(encode(c) for c in commands))
        return [read_reply(self._stream) for _ in commands]

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
    ) -> Any:
        tail = [len(keys), *keys, *args]
        try:
            return conn.execute("EVALSHA", self.sha, *tail, readonly=readonly)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return conn.execute("EVAL", self.source, *tail, readonly=readonly)

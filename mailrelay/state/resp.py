"""RESP2, the Redis protocol: commands as arrays of bulk strings, and replies read from a stream.

https://redis.io/docs/latest/develop/reference/protocol-spec/

Replies: simple strings and bulk strings are `bytes`, integers `int`, null bulk strings and
null arrays `None`, arrays `list`; an error reply is a `ReplyError` value (the client raises
it at the top level). Lengths are bounded (`MAX_BULK`, `MAX_ARRAY`, `MAX_DEPTH`): a reply
beyond them is a `ProtocolError`, never a huge allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

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

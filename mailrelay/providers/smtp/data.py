"""The message data of DATA and the MAIL FROM parameters it needs: CRLF line ends and
leading dots doubled (RFC 5321 §4.5.2), SMTPUTF8 (RFC 6531), SIZE (RFC 1870) and
BODY=8BITMIME (RFC 6152), from the extensions the server offers."""

from __future__ import annotations

import email.policy
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from mailrelay.providers.base import tag_header_lines

if TYPE_CHECKING:
    from mailrelay.message import Message

_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class Unfit(Exception):
    """The server cannot take this message as it is (no SMTPUTF8, over its SIZE)."""


class MessageData(NamedTuple):
    chunks: Iterable[bytes]
    """What follows DATA, dot-stuffed, tag header lines first; the final "." is not in it."""
    options: list[str]
    """The MAIL FROM parameters, e.g. ["SIZE=1234", "BODY=8BITMIME"]."""


def message_data(
    message: Message, offers: Callable[[str], bool], size_limit: int | None
) -> MessageData:
    """The data and MAIL FROM parameters for a server that `offers` these extensions (by
    lower-case EHLO keyword) and takes at most `size_limit` bytes; Unfit when it cannot."""
    addresses = [
        message.sender,
        message.return_path,
        *message.to,
        *message.cc,
        *message.bcc,
        *message.reply_to,
    ]
    options: list[str] = []
    raw = message.raw
    utf8_header = raw is not None and not raw.partition(b"\r\n\r\n")[0].isascii()
    # A display name travels as RFC 2047 encoded words (mime.py writes them, and a message
    # given whole is re-encoded below); only a non-ASCII local part or domain needs
    # SMTPUTF8 (RFC 6531 §3.2).
    if all(a.email.isascii() for a in addresses) and not utf8_header:
        policy = email.policy.SMTP
    elif offers("smtputf8"):  # RFC 6531: UTF-8 addresses and headers
        options.append("SMTPUTF8")
        policy = email.policy.SMTPUTF8
    elif raw is not None and all(a.email.isascii() for a in addresses):
        from mailrelay.message import ascii_header_fields

        try:
            raw = ascii_header_fields(raw)  # UTF-8 header text as encoded words (RFC 2047)
        except ValueError as exc:
            raise Unfit(
                f"the message has a non-ASCII address ({exc}) and the server does not offer "
                "SMTPUTF8"
            ) from None
        policy = email.policy.SMTP
    else:
        raise Unfit("the message has a non-ASCII address and the server does not offer SMTPUTF8")
    if raw is not None:  # given whole: any line ends, stuffed in one go
        whole = dot_stuff(raw)
        chunks: Iterable[bytes] = (whole,)
        length, eight_bit = len(whole), not whole.isascii()
    else:  # built: CRLF lines in line-aligned chunks, attachments encoded on the way
        stream = message.byte_stream(policy)
        chunks = dot_stuffed(stream)
        length, eight_bit = stream.size, stream.eight_bit
    tags = tag_header_lines(message)  # header lines never start with "."
    if tags:
        chunks = itertools.chain((tags,), chunks)
        length += len(tags)
    if size_limit is not None and length > size_limit:
        raise Unfit(f"the message is {length} bytes, the server takes at most {size_limit} (SIZE)")
    if offers("size"):
        options.append(f"SIZE={length}")
    if eight_bit and offers("8bitmime"):  # RFC 6152
        options.append("BODY=8BITMIME")
    return MessageData(chunks, options)


def dot_stuff(data: bytes) -> bytes:
    """The message data for DATA: CRLF line ends, leading dots doubled (RFC 5321 §4.5.2)."""
    data = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", data))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def dot_stuffed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`dot_stuff` over chunks that each start a line and end with CRLF but the last."""
    chunk = b""
    for chunk in chunks:
        # base64 chunks (most of a large message) never start a line with a dot
        if chunk.startswith(b".") or b"\n." in chunk:
            chunk = _LEADING_DOT.sub(b"..", chunk)
        yield chunk
    if not chunk.endswith(b"\r\n"):
        yield b"\r\n"

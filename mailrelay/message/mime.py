"""A message's MIME form: address headers, the parts of a MIME tree, and the RFC 5322 bytes
as chunks of known total size, each attachment's base64 made while it is sent.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Sequence
from email.message import EmailMessage

from mailrelay.datarecord import record
from mailrelay.errors import MessageError
from mailrelay.message.addresses import Address
from mailrelay.message.headers import MAX_NAME_WORD, encoded_words, name_needs_encoding

# As the email package writes base64 under the SMTP policy's 78 columns: 57 bytes a line
_BASE64_LINE = 57
_BASE64_CHUNK = 1024 * _BASE64_LINE  # raw bytes per chunk: about 78 KiB of lines


@record(frozen=True)
class Base64Body:
    """An attachment body to be written as base64 lines, each ended by `linesep`."""

    data: bytes
    linesep: bytes

    @property
    def size(self) -> int:
        full, rest = divmod(len(self.data), _BASE64_LINE)
        last = -(-rest // 3) * 4 + len(self.linesep) if rest else 0
        return full * (_BASE64_LINE // 3 * 4 + len(self.linesep)) + last

    def chunks(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), _BASE64_CHUNK):
            block = view[start : start + _BASE64_CHUNK]
            lines = [
                binascii.b2a_base64(block[i : i + _BASE64_LINE], newline=False)
                for i in range(0, len(block), _BASE64_LINE)
            ]
            lines.append(b"")  # so the join ends the last line too
            yield self.linesep.join(lines)


class MessageBytes:
    """A message's RFC 5322 bytes as chunks, with their exact total size known beforehand.

    Every chunk starts at the start of a line (SMTP dot-stuffing looks at line starts, one
    chunk at a time); a chunk of base64 lines never starts a line with a dot.
    """

    def __init__(self, pieces: Sequence[bytes | Base64Body]) -> None:
        self._pieces = [p for p in pieces if not isinstance(p, bytes) or p]

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.size for p in self._pieces)

    def laid_out(self) -> Iterator[bytes]:
        """The pieces the email package laid out (headers, bodies), attachments' base64 left
        out: what a line-length check must read."""
        return (p for p in self._pieces if isinstance(p, bytes))

    @property
    def eight_bit(self) -> bool:
        """Whether any byte is outside US-ASCII (SMTP BODY=8BITMIME)."""
        return any(isinstance(p, bytes) and not p.isascii() for p in self._pieces)

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                yield from piece.chunks()


def set_address_header(msg: EmailMessage, name: str, addresses: Sequence[Address]) -> None:
    if not addresses:
        return
    special = any(name_needs_encoding(a.name) for a in addresses)
    if not special or not all(a.email.isascii() for a in addresses):
        msg[name] = ", ".join(str(a) for a in addresses)
        return
    lines = []
    for addr in addresses:
        if name_needs_encoding(addr.name):
            # one encoded word: readers (the email package among them) put a space between
            # adjacent encoded words in a display name, which RFC 2047 §6.2 says to drop
            word = encoded_words(addr.name, MAX_NAME_WORD)
            if "\n" in word:
                raise MessageError(
                    f"{name}: display name too long to encode ({len(addr.name)} characters)"
                )
            lines.append(f"{word}\n <{addr.email}>")
        else:
            lines.append(str(addr))
    msg.set_raw(name, ",\n ".join(lines))


def last_part(msg: EmailMessage) -> EmailMessage:
    *_, part = msg.iter_parts()
    assert isinstance(part, EmailMessage)
    return part


def find_html_part(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None

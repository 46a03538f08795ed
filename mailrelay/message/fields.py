"""A header block as fields: split from the body (as sendmail reads it), each field's text
unfolded and its encoded words decoded, and rewritten in US-ASCII for a server without
SMTPUTF8. Bytes in, so a field is kept as it came until something must change it.
"""

from __future__ import annotations

import re
from email.utils import formataddr, getaddresses

_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def split_fields(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """The header fields (name, whole folded field without its last line end) and the body.

    Line ends are normalised to LF here. The header block ends at the first empty line, or at
    the first line that is neither a field nor a continuation (as sendmail does); an mbox
    "From " line in front is dropped.
    """
    text = data.replace(b"\r\n", b"\n")
    lines = text.split(b"\n")
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    # each field's lines are gathered, then joined once: linear however many are folded
    gathered: list[tuple[str, list[bytes]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == b"":
            i += 1
            break
        if line[:1] in (b" ", b"\t") and gathered:
            gathered[-1][1].append(line)
            i += 1
            continue
        m = _FIELD_START.match(line)
        if m is None:
            break  # the body starts without an empty line
        gathered.append((m.group(1).decode("ascii"), [line]))
        i += 1
    fields = [(name, b"\n".join(parts)) for name, parts in gathered]
    return fields, b"\n".join(lines[i:])


_ADDRESS_FIELDS = frozenset({"from", "sender", "to", "cc", "reply-to"})


def ascii_header_fields(raw: bytes) -> bytes:
    """`raw` (CRLF lines) with every UTF-8 header field (RFC 6532) rewritten in US-ASCII:
    display names and other text as RFC 2047 encoded words, for a server without SMTPUTF8.
    ValueError when an address itself is not ASCII (only SMTPUTF8 carries that)."""
    from mailrelay.message.headers import encoded_words

    head, _, body = raw.partition(b"\r\n\r\n")
    fields, _ = split_fields(head + b"\n\n")
    lines: list[bytes] = []
    for name, whole in fields:
        if whole.isascii():
            lines.append(whole.replace(b"\n", b"\r\n"))
            continue
        text = field_text(whole)
        if name.lower() in _ADDRESS_FIELDS:
            pairs = getaddresses([text])
            if not all(a.isascii() for _, a in pairs):
                raise ValueError(f"{name}: a non-ASCII address")
            value = ", ".join(formataddr((n, a), charset="utf-8") for n, a in pairs)
        else:
            value = encoded_words(text, 78 - len(name) - 2)
        lines.append(f"{name}: {value}".replace("\n", "\r\n").encode("ascii", "replace"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def field_text(field: bytes) -> str:
    """A field's value (after "Name:"), unfolded, still RFC 2047-encoded."""
    return unfold(field.partition(b":")[2].decode("utf-8", "replace"))


def decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded; text that does not decode stays as it is."""
    if "=?" not in text:
        return text
    from email.errors import HeaderParseError
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def unfold(value: str) -> str:
    return re.sub(r"\s*\r?\n[ \t]*", " ", value).strip()

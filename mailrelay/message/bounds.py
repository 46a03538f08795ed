"""Bounds on a message's header, checked before the email package parses any of it: its
header parser takes quadratic time in a field's length and in its number of parameters
(40,000 Content-Type parameters cost half a minute of CPU), and RFC 5322 lets no line of a
header be longer than 998 characters. Every front end (send --eml, sendmail mode, serve's
/v1/messages/raw) reads a whole message through message.eml.parse_eml, which checks these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from email import policy as email_policy
from typing import Any

MAX_MIME_DEPTH = 100  # multipart levels in a message given whole
MAX_LINE = 998  # characters of one header line, CRLF left out (RFC 5322 §2.1.1)
MAX_HEADER = 1024 * 1024  # bytes of the whole header block
MAX_MIME_FIELD = 8 * 1024  # bytes of a Content-* field (the email package parses these)
MAX_PARAMETERS = 100  # parameters (";") of a Content-* field


class HeaderBound(ValueError):
    """A header over one of the bounds above (the reason, without the message's `where`)."""


def check_field(name: str, field: str | bytes) -> None:
    """Refuse a field over the bounds, naming it; `field` is the value or the whole field."""
    size = len(field)
    what = f"the {name} header"
    if name.lower().startswith("content-"):
        if size > MAX_MIME_FIELD:
            raise HeaderBound(f"{what} is {size} bytes long, at most {MAX_MIME_FIELD}")
        count = field.count(b";") if isinstance(field, bytes) else field.count(";")
        if count > MAX_PARAMETERS:
            raise HeaderBound(f"{what} has {count} parameters, at most {MAX_PARAMETERS}")


def check_lines(name: str, field: bytes) -> None:
    for line in field.split(b"\n"):
        if len(line) > MAX_LINE:
            raise HeaderBound(
                f"the {name} header has a line of {len(line)} characters, at most {MAX_LINE} "
                "(RFC 5322); fold it over several lines"
            )


def check_header(fields: Sequence[tuple[str, bytes]]) -> None:
    total = 0
    for name, field in fields:
        check_lines(name, field)
        check_field(name, field)
        total += len(field) + 1
        if total > MAX_HEADER:
            raise HeaderBound(f"the header is over {MAX_HEADER} bytes long")


class BoundedPolicy(email_policy.EmailPolicy):
    """The email package's default policy, with each header a MIME part gives it checked
    against the bounds before it is parsed (the message's own header is checked earlier)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        check_field(name, value)
        return super().header_fetch_parse(name, value)


BOUNDED_POLICY = BoundedPolicy()


_LONG_LINE = re.compile(rb"[^\r\n]{%d,}" % (MAX_LINE + 1))
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")


def long_line(pieces: Iterable[bytes]) -> tuple[str, int] | None:
    """The first line over MAX_LINE in a laid-out message: the name of the header field it
    belongs to ("body" past the header) and its length; None when every line fits."""
    for piece in pieces:
        if len(piece) <= MAX_LINE:
            continue
        m = _LONG_LINE.search(piece)
        if m is None:
            continue
        # back to the first line of its field (a folded line starts with a blank)
        start = piece.rfind(b"\n", 0, m.start()) + 1
        while start > 0 and piece[start : start + 1] in (b" ", b"\t"):
            start = piece.rfind(b"\n", 0, start - 1) + 1
        field = _FIELD_NAME.match(piece, start)
        name = field.group(1).decode("ascii") if field is not None else "body"
        return name, m.end() - m.start()
    return None

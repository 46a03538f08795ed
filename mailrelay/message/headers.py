"""Header values: the one check every header string passes, the names --header may not
set, and the RFC 2047 encoded words mailrelay writes itself where the email package would
change a value.
"""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage

from mailrelay.errors import MessageError

# Headers that have their own option (or are generated) and so cannot be given with --header.
STRUCTURAL_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Reply-To",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
    )
)
HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable US-ASCII except ':'


# What never goes into a header: C0 controls but TAB (CR and LF among them), DEL, the C1
# controls (NEL U+0085 among them) and the Unicode line and paragraph separators, which some
# readers and JSON APIs take as line breaks. VT, FF and FS/GS/RS are line ends to Python's
# str.splitlines.
# (The two separators are looked for apart: a character class reaching past U+00FF costs a
# send's start-up ~0.2 ms to compile, more than the check itself.)
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SEPARATORS = ("\u2028", "\u2029")


def check_header_value(where: str, value: str) -> None:
    """The one check for every string that lands in a header (flags, JSON, .eml, sendmail):
    refuse what could end a line there, naming the field and never echoing the value."""
    m = _NOT_IN_HEADER.search(value)
    first = m.start() if m is not None else len(value)
    for separator in _SEPARATORS:  # the first bad character is the one named
        at = value.find(separator, 0, first)
        if at >= 0:
            first = at
    if first == len(value):
        return
    char = value[first]
    if char in "\r\n":
        raise MessageError(f"{where}: line breaks (CR/LF) are not allowed in a header value")
    raise MessageError(
        f"{where}: control character U+{ord(char):04X} is not allowed in a header value"
    )


def parse_header(where: str, raw: str) -> tuple[str, str]:
    """Parse "Name: value" as given to --header."""
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise MessageError(f"{where}: expected 'Name: value', got {raw!r}")
    if not HEADER_NAME.match(name):
        raise MessageError(f"{where}: {name!r} is not a valid header name")
    if name.lower() in STRUCTURAL_HEADERS:
        raise MessageError(f"{where}: the {name} header is set by its own option")
    check_header_value(where, value)
    return name, value


# --- header values the email package must not fold itself ------------------------------
#
# Text that looks like an RFC 2047 encoded word ("=?utf-8?q?x?=") would be decoded by every
# reader, and the email package's folder has failed on long unbreakable words mixed with
# non-ASCII text: such values are written here as encoded words (RFC 2047 "B"), each at
# most 75 characters, one per line (RFC 5322 §2.2.3 folding), so they arrive as typed.
_LINE = 78  # RFC 5322 §2.1.1: SHOULD be no more than 78 characters
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: 60 base64 characters + 12 = 72
_LONG_WORD = 40
MAX_NAME_WORD = 900  # characters of the one encoded word a display name becomes (RFC 5322: 998)


def _longest_word(value: str) -> int:
    return max((len(w) for w in value.split()), default=0)


def _needs_encoding(value: str) -> bool:
    if "=?" in value:
        return True
    longest = _longest_word(value)
    return longest > 900 or (longest > _LONG_WORD and not value.isascii())


def name_needs_encoding(name: str) -> bool:
    # the email package re-parses an encoded non-ASCII name and loses one holding specials
    # (a display name "é Reply-To: x@example.com" came back as an address)
    return not name.isascii() or _needs_encoding(name)


def encoded_words(value: str, first_room: int) -> str:
    """`value` as encoded words joined by folds; the first fits in `first_room` characters."""
    words: list[str] = []
    room = max((first_room - 12) // 4 * 3, 3)
    chunk = b""
    for ch in value:
        data = ch.encode("utf-8", "surrogateescape")
        if chunk and len(chunk) + len(data) > room:
            words.append(chunk.decode("utf-8", "surrogateescape"))
            chunk, room = b"", _WORD_BYTES
        chunk += data
    words.append(chunk.decode("utf-8", "surrogateescape"))
    return "\n ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8", "surrogateescape")).decode() + "?="
        for w in words
    )


def set_text_header(msg: EmailMessage, name: str, value: str) -> None:
    """An unstructured header (Subject, --header): encoded here when the email package would
    change it, else as the email package writes it."""
    if _needs_encoding(value):
        msg.set_raw(name, encoded_words(value, _LINE - len(name) - 2))
    else:
        msg[name] = value

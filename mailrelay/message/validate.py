"""Local validation: everything that can be checked without a provider."""

from __future__ import annotations

import re
from email import policy as email_policy
from typing import TYPE_CHECKING

from mailrelay.errors import MessageError
from mailrelay.message.bounds import MAX_LINE, long_line
from mailrelay.message.headers import HEADER_NAME, check_header_value
from mailrelay.message.model import DEFAULT_MAX_SIZE

if TYPE_CHECKING:
    from mailrelay.message.model import Message


def check_fields(msg: Message, where: str = "") -> None:
    """Every string of `msg` that lands in a header or an API's header-like field."""
    at = f"{where}: " if where else ""
    for label, addrs in (
        ("from", [msg.sender]),
        ("envelope sender", [msg.envelope_from] if msg.envelope_from else []),
        ("to", msg.to),
        ("cc", msg.cc),
        ("bcc", msg.bcc),
        ("reply-to", msg.reply_to),
    ):
        for addr in addrs:
            check_header_value(f"{at}{label} address", addr.email)
            check_header_value(f"{at}{label} display name", addr.name)
    check_header_value(f"{at}subject", msg.subject)
    check_header_value(f"{at}message id", msg.message_id)
    for name, value in msg.headers:
        if not HEADER_NAME.match(name):
            raise MessageError(f"{at}header {name!r}: not a valid header name")
        check_header_value(f"{at}header {name}", value)
    for tag in msg.tags:
        check_header_value(f"{at}tag", tag)
    for key, value in msg.metadata.items():
        check_header_value(f"{at}metadata key", key)
        check_header_value(f"{at}metadata {key}", value)
    for i, att in enumerate(msg.attachments):
        check_header_value(f"{at}attachment {i + 1} file name", att.filename)
        if _ENCODED_WORD.search(att.filename):
            raise MessageError(
                f"{at}attachment {i + 1} file name {att.filename!r} cannot be written as given: "
                "it holds an RFC 2047 encoded word, which mail readers decode into another name"
            )
        check_header_value(f"{at}attachment {i + 1} content type", att.content_type)
        check_header_value(f"{at}attachment {i + 1} content id", att.content_id or "")
        if att.content_type.count("/") != 1 or not all(
            _MIME_TOKEN.fullmatch(t) for t in att.content_type.split("/")
        ):
            raise MessageError(
                f"{at}attachment {i + 1} content type: {att.content_type!r} is not type/subtype"
            )


_MIME_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 token
# "=?charset?q?text?=": the email package itself decodes it in a file name parameter
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


# What the email package always writes: printable ASCII, no encoded-word lookalike, no word
# longer than a folded line can hold (tests/test_fuzz.py checks this against check_renders)
_PLAIN_TEXT = re.compile(r"[ -~]*\Z")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~.-]*\Z")  # atext, space, dot
_PLAIN_ID = re.compile(r"<[!-;=?-~]+>\Z")  # printable ASCII without < >
_PLAIN_WORD = 76


def _plain(text: str, pattern: re.Pattern[str] = _PLAIN_TEXT) -> bool:
    return (
        pattern.match(text) is not None
        and "=?" not in text
        and all(len(word) <= _PLAIN_WORD for word in text.split())
    )


def renders_plainly(msg: Message) -> bool:
    """Whether `msg` is of the kind the email package always writes (most alerts): ASCII
    names, subject and X- headers, no attachments, bodies with a UTF-8 form. Laying out
    such a message costs more than its send to an API, and can never fail."""
    if msg.attachments or msg.raw is not None:
        return False
    if not _PLAIN_ID.match(msg.message_id):
        return False
    for addr in (msg.sender, *msg.to, *msg.cc, *msg.reply_to):
        if not (
            _plain(addr.email) and addr.email.count("@") == 1 and _plain(addr.name, _PLAIN_NAME)
        ):
            return False
    if not _plain(msg.subject):
        return False
    for name, value in msg.headers:  # X- headers: unstructured, any number of them
        if not (name[:2].lower() == "x-" and _plain(name) and _plain(value)):
            return False
    for body in (msg.text, msg.html):
        if body is not None:
            try:
                body.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def check_renders(msg: Message) -> None:
    """Lay out the message's MIME form once (attachment bodies left out), before any provider:
    what cannot be written is the message's fault (65), not a provider failure."""
    if msg.raw is not None:
        return
    if renders_plainly(msg):  # every field folds but the Message-ID, which cannot
        _check_line("Message-ID", len("Message-ID: ") + len(msg.message_id))
        return
    ascii_only = all(a.email.isascii() for a in (msg.sender, *msg.recipients(), *msg.reply_to))
    try:
        data = msg.byte_stream(email_policy.SMTP if ascii_only else email_policy.SMTPUTF8)
        over = long_line(data.laid_out())
        if over is not None:
            _check_line(*over)
    except MessageError:
        raise
    except Exception as exc:  # the email package's own limits, e.g. its folder
        reason = " ".join(str(exc).split())[:200]
        raise MessageError(
            f"the message cannot be written as MIME: {type(exc).__name__}: {reason}"
        ) from None


def _check_line(name: str, length: int) -> None:
    if length > MAX_LINE:
        what = "a line of the body" if name == "body" else f"the {name} header"
        raise MessageError(
            f"{what} would be written as a line of {length} characters, at most {MAX_LINE} "
            "(RFC 5322)"
        )


def validate_message(msg: Message, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
    """Everything that can be checked without a provider. Raises MessageError."""
    if not msg.recipients():
        raise MessageError("no recipients: give at least one address (argument, --to, --cc, --bcc)")
    check_fields(msg)
    if msg.text is None and msg.html is None and not msg.attachments and not msg.subject:
        raise MessageError(
            "empty message: give a subject, a body (--text, --html, standard input) or --attach"
        )
    size = msg.size()
    if size > max_size:
        raise MessageError(
            f"message too large: {size} bytes, limit {max_size} (max_size in the config)"
        )
    check_renders(msg)

"""Local validation: everything that can be checked without a provider."""

from __future__ import annotations

import re
from email import policy as email_policy
from typing import TYPE_CHECKING

from mailrelay.errors import MessageError
from mailrelay.message.headers import _HEADER_NAME, check_header_value
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
        if not _HEADER_NAME.match(name):
            raise MessageError(f"{at}header {name!r}: not a valid header name")
        check_header_value(f"{at}header {name}", value)
    for tag in msg.tags:
        check_header_value(f"{at}tag", tag)
    for key, value in msg.metadata.items():
        check_header_value(f"{at}metadata key", key)
        check_header_value(f"{at}metadata {key}", value)
    for i, att in enumerate(msg.attachments):
        check_header_value(f"{at}attachment {i + 1} file name", att.filename)
        check_header_value(f"{at}attachment {i + 1} content type", att.content_type)
        check_header_value(f"{at}attachment {i + 1} content id", att.content_id or "")
        if att.content_type.count("/") != 1 or not all(
            _MIME_TOKEN.fullmatch(t) for t in att.content_type.split("/")
        ):
            raise MessageError(
                f"{at}attachment {i + 1} content type: {att.content_type!r} is not type/subtype"
            )


_MIME_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 token


def check_renders(msg: Message) -> None:
    """Lay out the message's MIME form once (attachment bodies left out), before any provider:
    what cannot be written is the message's fault (65), not a provider failure."""
    if msg.raw is not None:
        return
    ascii_only = all(a.email.isascii() for a in (msg.sender, *msg.recipients(), *msg.reply_to))
    try:
        msg.byte_stream(email_policy.SMTP if ascii_only else email_policy.SMTPUTF8)
    except MessageError:
        raise
    except Exception as exc:  # the email package's own limits, e.g. its folder
        reason = " ".join(str(exc).split())[:200]
        raise MessageError(
            f"the message cannot be written as MIME: {type(exc).__name__}: {reason}"
        ) from None


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

"""The message as a JSON-able dict (the spool's form; `send --message` reads the same)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mailrelay.errors import MessageError
from mailrelay.message.addresses import parse_address, parse_addresses
from mailrelay.message.build import html_to_text
from mailrelay.message.headers import parse_header
from mailrelay.message.model import DEFAULT_MAX_SIZE, Attachment, Message, default_date
from mailrelay.message.validate import validate_message


def _header_dict(headers: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for name, value in headers:
        prev = out.get(name)
        if prev is None:
            out[name] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out[name] = [prev, value]
    return out


def message_to_dict(msg: Message) -> dict[str, Any]:
    """Every field of a message, losslessly, as JSON types (attachments and raw in base64)."""
    doc: dict[str, Any] = {
        "from": str(msg.sender),
        "to": [str(a) for a in msg.to],
        "cc": [str(a) for a in msg.cc],
        "bcc": [str(a) for a in msg.bcc],
        "reply_to": [str(a) for a in msg.reply_to],
        "subject": msg.subject,
        "text": msg.text,
        "html": msg.html,
        "headers": _header_dict(msg.headers),
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "content_base64": base64.b64encode(a.data).decode("ascii"),
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for a in msg.attachments
        ],
        "tags": list(msg.tags),
        "metadata": dict(msg.metadata),
        "message_id": msg.message_id,
        "date": msg.date.isoformat(),
    }
    if msg.raw is not None:
        doc["raw_base64"] = base64.b64encode(msg.raw).decode("ascii")
    if msg.envelope_from is not None:
        doc["envelope_from"] = str(msg.envelope_from)
    return doc


def _b64(where: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise MessageError(f"{where}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(f"{where}: not valid base64") from None


def _str_list(where: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MessageError(f"{where}: expected a string or a list of strings")
    return list(value)


def _opt_str(where: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MessageError(f"{where}: expected a string")


def message_from_dict(
    doc: Mapping[str, Any],
    *,
    where: str = "message",
    default_sender: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """The inverse of `message_to_dict`, validated; errors name the field ("where: field").

    Fields left out take their defaults (no sender → `default_sender`; no message_id or
    date → new ones). Attachments must already carry their bytes (`content_base64`).
    """

    def at(key: str) -> str:
        return f"{where}: {key}"

    sender = _opt_str(at("from"), doc.get("from")) or default_sender
    if not sender:
        raise MessageError(f"{at('from')}: no sender, and no 'from' in [defaults] of the config")
    headers = _headers(at("headers"), doc.get("headers") or {})
    attachments = _attachments(at("attachments"), doc.get("attachments") or [])
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise MessageError(f"{at('metadata')}: expected an object of strings")
    date = _date(at("date"), _opt_str(at("date"), doc.get("date")))
    text = _opt_str(at("text"), doc.get("text"))
    html = _opt_str(at("html"), doc.get("html"))
    raw = doc.get("raw_base64")
    if html is not None and text is None and raw is None:
        text = html_to_text(html)
    envelope_from = _opt_str(at("envelope_from"), doc.get("envelope_from"))
    msg = Message(
        sender=parse_address(at("from"), sender),
        to=parse_addresses(at("to"), _str_list(at("to"), doc.get("to"))),
        cc=parse_addresses(at("cc"), _str_list(at("cc"), doc.get("cc"))),
        bcc=parse_addresses(at("bcc"), _str_list(at("bcc"), doc.get("bcc"))),
        reply_to=parse_addresses(at("reply_to"), _str_list(at("reply_to"), doc.get("reply_to"))),
        subject=_opt_str(at("subject"), doc.get("subject")) or "",
        text=text,
        html=html,
        headers=headers,
        attachments=attachments,
        tags=_str_list(at("tags"), doc.get("tags")),
        metadata=dict(metadata),
        message_id=_opt_str(at("message_id"), doc.get("message_id")) or "",
        date=date,
        raw=None if raw is None else _b64(at("raw_base64"), raw),
        envelope_from=parse_address(at("envelope_from"), envelope_from) if envelope_from else None,
    )
    validate_message(msg, max_size=max_size)
    return msg


def _headers(where: str, value: object) -> list[tuple[str, str]]:
    """`headers`: an object of names to a value or a list of values."""
    if not isinstance(value, Mapping):
        raise MessageError(f"{where}: expected an object of header names to values")
    headers: list[tuple[str, str]] = []
    for name, values in value.items():
        for one in _str_list(f"{where}.{name}", values):
            headers.append(parse_header(f"{where}.{name}", f"{name}: {one}"))
    return headers


def _attachments(where: str, value: object) -> list[Attachment]:
    """`attachments`: objects with their bytes in `content_base64`."""
    if not isinstance(value, list):
        raise MessageError(f"{where}: expected a list")
    attachments: list[Attachment] = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"  # "where: attachments[0]"
        if not isinstance(item, Mapping):
            raise MessageError(f"{here}: expected an object")
        filename = _opt_str(f"{here}.filename", item.get("filename"))
        if not filename:
            raise MessageError(f"{here}.filename: required")
        ctype = _opt_str(f"{here}.content_type", item.get("content_type"))
        if not ctype:
            guessed, encoding = mimetypes.guess_type(filename)
            ctype = guessed if guessed and encoding is None else "application/octet-stream"
        attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                data=_b64(f"{here}.content_base64", item.get("content_base64")),
                inline=bool(item.get("inline", False)),
                content_id=_opt_str(f"{here}.content_id", item.get("content_id")),
            )
        )
    return attachments


def _date(where: str, text: str | None) -> datetime:
    """`date`: ISO 8601 with a time zone; now when there is none."""
    if not text:
        return default_date()
    try:
        # Python 3.10's fromisoformat does not read a trailing "Z" (3.11's does)
        date = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise MessageError(f"{where}: not an ISO 8601 date-time: {text!r}") from None
    if date.tzinfo is None:
        raise MessageError(f"{where}: give a time zone (e.g. 2026-11-22T09:00:00Z)")
    return date

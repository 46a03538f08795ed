"""A whole message given as RFC 5322 bytes (send --eml, sendmail mode)."""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime

from mailrelay.errors import MessageError, NoSenderError
from mailrelay.message.addresses import Address, parse_address, parse_addresses, validate_email
from mailrelay.message.bounds import (
    BOUNDED_POLICY,
    MAX_MIME_DEPTH,
    HeaderBound,
    check_header,
    check_lines,
)
from mailrelay.message.fields import decode_words, field_text, split_fields, unfold
from mailrelay.message.headers import STRUCTURAL_HEADERS, check_header_value
from mailrelay.message.model import DEFAULT_MAX_SIZE, Attachment, Message, default_date
from mailrelay.message.validate import check_fields

# Trace fields that belong to a delivery, not to the message; never passed on to an API.
_TRACE_HEADERS = frozenset({"received", "return-path", "delivered-to", "x-original-to"})
_BLIND_HEADERS = frozenset({"bcc", "resent-bcc"})


def _header_addresses(
    where: str, values: Sequence[str], aliases: Callable[[str], list[str]] | None = None
) -> list[Address]:
    out: list[Address] = []
    for name, addr in getaddresses(list(values)):
        if not addr:
            continue
        if "@" not in addr:
            out += _local_name(where, addr, decode_words(name), aliases)
            continue
        out.append(Address(validate_email(where, addr), decode_words(name)))
    return out


def _local_name(
    where: str, name: str, display: str, aliases: Callable[[str], list[str]] | None
) -> list[Address]:
    """A bare local name ("root") as the addresses its alias gives (sendmail mode)."""
    from mailrelay.aliases import is_local_name

    if aliases is None or not is_local_name(name):
        raise MessageError(
            f"{where}: {name!r} has no domain; give full addresses (e.g. MAILTO in a crontab)"
        )
    out = []
    for target in aliases(name):
        addr = parse_address(f"{where}: alias of {name!r}", target)
        out.append(addr if addr.name or not display else Address(addr.email, display))
    return out


def _aliased_field(
    where: str, name: str, whole: bytes, aliases: Callable[[str], list[str]]
) -> bytes:
    """A To or Cc field that names a local name, written again with the alias's addresses."""
    text = field_text(whole)
    if all("@" in a for _, a in getaddresses([text]) if a):
        return whole
    addresses = _header_addresses(f"{where}: {name}", [text], aliases)
    return f"{name}: {', '.join(str(a) for a in addresses)}".encode()


def _body_parts(
    msg: EmailMessage,
) -> tuple[str | None, str | None, list[Attachment]]:
    """The first plain-text and HTML bodies and every other leaf part as an attachment."""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []

    def leaf_text(part: EmailMessage) -> str:
        try:
            content = str(part.get_content())
        except (LookupError, UnicodeError, KeyError):
            payload = part.get_payload(decode=True)
            content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        return content.replace("\r\n", "\n")

    def visit(part: EmailMessage, depth: int = 0) -> None:
        nonlocal text, html
        if depth > MAX_MIME_DEPTH:
            raise RecursionError
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload(0)
            data = inner.as_bytes() if hasattr(inner, "as_bytes") else b""
            attachments.append(Attachment(part.get_filename() or "message.eml", ctype, data))
            return
        if part.is_multipart():
            for sub in part.iter_parts():
                if isinstance(sub, EmailMessage):
                    visit(sub, depth + 1)
            return
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition != "attachment" and filename is None:
            if ctype == "text/plain" and text is None:
                text = leaf_text(part)
                return
            if ctype == "text/html" and html is None:
                html = leaf_text(part)
                return
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        cid = part.get("Content-ID")
        if not filename:
            ext = mimetypes.guess_extension(ctype) or ".bin"
            filename = f"part{len(attachments) + 1}{ext}"
        attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                data=data,
                inline=disposition == "inline" or (disposition is None and cid is not None),
                content_id=str(cid).strip().strip("<>") if cid else None,
            )
        )

    visit(msg)
    return text, html, attachments


def parse_eml(
    data: bytes,
    *,
    where: str = "message",
    recipients: Sequence[str] = (),
    extract: bool = True,
    envelope_from: str | None = None,
    full_name: str | None = None,
    default_sender: str | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    aliases: Callable[[str], list[str]] | None = None,
) -> Message:
    """A complete RFC 5322 message as a `Message` that keeps its bytes (`raw`).

    As sendmail does: the envelope recipients are `recipients` plus, with `extract` (-t),
    those in To, Cc and Bcc. Bcc never leaves (the field is removed); Date and Message-ID are
    added when missing; a missing or unqualified From (cron's "root") becomes `full_name`
    (or the From's display name) with the envelope sender, else `default_sender`. With
    `aliases` (mailrelay.aliases), a bare local name among the recipients or in To/Cc
    ("root") becomes the addresses of its alias, in the envelope and in those fields. The
    header fields are kept byte for byte otherwise; line ends become CRLF. A header over the
    bounds (MAX_LINE, MAX_HEADER, MAX_MIME_FIELD, MAX_PARAMETERS) is refused unparsed.
    """
    try:
        fields, body = _checked_fields(data, where, full_name)
        kept = [(n, f) for n, f in fields if n.lower() not in _BLIND_HEADERS]
        env_from: Address | None = None
        if envelope_from and "@" in envelope_from:
            env_from = parse_address(f"{where}: -f", envelope_from)
        sender, kept = _sender(where, fields, kept, env_from, full_name, default_sender)
        names = {n.lower() for n, _ in kept}
        if "date" not in names:
            kept.append(("Date", f"Date: {format_datetime(default_date())}".encode()))
        if "message-id" not in names:
            msgid = make_msgid(domain=sender.domain)
            kept.append(("Message-ID", f"Message-ID: {msgid}".encode()))
        to, cc, bcc = _envelope(where, fields, recipients, extract, aliases)
        if aliases is not None:  # "To: root" shows the alias's address, as the envelope does
            kept = [
                (n, _aliased_field(where, n, f, aliases) if n.lower() in ("to", "cc") else f)
                for n, f in kept
            ]
        raw = _raw(where, kept, body, max_size)
        try:
            full = message_from_bytes(raw, _class=EmailMessage, policy=BOUNDED_POLICY)
            assert isinstance(full, EmailMessage)
            parts = _body_parts(full)
        except RecursionError:  # the email package's parser recurses once per nested multipart
            raise MessageError(
                f"{where}: MIME parts nested too deeply (at most {MAX_MIME_DEPTH} levels)"
            ) from None
        msg = _message(where, raw, fields, kept, sender, (to, cc, bcc), parts, env_from)
    except HeaderBound as exc:
        raise MessageError(f"{where}: {exc}") from None
    except RecursionError:  # the email package recurses once per nested comment or part
        raise MessageError(
            f"{where}: a header or the MIME parts are nested too deeply "
            f"(at most {MAX_MIME_DEPTH} levels)"
        ) from None
    return msg


def _checked_fields(data: bytes, where: str, full_name: str | None) -> tuple[Fields, bytes]:
    """The header fields and the body of `data`, refused when empty or a field is unsafe."""
    if not data.strip():
        raise MessageError(f"{where}: empty input, expected an RFC 5322 message")
    if full_name is not None:
        check_header_value(f"{where}: -F (full name)", full_name)
    fields, body = split_fields(data)
    check_header(fields)  # before any of it is parsed
    for name, field_bytes in fields:  # a bare CR or the like would end the line for a reader
        value = field_bytes.partition(b":")[2].replace(b"\n", b"")
        check_header_value(f"{where}: {name}", value.decode("utf-8", "replace"))
    return fields, body


def _message(
    where: str,
    raw: bytes,
    fields: Fields,
    kept: Fields,
    sender: Address,
    envelope: tuple[list[Address], list[Address], list[Address]],
    parts: tuple[str | None, str | None, list[Attachment]],
    env_from: Address | None,
) -> Message:
    """The checked `Message` of a parsed message's pieces."""
    to, cc, bcc = envelope
    text, html, attachments = parts
    reply_to = [
        Address(addr, decode_words(name))
        for name, addr in getaddresses(_values(fields, "Reply-To"))
        if "@" in addr
    ]
    msg = Message(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=decode_words(next(iter(_values(fields, "Subject")), "")),
        text=text,
        html=html,
        headers=_api_headers(kept),
        attachments=attachments,
        message_id=next(field_text(f) for n, f in kept if n.lower() == "message-id"),
        date=_date(_values(fields, "Date")),
        raw=raw,
        envelope_from=env_from if env_from and env_from.email != sender.email else None,
    )
    check_fields(msg, where)
    return msg


Fields = list[tuple[str, bytes]]


def _values(fields: Fields, name: str) -> list[str]:
    """The values of every field `name`, unfolded. Read from the fields here, not by the
    email package, whose header parser takes quadratic time on a field folded many times."""
    lname = name.lower()
    return [field_text(f) for n, f in fields if n.lower() == lname]


def _sender(
    where: str,
    fields: Fields,
    kept: Fields,
    env_from: Address | None,
    full_name: str | None,
    default_sender: str | None,
) -> tuple[Address, Fields]:
    """The From address, and the kept fields with a From written when the message has no
    usable one (the envelope sender or the default, with the best name there is)."""
    from_pairs = [(decode_words(n), a) for n, a in getaddresses(_values(fields, "From")) if a]
    if from_pairs and "@" in from_pairs[0][1]:
        return Address(validate_email(f"{where}: From", from_pairs[0][1]), from_pairs[0][0]), kept
    fallback = env_from or (
        parse_address(f"{where}: sender", default_sender) if default_sender else None
    )
    if fallback is None:
        raise NoSenderError(
            f"{where}: no usable From (give -f ADDRESS, or 'from' in [defaults] of the config)"
        )
    # the parsed header drops comments; cron's name is one: "root (Cron Daemon)"
    raw_from = [
        unfold(f.partition(b":")[2].decode("utf-8", "replace"))
        for n, f in fields
        if n.lower() == "from"
    ]
    comment_name = next((n for n, _ in getaddresses(raw_from) if n), "")
    name = full_name or (from_pairs[0][0] if from_pairs else "") or comment_name or fallback.name
    sender = Address(fallback.email, name)
    kept = [(n, f) for n, f in kept if n.lower() != "from"]
    kept.insert(0, ("From", f"From: {sender}".encode()))
    check_lines("From", kept[0][1])
    return sender, kept


def _envelope(
    where: str,
    fields: Fields,
    recipients: Sequence[str],
    extract: bool,
    aliases: Callable[[str], list[str]] | None,
) -> tuple[list[Address], list[Address], list[Address]]:
    """The envelope recipients (the arguments, and with `extract` To, Cc and Bcc), split
    into To, Cc and Bcc as the headers show them: the API providers need the three lists."""
    shown_to_list = _header_addresses(f"{where}: To", _values(fields, "To"), aliases)
    shown_cc_list = _header_addresses(f"{where}: Cc", _values(fields, "Cc"), aliases)
    header_bcc = (
        _header_addresses(f"{where}: Bcc", _values(fields, "Bcc"), aliases) if extract else []
    )
    header_to = shown_to_list if extract else []
    header_cc = shown_cc_list if extract else []
    args: list[Address] = []
    for given in recipients:
        if aliases is not None and "@" not in given and given.strip():
            check_header_value(f"{where}: recipient", given)
            args += _header_addresses(f"{where}: recipient", [given], aliases)
        else:
            args += parse_addresses(f"{where}: recipient", [given])
    envelope: dict[str, Address] = {}
    for addr in (*header_to, *header_cc, *header_bcc, *args):
        envelope.setdefault(addr.email.lower(), addr)
    if not envelope:
        raise MessageError(
            f"{where}: no recipients: give addresses as arguments, or -t to read To, Cc and Bcc"
        )
    shown_to = {a.email.lower() for a in shown_to_list}
    shown_cc = {a.email.lower() for a in shown_cc_list}
    to = [a for k, a in envelope.items() if k in shown_to]
    cc = [a for k, a in envelope.items() if k in shown_cc and k not in shown_to]
    rest = [a for k, a in envelope.items() if k not in shown_to and k not in shown_cc]
    return (to, cc, rest) if to else (rest, cc, [])


def _raw(where: str, kept: Fields, body: bytes, max_size: int) -> bytes:
    """The message as it goes out: the kept fields and the body, with CRLF line ends."""
    raw = b"\r\n".join(f.replace(b"\n", b"\r\n") for _, f in kept) + b"\r\n\r\n"
    raw += body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"  # SMTP DATA, mbox files and sendmail pipes all want a whole last line
    if len(raw) > max_size:
        raise MessageError(
            f"{where}: message too large: {len(raw)} bytes, "
            f"limit {max_size} (max_size in the config)"
        )
    return raw


def _date(values: list[str]) -> datetime:
    date = default_date()
    if values:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            date = parsedate_to_datetime(values[0])
        if date.tzinfo is None:
            date = date.replace(tzinfo=timezone.utc)
    return date


def _api_headers(kept: Fields) -> list[tuple[str, str]]:
    """The headers for the API providers: a field given several times (cron's X-Cron-Env)
    becomes one, its values joined by ", ", since most APIs take headers as a JSON object."""
    merged: dict[str, tuple[str, list[str]]] = {}
    for name, value in kept:
        if name.lower() not in STRUCTURAL_HEADERS and name.lower() not in _TRACE_HEADERS:
            merged.setdefault(name.lower(), (name, []))[1].append(decode_words(field_text(value)))
    return [(name, ", ".join(vals)) for name, vals in merged.values()]

"""The message model, building a message from command-line pieces, and local validation.

A `Message` is validated before any provider is contacted: a bad message never reaches a
provider and never changes provider state.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from pathlib import Path

from mailrelay.errors import InputFileError, MessageError

DEFAULT_MAX_SIZE = 50 * 1024 * 1024  # bytes of raw content; above every provider's limit

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
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable US-ASCII except ':'


@dataclass(frozen=True)
class Address:
    """One mailbox: an address and an optional display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        if not self.name:
            return self.email
        try:
            return formataddr((self.name, self.email))
        except UnicodeEncodeError:  # an internationalised address (SMTPUTF8) with a name
            name = self.name
            if any(c in '()<>@,:;."[]\\' for c in name):
                name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return f"{name} <{self.email}>"

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes
    inline: bool = False
    content_id: str | None = None

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class Message:
    sender: Address
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    date: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        if not self.message_id:
            self.message_id = make_msgid(domain=self.sender.domain or "mailrelay.invalid")

    def recipients(self) -> list[Address]:
        """The envelope recipients: To, Cc and Bcc, without duplicates, in order."""
        seen: set[str] = set()
        out: list[Address] = []
        for addr in (*self.to, *self.cc, *self.bcc):
            key = addr.email.lower()
            if key not in seen:
                seen.add(key)
                out.append(addr)
        return out

    def header(self, name: str) -> str | None:
        """The value of a custom header, matched case-insensitively."""
        lname = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None

    def to_mime(self) -> EmailMessage:
        """The message as RFC 5322 MIME. Bcc is never written into the headers."""
        msg = EmailMessage(policy=email_policy.SMTP)
        msg["From"] = str(self.sender)
        if self.to:
            msg["To"] = ", ".join(str(a) for a in self.to)
        if self.cc:
            msg["Cc"] = ", ".join(str(a) for a in self.cc)
        if self.reply_to:
            msg["Reply-To"] = ", ".join(str(a) for a in self.reply_to)
        msg["Subject"] = self.subject
        msg["Date"] = format_datetime(self.date)
        msg["Message-ID"] = self.message_id
        for name, value in self.headers:
            msg[name] = value
        if self.text is not None:
            msg.set_content(self.text)
        if self.html is not None:
            if self.text is None:
                msg.set_content(self.html, subtype="html")
            else:
                msg.add_alternative(self.html, subtype="html")
        if self.text is None and self.html is None:
            msg.set_content("")
        for att in self.attachments:
            if att.inline and att.content_id and msg.is_multipart():
                html_part = _find_html_part(msg)
                if html_part is not None:
                    html_part.add_related(
                        att.data,
                        maintype=att.maintype,
                        subtype=att.subtype,
                        cid=f"<{att.content_id}>",
                        filename=att.filename,
                    )
                    continue
            msg.add_attachment(
                att.data,
                maintype=att.maintype,
                subtype=att.subtype,
                filename=att.filename,
                disposition="inline" if att.inline else "attachment",
            )
        return msg

    def as_bytes(self) -> bytes:
        """The RFC 5322 message with CRLF line ends, as sent over SMTP."""
        return self.to_mime().as_bytes(policy=email_policy.SMTP)

    def idempotency_key(self) -> str:
        """A key that is the same for every retry of this message (Message-ID and content)."""
        h = hashlib.sha256()
        for part in (
            self.message_id,
            str(self.sender),
            *(a.email for a in self.recipients()),
            self.subject,
            self.text or "",
            self.html or "",
        ):
            h.update(part.encode("utf-8", "surrogateescape"))
            h.update(b"\0")
        for att in self.attachments:
            h.update(att.filename.encode())
            h.update(hashlib.sha256(att.data).digest())
        return h.hexdigest()

    def size(self) -> int:
        """An estimate of the raw content size in bytes (before transfer encoding)."""
        n = len(self.subject.encode()) + sum(len(v) for _, v in self.headers)
        n += len((self.text or "").encode()) + len((self.html or "").encode())
        return n + sum(len(a.data) for a in self.attachments)

    def summary(self) -> dict[str, object]:
        """What `--dry-run` and logs may show about the message (no body, no attachment bytes)."""
        return {
            "message_id": self.message_id,
            "from": str(self.sender),
            "to": [str(a) for a in self.to],
            "cc": [str(a) for a in self.cc],
            "bcc": [str(a) for a in self.bcc],
            "reply_to": [str(a) for a in self.reply_to],
            "subject": self.subject,
            "headers": [f"{n}: {v}" for n, v in self.headers],
            "text_bytes": len((self.text or "").encode()),
            "html_bytes": len((self.html or "").encode()),
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": len(a.data)}
                for a in self.attachments
            ],
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "size": self.size(),
        }


def _find_html_part(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None


# --- validation -------------------------------------------------------------------------


def check_header_value(where: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise MessageError(f"{where}: line breaks (CR/LF) are not allowed in a header value")


def validate_email(where: str, email: str) -> str:
    """Check one address's syntax (no DNS) and return its normalised form."""
    import email_validator  # costs start-up time; only sends pay it

    try:
        result = email_validator.validate_email(
            email, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise MessageError(f"{where}: {email!r} is not a valid address: {exc}") from None
    return str(result.normalized)


def parse_addresses(where: str, values: Iterable[str]) -> list[Address]:
    """Parse address arguments ("a@x, Name <b@y>") into validated Addresses."""
    out: list[Address] = []
    for value in values:
        check_header_value(where, value)
        if not value.strip():
            raise MessageError(f"{where}: empty address")
        pairs = getaddresses([value])
        if not pairs or any(not addr for _, addr in pairs):
            raise MessageError(f"{where}: {value!r} is not a valid address")
        for name, addr in pairs:
            out.append(Address(validate_email(where, addr), name))
    return out


def parse_address(where: str, value: str) -> Address:
    addrs = parse_addresses(where, [value])
    if len(addrs) != 1:
        raise MessageError(f"{where}: expected one address, got {len(addrs)}")
    return addrs[0]


def parse_header(where: str, raw: str) -> tuple[str, str]:
    """Parse "Name: value" as given to --header."""
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise MessageError(f"{where}: expected 'Name: value', got {raw!r}")
    if not _HEADER_NAME.match(name):
        raise MessageError(f"{where}: {name!r} is not a valid header name")
    if name.lower() in STRUCTURAL_HEADERS:
        raise MessageError(f"{where}: the {name} header is set by its own option")
    check_header_value(where, value)
    return name, value


def load_attachment(path: str, *, inline: bool = False) -> Attachment:
    """Read an attachment file, guessing its MIME type from the name."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"attachment {path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"attachment {path}: is a directory") from None
    except OSError as exc:
        raise InputFileError(f"attachment {path}: cannot read: {exc.strerror}") from None
    ctype, encoding = mimetypes.guess_type(p.name)
    if ctype is None or encoding is not None:
        ctype = "application/octet-stream"
    return Attachment(filename=p.name, content_type=ctype, data=data, inline=inline)


def html_to_text(html: str) -> str:
    import html2text  # only paid for when a text alternative must be made

    conv = html2text.HTML2Text()
    conv.body_width = 0
    return str(conv.handle(html)).strip() + "\n"


def validate_message(msg: Message, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
    """Everything that can be checked without a provider. Raises MessageError."""
    if not msg.recipients():
        raise MessageError("no recipients: give at least one address (argument, --to, --cc, --bcc)")
    check_header_value("subject", msg.subject)
    for name, value in msg.headers:
        if not _HEADER_NAME.match(name):
            raise MessageError(f"header {name!r}: not a valid header name")
        check_header_value(f"header {name}", value)
    for tag in msg.tags:
        check_header_value("tag", tag)
    for key, value in msg.metadata.items():
        check_header_value(f"metadata {key}", value)
    if msg.text is None and msg.html is None and not msg.attachments and not msg.subject:
        raise MessageError(
            "empty message: give a subject, a body (--text, --html, standard input) or --attach"
        )
    size = msg.size()
    if size > max_size:
        raise MessageError(
            f"message too large: {size} bytes, limit {max_size} (max_size in the config)"
        )


def build_message(
    *,
    sender: str,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    headers: Sequence[str] = (),
    attachments: Sequence[str] = (),
    tags: Sequence[str] = (),
    metadata: Sequence[str] = (),
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """Build and validate a message from command-line values (addresses as strings)."""
    if not sender:
        raise MessageError("no sender: give --from/-r or set 'from' in [defaults] of the config")
    meta: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MessageError(f"--metadata: expected KEY=VALUE, got {item!r}")
        meta[key] = value
    if html is not None and text is None:
        text = html_to_text(html)
    msg = Message(
        sender=parse_address("--from", sender),
        to=parse_addresses("--to", to),
        cc=parse_addresses("--cc", cc),
        bcc=parse_addresses("--bcc", bcc),
        reply_to=parse_addresses("--reply-to", reply_to),
        subject=subject,
        text=text,
        html=html,
        headers=[parse_header("--header", h) for h in headers],
        attachments=[load_attachment(a) for a in attachments],
        tags=list(tags),
        metadata=meta,
    )
    validate_message(msg, max_size=max_size)
    return msg

"""The message model: `Message` and `Attachment`.

A `Message` is validated before any provider is contacted: a bad message never reaches a
provider and never changes provider state.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mailrelay.datarecord import field, record
from mailrelay.message.addresses import Address
from mailrelay.message.headers import set_text_header
from mailrelay.message.mime import (
    Base64Body,
    MessageBytes,
    find_html_part,
    last_part,
    set_address_header,
)

DEFAULT_MAX_SIZE = 50 * 1024 * 1024  # bytes of raw content; above every provider's limit


@record(frozen=True)
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


def default_date() -> datetime:
    """The Date of a message that has none: now, in UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0)


@record
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
    date: datetime = field(default_factory=default_date)
    # A message given whole (--eml, sendmail mode): its RFC 5322 bytes, CRLF, Bcc removed,
    # Date and Message-ID present. Raw-capable providers send these bytes as they are; the
    # fields above are parsed from them for the providers that take JSON.
    raw: bytes | None = None
    envelope_from: Address | None = None  # sendmail -f: MAIL FROM when it differs from From
    # A client's Idempotency-Key (`serve`): the providers' own idempotency keys derive from it,
    # so the client's retries of one request are one message to them too
    idempotency: str | None = None
    # the W3C traceparent the send's trace continues (serve's request; kept in the spool)
    traceparent: str | None = None

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

    @property
    def return_path(self) -> Address:
        """The envelope sender (SMTP MAIL FROM): sendmail's -f, else the From address."""
        return self.envelope_from or self.sender

    def to_mime(self) -> EmailMessage:
        """The message as RFC 5322 MIME. Bcc is never written into the headers."""
        if self.raw is not None:
            parsed = message_from_bytes(self.raw, _class=EmailMessage, policy=email_policy.SMTP)
            assert isinstance(parsed, EmailMessage)
            return parsed
        return self._build_mime(bodies=True)[0]

    def _build_mime(
        self, *, bodies: bool
    ) -> tuple[EmailMessage, list[tuple[EmailMessage, Attachment]]]:
        """The MIME tree and each attachment's part; without `bodies` those parts are empty."""
        msg = EmailMessage(policy=email_policy.SMTP)
        set_address_header(msg, "From", [self.sender])
        set_address_header(msg, "To", self.to)
        set_address_header(msg, "Cc", self.cc)
        set_address_header(msg, "Reply-To", self.reply_to)
        set_text_header(msg, "Subject", self.subject)
        msg["Date"] = format_datetime(self.date)
        msg["Message-ID"] = self.message_id
        for name, value in self.headers:
            set_text_header(msg, name, value)
        if self.text is not None:
            msg.set_content(self.text)
        if self.html is not None:
            if self.text is None:
                msg.set_content(self.html, subtype="html")
            else:
                msg.add_alternative(self.html, subtype="html")
        if self.text is None and self.html is None:
            msg.set_content("")
        placed: list[tuple[EmailMessage, Attachment]] = []
        for att in self.attachments:
            data = att.data if bodies else b""
            if att.inline and att.content_id and msg.is_multipart():
                html_part = find_html_part(msg)
                if html_part is not None:
                    html_part.add_related(
                        data,
                        maintype=att.maintype,
                        subtype=att.subtype,
                        cid=f"<{att.content_id}>",
                        filename=att.filename,
                    )
                    placed.append((last_part(html_part), att))
                    continue
            msg.add_attachment(
                data,
                maintype=att.maintype,
                subtype=att.subtype,
                filename=att.filename,
                disposition="inline" if att.inline else "attachment",
            )
            placed.append((last_part(msg), att))
        return msg, placed

    def byte_stream(
        self, policy: email_policy.EmailPolicy[EmailMessage] = email_policy.SMTP
    ) -> MessageBytes:
        """The RFC 5322 bytes as `as_bytes` gives them, made chunk by chunk: the email package
        lays out the MIME skeleton, and each attachment's base64 is generated while sending
        (the email package would hold it whole several times over: 10x a large attachment)."""
        if self.raw is not None:
            return MessageBytes([self.raw])
        # a random token names each attachment's place, so no body text can look like one
        token = f"mailrelay-attachment-{os.urandom(16).hex()}-"
        # the headers mailrelay encodes itself (set_text_header) are written as they are
        policy = policy.clone(refold_source="none")
        msg, placed = self._build_mime(bodies=False)
        for i, (part, _) in enumerate(placed):
            part.set_payload(f"{token}{i}\n")  # one line, as a base64 body is lines
        skeleton = msg.as_bytes(policy=policy)
        if not placed:  # no attachment to splice in (most alerts): no pattern to compile
            return MessageBytes([skeleton])
        linesep = policy.linesep.encode("ascii")
        pieces: list[bytes | Base64Body] = []
        start = 0
        pattern = re.compile(
            rb"^" + re.escape(token.encode("ascii")) + rb"\d+" + re.escape(linesep), re.MULTILINE
        )
        for m in pattern.finditer(skeleton):
            pieces.append(skeleton[start : m.start()])
            index = int(m.group()[len(token) : -len(linesep)])
            pieces.append(Base64Body(placed[index][1].data, linesep))
            start = m.end()
        pieces.append(skeleton[start:])
        return MessageBytes(pieces)

    def as_bytes(self) -> bytes:
        """The RFC 5322 message with CRLF line ends, as sent over SMTP."""
        if self.raw is not None:
            return self.raw
        return b"".join(self.byte_stream())

    def idempotency_key(self) -> str:
        """A key that is the same for every retry of this message (Message-ID and content)."""
        import hashlib  # only the providers that send an idempotency key pay for it

        if self.idempotency is not None:
            return hashlib.sha256(b"client key\0" + self.idempotency.encode()).hexdigest()
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
        if self.raw is not None:
            h.update(hashlib.sha256(self.raw).digest())
        return h.hexdigest()

    def size(self) -> int:
        """An estimate of the raw content size in bytes (before transfer encoding)."""
        if self.raw is not None:
            return len(self.raw)
        # "surrogatepass": text that has no UTF-8 form is refused later (check_renders)
        n = len(self.subject.encode(errors="surrogatepass")) + sum(len(v) for _, v in self.headers)
        n += len((self.text or "").encode(errors="surrogatepass"))
        n += len((self.html or "").encode(errors="surrogatepass"))
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

"""The message model, building a message from command-line pieces, and local validation.

A `Message` is validated before any provider is contacted: a bad message never reaches a
provider and never changes provider state.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import mimetypes
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

from mailrelay.errors import MessageError, NoSenderError, input_file_error
from mailrelay.record import field, record

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


@record(frozen=True)
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


# As the email package writes base64 under the SMTP policy's 78 columns: 57 bytes a line
_BASE64_LINE = 57
_BASE64_CHUNK = 1024 * _BASE64_LINE  # raw bytes per chunk: about 78 KiB of lines


@record(frozen=True)
class _Base64:
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

    def __init__(self, pieces: Sequence[bytes | _Base64]) -> None:
        self._pieces = [p for p in pieces if not isinstance(p, bytes) or p]

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.size for p in self._pieces)

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


def _now() -> datetime:
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
    date: datetime = field(default_factory=_now)
    # A message given whole (--eml, sendmail mode): its RFC 5322 bytes, CRLF, Bcc removed,
    # Date and Message-ID present. Raw-capable providers send these bytes as they are; the
    # fields above are parsed from them for the providers that take JSON.
    raw: bytes | None = None
    envelope_from: Address | None = None  # sendmail -f: MAIL FROM when it differs from From
    # A client's Idempotency-Key (`serve`): the providers' own idempotency keys derive from it,
    # so the client's retries of one request are one message to them too
    idempotency: str | None = None

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
        _set_addresses(msg, "From", [self.sender])
        _set_addresses(msg, "To", self.to)
        _set_addresses(msg, "Cc", self.cc)
        _set_addresses(msg, "Reply-To", self.reply_to)
        _set_text(msg, "Subject", self.subject)
        msg["Date"] = format_datetime(self.date)
        msg["Message-ID"] = self.message_id
        for name, value in self.headers:
            _set_text(msg, name, value)
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
                html_part = _find_html_part(msg)
                if html_part is not None:
                    html_part.add_related(
                        data,
                        maintype=att.maintype,
                        subtype=att.subtype,
                        cid=f"<{att.content_id}>",
                        filename=att.filename,
                    )
                    placed.append((_last_part(html_part), att))
                    continue
            msg.add_attachment(
                data,
                maintype=att.maintype,
                subtype=att.subtype,
                filename=att.filename,
                disposition="inline" if att.inline else "attachment",
            )
            placed.append((_last_part(msg), att))
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
        # the headers mailrelay encodes itself (_set_text) are written as they are
        policy = policy.clone(refold_source="none")
        msg, placed = self._build_mime(bodies=False)
        for i, (part, _) in enumerate(placed):
            part.set_payload(f"{token}{i}\n")  # one line, as a base64 body is lines
        skeleton = msg.as_bytes(policy=policy)
        linesep = policy.linesep.encode("ascii")
        pieces: list[bytes | _Base64] = []
        start = 0
        pattern = re.compile(
            rb"^" + re.escape(token.encode("ascii")) + rb"\d+" + re.escape(linesep), re.MULTILINE
        )
        for m in pattern.finditer(skeleton):
            pieces.append(skeleton[start : m.start()])
            index = int(m.group()[len(token) : -len(linesep)])
            pieces.append(_Base64(placed[index][1].data, linesep))
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


# --- header values the email package must not fold itself ------------------------------
#
# Text that looks like an RFC 2047 encoded word ("=?utf-8?q?x?=") would be decoded by every
# reader, and the email package's folder has failed on long unbreakable words mixed with
# non-ASCII text: such values are written here as encoded words (RFC 2047 "B"), each at
# most 75 characters, one per line (RFC 5322 §2.2.3 folding), so they arrive as typed.
_LINE = 78  # RFC 5322 §2.1.1: SHOULD be no more than 78 characters
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: 60 base64 characters + 12 = 72
_LONG_WORD = 40
_MAX_NAME_WORD = 900  # characters of the one encoded word a display name becomes (RFC 5322: 998)


def _longest_word(value: str) -> int:
    return max((len(w) for w in value.split()), default=0)


def _needs_encoding(value: str) -> bool:
    if "=?" in value:
        return True
    longest = _longest_word(value)
    return longest > 900 or (longest > _LONG_WORD and not value.isascii())


def _name_needs_encoding(name: str) -> bool:
    # the email package re-parses an encoded non-ASCII name and loses one holding specials
    # (a display name "é Reply-To: x@example.com" came back as an address)
    return not name.isascii() or _needs_encoding(name)


def _encoded_words(value: str, first_room: int) -> str:
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


def _set_text(msg: EmailMessage, name: str, value: str) -> None:
    """An unstructured header (Subject, --header): encoded here when the email package would
    change it, else as the email package writes it."""
    if _needs_encoding(value):
        msg.set_raw(name, _encoded_words(value, _LINE - len(name) - 2))
    else:
        msg[name] = value


def _set_addresses(msg: EmailMessage, name: str, addresses: Sequence[Address]) -> None:
    if not addresses:
        return
    special = any(_name_needs_encoding(a.name) for a in addresses)
    if not special or not all(a.email.isascii() for a in addresses):
        msg[name] = ", ".join(str(a) for a in addresses)
        return
    lines = []
    for addr in addresses:
        if _name_needs_encoding(addr.name):
            # one encoded word: readers (the email package among them) put a space between
            # adjacent encoded words in a display name, which RFC 2047 §6.2 says to drop
            word = _encoded_words(addr.name, _MAX_NAME_WORD)
            if "\n" in word:
                raise MessageError(
                    f"{name}: display name too long to encode ({len(addr.name)} characters)"
                )
            lines.append(f"{word}\n <{addr.email}>")
        else:
            lines.append(str(addr))
    msg.set_raw(name, ",\n ".join(lines))


def _last_part(msg: EmailMessage) -> EmailMessage:
    *_, part = msg.iter_parts()
    assert isinstance(part, EmailMessage)
    return part


def _find_html_part(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None


# --- validation -------------------------------------------------------------------------


# What never goes into a header: C0 controls but TAB (CR and LF among them), DEL, the C1
# controls (NEL U+0085 among them) and the Unicode line and paragraph separators, which some
# readers and JSON APIs take as line breaks. VT, FF and FS/GS/RS are line ends to Python's
# str.splitlines.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def check_header_value(where: str, value: str) -> None:
    """The one check for every string that lands in a header (flags, JSON, .eml, sendmail):
    refuse what could end a line there, naming the field and never echoing the value."""
    m = _NOT_IN_HEADER.search(value)
    if m is None:
        return
    char = m.group()
    if char in "\r\n":
        raise MessageError(f"{where}: line breaks (CR/LF) are not allowed in a header value")
    raise MessageError(
        f"{where}: control character U+{ord(char):04X} is not allowed in a header value"
    )


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


# The common case, checked without email_validator (whose import compiles dozens of regular
# expressions: about 40 ms of every send). It accepts only addresses email_validator also
# accepts, and normalises them as it does (the domain in lower case); anything else — quoted
# or internationalised parts, IDNA, special-use domains — goes to email_validator.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_address(email: str) -> str | None:
    m = _PLAIN_ADDRESS.fullmatch(email)
    if m is None or len(email) > 254 or len(m.group(1)) > 64 or len(m.group(2)) > 253:
        return None
    domain = m.group(2).lower()
    if "--" in domain or domain.rpartition(".")[2] in _SPECIAL_USE:
        return None
    return f"{m.group(1)}@{domain}"


# Names that only a local or internal mail system delivers to, which msmtp and mailx take:
# a dotless host (root@localhost, root@web1) and these special-use or private suffixes
# (RFC 6761 .localhost, RFC 6762 .local, ICANN's .internal; .lan by common use).
_LOCAL_SUFFIXES = ("local", "lan", "internal", "localhost")
_LOCAL_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


def is_local_address(email: str) -> bool:
    """A dotless, special-use (.local .lan .internal .localhost) or IP-literal domain: a
    local or internal mailbox that the public HTTP APIs cannot deliver to."""
    local, at, domain = email.rpartition("@")
    domain = domain.lower()
    if not at or not local or not domain:
        return False  # not an address at all: the provider's own check says so
    if domain.startswith("["):
        return True
    return "." not in domain or domain.rpartition(".")[2] in _LOCAL_SUFFIXES


def validate_email(where: str, email: str) -> str:
    """Check one address's syntax (no DNS) and return its normalised form."""
    plain = _plain_address(email)
    if plain is not None:
        return plain
    import email_validator  # costs start-up time; only unusual addresses pay it

    local, _, domain = email.rpartition("@")
    checked, own_domain = email, None
    if local and is_local_address(email) and _LOCAL_DOMAIN.fullmatch(domain):
        # email_validator refuses these names; check the local part alone
        checked, own_domain = f"{local}@example.com", domain.lower()
    try:
        result = email_validator.validate_email(
            checked, check_deliverability=False, allow_smtputf8=True, allow_domain_literal=True
        )
    except email_validator.EmailNotValidError as exc:
        raise MessageError(f"{where}: {email!r} is not a valid address: {exc}") from None
    if own_domain is not None:
        return f"{result.local_part}@{own_domain}"
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


_READ_CHUNK = 1024 * 1024


def read_input_file(
    path: str | Path, label: str, *, limit: int | None = None, regular: bool = False
) -> bytes:
    """A whole input file; unreadable → InputFileError "LABEL: no such file" (exit 66).

    Read in chunks, never more than `limit` bytes (a MessageError past it: /dev/zero ends
    there); with `regular`, anything but a regular file (a FIFO, a device) is refused before
    a byte is read, as opening a FIFO would wait for a writer.
    """
    from mailrelay.fsutil import open_for_reading

    try:
        fd = open_for_reading(path, regular=regular)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a regular file: the input's fault
            raise MessageError(f"{label}: not a regular file") from None
        raise input_file_error(label, exc) from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        try:
            return read_bounded(fh, label, limit)
        except OSError as exc:
            raise input_file_error(label, exc) from None


def read_bounded(stream: BinaryIO, label: str, limit: int | None) -> bytes:
    """All of `stream`, in chunks; a one-line MessageError once it passes `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit + 1 - total)
        chunk = stream.read(want)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise MessageError(
                f"{label}: larger than the message size limit of {limit} bytes "
                "(max_size in the config)"
            )


def load_attachment(
    path: str, *, inline: bool = False, max_size: int = DEFAULT_MAX_SIZE
) -> Attachment:
    """Read an attachment file, guessing its MIME type from the name."""
    p = Path(path)
    data = read_input_file(p, f"attachment {path}", limit=max_size, regular=True)
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
        attachments=[load_attachment(a, max_size=max_size) for a in attachments],
        tags=list(tags),
        metadata=meta,
    )
    validate_message(msg, max_size=max_size)
    return msg


# --- the message as a JSON-able dict (the spool's form; `send --message` reads the same) --


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
    headers: list[tuple[str, str]] = []
    raw_headers = doc.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise MessageError(f"{at('headers')}: expected an object of header names to values")
    for name, value in raw_headers.items():
        for one in _str_list(at(f"headers.{name}"), value):
            headers.append(parse_header(at(f"headers.{name}"), f"{name}: {one}"))
    attachments: list[Attachment] = []
    raw_atts = doc.get("attachments") or []
    if not isinstance(raw_atts, list):
        raise MessageError(f"{at('attachments')}: expected a list")
    for i, item in enumerate(raw_atts):
        here = at(f"attachments[{i}]")  # "where: attachments[0]"
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
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise MessageError(f"{at('metadata')}: expected an object of strings")
    date = _now()
    date_text = _opt_str(at("date"), doc.get("date"))
    if date_text:
        try:
            # Python 3.10's fromisoformat does not read a trailing "Z" (3.11's does)
            iso = date_text[:-1] + "+00:00" if date_text[-1:] in ("Z", "z") else date_text
            date = datetime.fromisoformat(iso)
        except ValueError:
            raise MessageError(f"{at('date')}: not an ISO 8601 date-time: {date_text!r}") from None
        if date.tzinfo is None:
            raise MessageError(f"{at('date')}: give a time zone (e.g. 2026-11-22T09:00:00Z)")
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


# --- a whole message given as RFC 5322 bytes (send --eml, sendmail mode) ----------------

# Trace fields that belong to a delivery, not to the message; never passed on to an API.
_TRACE_HEADERS = frozenset({"received", "return-path", "delivered-to", "x-original-to"})
_BLIND_HEADERS = frozenset({"bcc", "resent-bcc"})
MAX_MIME_DEPTH = 100  # multipart levels in a message given whole
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def _split_fields(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
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


def _header_addresses(where: str, values: Sequence[str]) -> list[Address]:
    out: list[Address] = []
    for name, addr in getaddresses(list(values)):
        if not addr:
            continue
        if "@" not in addr:
            raise MessageError(
                f"{where}: {addr!r} has no domain; give full addresses (e.g. MAILTO in a crontab)"
            )
        out.append(Address(validate_email(where, addr), _decode_words(name)))
    return out


def _field_text(field: bytes) -> str:
    """A field's value (after "Name:"), unfolded, still RFC 2047-encoded."""
    return _unfold(field.partition(b":")[2].decode("utf-8", "replace"))


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded; text that does not decode stays as it is."""
    if "=?" not in text:
        return text
    from email.errors import HeaderParseError
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _unfold(value: str) -> str:
    return re.sub(r"\s*\r?\n[ \t]*", " ", value).strip()


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
) -> Message:
    """A complete RFC 5322 message as a `Message` that keeps its bytes (`raw`).

    As sendmail does: the envelope recipients are `recipients` plus, with `extract` (-t),
    those in To, Cc and Bcc. Bcc never leaves (the field is removed); Date and Message-ID are
    added when missing; a missing or unqualified From (cron's "root") becomes `full_name`
    (or the From's display name) with the envelope sender, else `default_sender`. The header
    fields are kept byte for byte otherwise; line ends become CRLF.
    """
    if not data.strip():
        raise MessageError(f"{where}: empty input, expected an RFC 5322 message")
    if full_name is not None:
        check_header_value(f"{where}: -F (full name)", full_name)
    fields, body = _split_fields(data)
    for name, field_bytes in fields:  # a bare CR or the like would end the line for a reader
        value = field_bytes.partition(b":")[2].replace(b"\n", b"")
        check_header_value(f"{where}: {name}", value.decode("utf-8", "replace"))
    kept = [(n, f) for n, f in fields if n.lower() not in _BLIND_HEADERS]

    # Header values are read from the fields here, not by the email package, whose header
    # parser takes quadratic time on a field folded over many lines.
    def values(name: str) -> list[str]:
        lname = name.lower()
        return [_field_text(f) for n, f in fields if n.lower() == lname]

    env_from: Address | None = None
    if envelope_from and "@" in envelope_from:
        env_from = parse_address(f"{where}: -f", envelope_from)
    from_pairs = [(_decode_words(n), a) for n, a in getaddresses(values("From")) if a]
    sender: Address | None = None
    if from_pairs and "@" in from_pairs[0][1]:
        sender = Address(validate_email(f"{where}: From", from_pairs[0][1]), from_pairs[0][0])
    else:
        fallback = env_from or (
            parse_address(f"{where}: sender", default_sender) if default_sender else None
        )
        if fallback is None:
            raise NoSenderError(
                f"{where}: no usable From (give -f ADDRESS, or 'from' in [defaults] of the config)"
            )
        # the parsed header drops comments; cron's name is one: "root (Cron Daemon)"
        raw_from = [
            _unfold(f.partition(b":")[2].decode("utf-8", "replace"))
            for n, f in fields
            if n.lower() == "from"
        ]
        comment_name = next((n for n, _ in getaddresses(raw_from) if n), "")
        name = (
            full_name or (from_pairs[0][0] if from_pairs else "") or comment_name or fallback.name
        )
        sender = Address(fallback.email, name)
        kept = [(n, f) for n, f in kept if n.lower() != "from"]
        kept.insert(0, ("From", f"From: {sender}".encode()))
    names = {n.lower() for n, _ in kept}
    if "date" not in names:
        kept.append(("Date", f"Date: {format_datetime(_now())}".encode()))
    if "message-id" not in names:
        kept.append(("Message-ID", f"Message-ID: {make_msgid(domain=sender.domain)}".encode()))

    header_to = _header_addresses(f"{where}: To", values("To")) if extract else []
    header_cc = _header_addresses(f"{where}: Cc", values("Cc")) if extract else []
    header_bcc = _header_addresses(f"{where}: Bcc", values("Bcc")) if extract else []
    args = parse_addresses(f"{where}: recipient", recipients) if recipients else []
    envelope: dict[str, Address] = {}
    for addr in (*header_to, *header_cc, *header_bcc, *args):
        envelope.setdefault(addr.email.lower(), addr)
    if not envelope:
        raise MessageError(
            f"{where}: no recipients: give addresses as arguments, or -t to read To, Cc and Bcc"
        )
    # The API providers need To/Cc/Bcc lists: the envelope split as the headers show it.
    shown_to = {a.email.lower() for a in _header_addresses(f"{where}: To", values("To"))}
    shown_cc = {a.email.lower() for a in _header_addresses(f"{where}: Cc", values("Cc"))}
    to = [a for k, a in envelope.items() if k in shown_to]
    cc = [a for k, a in envelope.items() if k in shown_cc and k not in shown_to]
    rest = [a for k, a in envelope.items() if k not in shown_to and k not in shown_cc]
    if to:
        bcc = rest
    else:
        to, bcc = rest, []

    raw = b"\r\n".join(f.replace(b"\n", b"\r\n") for _, f in kept) + b"\r\n\r\n"
    raw += body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"  # SMTP DATA, mbox files and sendmail pipes all want a whole last line
    if len(raw) > max_size:
        raise MessageError(
            f"{where}: message too large: {len(raw)} bytes, "
            f"limit {max_size} (max_size in the config)"
        )
    try:
        full = message_from_bytes(raw, _class=EmailMessage, policy=email_policy.default)
        assert isinstance(full, EmailMessage)
        text, html, attachments = _body_parts(full)
    except RecursionError:  # the email package's parser recurses once per nested multipart
        raise MessageError(
            f"{where}: MIME parts nested too deeply (at most {MAX_MIME_DEPTH} levels)"
        ) from None
    date = _now()
    date_values = values("Date")
    if date_values:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            date = parsedate_to_datetime(date_values[0])
        if date.tzinfo is None:
            date = date.replace(tzinfo=timezone.utc)
    message_id = next(_field_text(f) for n, f in kept if n.lower() == "message-id")
    # For the API providers: a field given several times (cron's X-Cron-Env) becomes one,
    # its values joined by ", ", since most APIs take headers as a JSON object.
    merged: dict[str, tuple[str, list[str]]] = {}
    for name, value in kept:
        if name.lower() not in STRUCTURAL_HEADERS and name.lower() not in _TRACE_HEADERS:
            merged.setdefault(name.lower(), (name, []))[1].append(_decode_words(_field_text(value)))
    headers = [(name, ", ".join(vals)) for name, vals in merged.values()]
    reply_to = [
        Address(addr, _decode_words(name))
        for name, addr in getaddresses(values("Reply-To"))
        if "@" in addr
    ]
    msg = Message(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=_decode_words(next(iter(values("Subject")), "")),
        text=text,
        html=html,
        headers=headers,
        attachments=attachments,
        message_id=message_id,
        date=date,
        raw=raw,
        envelope_from=env_from if env_from and env_from.email != sender.email else None,
    )
    check_fields(msg, where)
    return msg

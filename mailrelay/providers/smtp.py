"""SMTP submission through smtplib: STARTTLS, implicit TLS or plain; AUTH; reply codes mapped
to outcome classes.

Every attempt tracks the stage it is in (connect, EHLO, STARTTLS, AUTH, MAIL FROM, RCPT TO,
DATA, the message data, the reply after the final dot), so each failure gets exactly one
class (docs/architecture.md). Facts: RFC 5321 (reply codes), RFC 3463 (enhanced status codes),
RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 1870 (SIZE), RFC 6531 (SMTPUTF8), RFC 8314
(implicit TLS on 465), all at https://www.rfc-editor.org/.
"""

from __future__ import annotations

import contextlib
import email.policy
import itertools
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    Provider,
    ProviderError,
    Receipt,
    tag_header_lines,
)
from mailrelay.providers.deadline import MAX_ANSWER, deadline_file
from mailrelay.secrets import remember_auth, scrub

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

SECURITIES = ("starttls", "tls", "none")
# submission (RFC 6409) / submissions (RFC 8314) / plain relay (RFC 5321)
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_TEXT_LIMIT = 300
_QUIT_TIMEOUT = 2.0

# Stages of one session, as named in error messages.
CONNECT = "connect"
EHLO = "EHLO"
STARTTLS = "STARTTLS"
AUTH = "AUTH"
MAIL = "MAIL FROM"
RCPT = "RCPT TO"
DATA = "DATA"
BODY = "message data"
END = "end of data"  # the final "." has been sent: the server may have queued the message
NOOP = "NOOP"
# A 5xx here refuses the session itself, so every message would meet it: a provider problem.
_SESSION_STAGES = frozenset({CONNECT, EHLO, STARTTLS, AUTH, NOOP})
# Authentication required / credentials invalid / mechanism too weak / encryption required
# (RFC 4954 §6); they mean our configuration at any stage, with or without an enhanced code.
_AUTH_CODES = frozenset({530, 534, 535, 538})

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def enhanced_code(code: int, text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, e.g. "5.7.1"."""
    m = _ENHANCED.match(text)
    if m is None or m.group(1) != str(code)[:1]:  # its class must match the reply code's
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def classify_reply(stage: str, code: int, text: str) -> Outcome:
    """The outcome class of a negative SMTP reply at a given stage."""
    if 400 <= code < 500:  # RFC 5321 §4.2.1: transient negative completion, incl. 454 on AUTH
        return Outcome.TRANSIENT
    if not 500 <= code < 600:  # not an SMTP reply we can read: the server is broken
        return Outcome.PROVIDER
    enhanced = enhanced_code(code, text) or ""
    # 5.7.x is security or policy (auth, relay denied, unverified sender): not the message
    if enhanced.startswith("5.7.") or code in _AUTH_CODES or stage in _SESSION_STAGES:
        return Outcome.PROVIDER
    if code == 552 or enhanced == "5.3.4":  # too big for THIS server; another may take it
        return Outcome.REJECTED
    if enhanced.startswith("5.1.") and stage in (MAIL, RCPT):  # bad mailbox or address
        return Outcome.PERMANENT
    if enhanced.startswith("5.6.") and stage in (DATA, END):  # bad message content
        return Outcome.PERMANENT
    return Outcome.REJECTED


def _reply_text(msg: bytes | str) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    text = " ".join(text.split())
    if len(text) > _TEXT_LIMIT:
        text = text[: _TEXT_LIMIT - 1] + "…"
    return text


def dot_stuff(data: bytes) -> bytes:
    """The message data for DATA: CRLF line ends, leading dots doubled (RFC 5321 §4.5.2)."""
    data = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", data))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _dot_stuffed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`dot_stuff` over chunks that each start a line and end with CRLF but the last."""
    chunk = b""
    for chunk in chunks:
        # base64 chunks (most of a large message) never start a line with a dot
        if chunk.startswith(b".") or b"\n." in chunk:
            chunk = _LEADING_DOT.sub(b"..", chunk)
        yield chunk
    if not chunk.endswith(b"\r\n"):
        yield b"\r\n"


def _timed_out(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, TimeoutError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class SmtpProvider(Provider):
    """Plain SMTP submission (smtp:// and smtps:// URLs)."""

    type: ClassVar[str] = "smtp"
    url_schemes: ClassVar[tuple[str, ...]] = ("smtp", "smtps")
    # tags and metadata travel as X-Mailrelay-Tag / X-Mailrelay-Metadata header fields
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    health_check: ClassVar[str] = "connect, EHLO, TLS, AUTH, NOOP, QUIT"

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int | None = None,
        security: str = "starttls",
        username: str | None = None,
        password: Secret | None = None,
        timeout: float | None = None,
        ca_file: str | None = None,
        verify: bool = True,
        helo: str | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        if security not in SECURITIES:
            raise ValueError(f"security must be one of {', '.join(SECURITIES)}")
        self.host = host
        self.security = security
        self.port = port or DEFAULT_PORTS[security]
        self.username = username
        self._password = password
        self.ca_file = ca_file
        self.verify = verify
        self.helo = helo
        # Off: one session per message, as a single `send` wants. On (batches): each thread
        # keeps its session open after a 250 and sends the next message on it; close() QUITs.
        self.reuse_connections = False
        self._local = threading.local()
        self._open: set[_Session] = set()
        self._open_lock = threading.Lock()

    # --- configuration -----------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> SmtpProvider:
        host = cfg.get_required_str("host").strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise cfg.error("host", f"must be a host name or address, got {host!r}")
        if host.count(":") == 1:
            raise cfg.error("host", "give the port in the 'port' key, not in the host")
        security = cfg.get_choice("security", SECURITIES, "starttls")
        port = cfg.get_int("port", DEFAULT_PORTS[security], least=1, most=65535)
        username = cfg.get_str("username")
        if username is not None and not cfg.has("password"):
            raise cfg.error("password", "is required when username is given")
        password = cfg.get_secret("password")
        if password is not None and username is None:
            raise cfg.error("password", "is given without a username")
        ca_file = cfg.get_str("ca_file")
        if ca_file is not None:
            path = Path(ca_file).expanduser()
            if not path.is_file():
                raise cfg.error("ca_file", f"no such file: {path}")
            ca_file = str(path)
        verify = cfg.get_bool("verify", True)
        helo = cfg.get_str("helo")
        if helo is not None and any(c.isspace() for c in helo):
            raise cfg.error("helo", "must be one host name, without spaces")
        return cls(
            cfg.name,
            host=host,
            port=port,
            security=security,
            username=username,
            password=password,
            timeout=cfg.get_timeout(cls.default_timeout),
            ca_file=ca_file,
            verify=verify,
            helo=helo,
        )

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """smtp://user:pass@host:587?security=starttls, smtps://user:pass@host (port 465)."""
        if not url.host:
            raise url.error("needs a host, e.g. smtp://user:pass@smtp.example.com:587")
        if url.path not in ("", "/"):
            raise url.error("an SMTP URL has no path; give options as ?key=value")
        values: dict[str, Any] = {"host": url.host}
        if url.port:
            values["port"] = url.port
        if url.username:
            values["username"] = url.username
        if url.password is not None:
            values["password"] = url.password
        if url.scheme == "smtps":
            if url.query.get("security", "tls") != "tls":
                raise url.error("smtps:// is implicit TLS; use smtp://...?security=... instead")
            values["security"] = "tls"
        return values

    def describe(self) -> dict[str, str]:
        info = {"host": self.host, "port": str(self.port), "security": self.security}
        if self.username:
            info["username"] = self.username
        if self.security != "none":
            if not self.verify:
                info["verify"] = "off"
            if self.ca_file:
                info["ca_file"] = self.ca_file
        if self.helo:
            info["helo"] = self.helo
        return info

    @property
    def label(self) -> str:
        """host:port, as error messages start."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """Certificates and host names are verified unless `verify = false`."""
        try:
            ctx = ssl.create_default_context()
            if self.ca_file:  # in addition to the system's CAs, e.g. a private CA
                ctx.load_verify_locations(cafile=self.ca_file)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ProviderError(
                Outcome.PROVIDER, f"{self.label}: cannot load ca_file {self.ca_file}: {reason}"
            ) from None
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def password(self) -> str:
        assert self._password is not None
        try:
            password = self._password.reveal()
            remember_auth(self.username or "", password)  # AUTH PLAIN / LOGIN forms
            return password
        except Exception as exc:  # a missing env var or a failing command: this provider only
            raise ProviderError(
                Outcome.PROVIDER, f"{self.label}: cannot get the password: {exc}"
            ) from None

    # --- the contract ------------------------------------------------------------------

    def hold_connections(self) -> None:
        self.reuse_connections = True

    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        timeout = min(self.timeout, timeout)
        if not self.reuse_connections:
            with _Session(self, timeout) as session:
                session.open()
                return session.deliver(message)
        started = time.monotonic()
        idle: _Session | None = getattr(self._local, "session", None)
        self._local.session = None
        if idle is not None:
            idle.restart(timeout)
            try:
                return self._deliver_kept(idle, message, fresh=False)
            except _Stale:
                pass  # the server closed it while idle: connect once more, not a failure
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        return self._deliver_kept(_Session(self, timeout), message, fresh=True)

    def _deliver_kept(self, session: _Session, message: Message, *, fresh: bool) -> Receipt:
        """Deliver on `session` (opening it when `fresh`) and keep it for this thread's next
        message; any failure closes it, as a single send would."""
        with self._open_lock:
            self._open.add(session)
        try:
            with session:
                session.keep = True
                session.reused = not fresh
                if fresh:
                    session.open()
                receipt = session.deliver(message)
        finally:
            if session.smtp is None:
                with self._open_lock:
                    self._open.discard(session)
        self._local.session = session
        return receipt

    def close(self) -> None:
        """QUIT every session kept open for reuse (sessions are idle by now)."""
        with self._open_lock:
            sessions, self._open = list(self._open), set()
        for session in sessions:
            session.restart(_QUIT_TIMEOUT)
            session.finish(polite=True)
        self._local = threading.local()

    def check(self, *, timeout: float) -> Health:
        try:
            with _Session(self, min(self.timeout, timeout)) as session:
                session.open()
                session.noop()
                return Health(True, session.summary())
        except ProviderError as exc:
            return Health(False, exc.message, exc.outcome)


class _BoundedReplies:
    """smtplib's reply reading under the session's deadline: each reply ends by it, and is
    at most MAX_ANSWER bytes, however many continuation lines ("220-...") a server sends."""

    session: _Session
    sock: socket.socket | None
    file: Any
    _host: str
    close: Callable[[], None]  # smtplib.SMTP's

    def getreply(self) -> tuple[int, bytes]:
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        if self.file is None:
            self.file = deadline_file(self.sock, lambda: self.session.deadline)
        lines: list[bytes] = []
        total = 0
        while True:
            try:
                line = self.file.readline(MAX_ANSWER + 1 - total)
            except OSError as exc:
                self.close()
                raise smtplib.SMTPServerDisconnected(f"connection lost: {exc}") from exc
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("connection closed")
            total += len(line)
            if total > MAX_ANSWER:
                self.close()
                raise smtplib.SMTPResponseException(
                    -1, f"reply longer than {MAX_ANSWER} bytes".encode()
                )
            lines.append(line[4:].strip(b" \t\r\n"))
            if not line[:3].isdigit():
                return -1, b"\n".join(lines)
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)


class _BoundedSMTP(_BoundedReplies, smtplib.SMTP):
    pass


class _BoundedSMTPSSL(_BoundedReplies, smtplib.SMTP_SSL):
    pass


class _Stale(Exception):
    """A kept session turned out closed by the server before MAIL FROM: reconnect."""


class _Session:
    """One SMTP session under one deadline; turns every failure into one ProviderError."""

    def __init__(self, provider: SmtpProvider, timeout: float) -> None:
        self.p = provider
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.stage = CONNECT
        self.smtp: smtplib.SMTP | None = None
        self.server_name = ""
        self.notes: list[str] = []
        self.keep = False  # leave the connection open after a success (reuse)
        self.reused = False  # this message goes over a connection kept from an earlier one

    def restart(self, timeout: float) -> None:
        """A fresh deadline for the next message on a kept connection."""
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def __enter__(self) -> _Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # QUIT only when the connection is in a known state: after success or a plain reply
        if exc is None and self.keep:
            return
        if isinstance(exc, _Stale):
            self.finish(polite=False)
            return
        intact = exc is None or isinstance(
            exc, (ProviderError, smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError)
        )
        self.finish(polite=intact)
        if exc is None or isinstance(exc, ProviderError) or not isinstance(exc, Exception):
            return
        raise self.failure(exc) from None

    # --- plumbing ----------------------------------------------------------------------

    def error(self, outcome: Outcome, text: str, *, status: int | None = None) -> ProviderError:
        return ProviderError(outcome, scrub(f"{self.p.label}: {text}"), status=status)

    def reply_error(self, code: int, msg: bytes | str, stage: str | None = None) -> ProviderError:
        stage = stage or self.stage
        text = _reply_text(msg)
        return self.error(
            classify_reply(stage, code, text), f"{code} {text} (reply to {stage})", status=code
        )

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def at(self, stage: str) -> smtplib.SMTP:
        """Enter a stage: what fails from now on is classified as failing here."""
        self.stage = stage
        assert self.smtp is not None and self.smtp.sock is not None
        self.smtp.sock.settimeout(self.remaining())
        return self.smtp

    def failure(self, exc: Exception) -> ProviderError:
        """The one outcome of an exception raised at the current stage."""
        stage = self.stage
        if isinstance(exc, smtplib.SMTPResponseException):
            return self.reply_error(exc.smtp_code, exc.smtp_error)
        if isinstance(exc, ssl.SSLCertVerificationError):
            # a wrong or untrusted certificate will not fix itself
            reason = exc.verify_message or exc.reason or "unknown reason"
            return self.error(Outcome.PROVIDER, f"TLS certificate verify failed: {reason}")
        if isinstance(exc, smtplib.SMTPNotSupportedError | smtplib.SMTPHeloError):
            return self.error(Outcome.PROVIDER, f"{stage}: {exc}")
        if isinstance(exc, ssl.SSLError) and stage in (CONNECT, STARTTLS):
            return self.error(
                Outcome.TRANSIENT, f"TLS handshake failed: {exc.reason or exc.strerror or exc}"
            )
        if isinstance(exc, socket.gaierror):
            return self.error(Outcome.TRANSIENT, f"cannot resolve host: {exc.strerror or exc}")
        if isinstance(exc, ConnectionRefusedError):
            return self.error(Outcome.TRANSIENT, "connection refused")
        if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
            where = "greeting" if stage == CONNECT else stage
            if stage == CONNECT and isinstance(exc, TimeoutError):  # TCP or TLS set-up
                what = f"no connection within {self.timeout:g} s"
            elif _timed_out(exc):
                what = f"no answer within {self.timeout:g} s ({where})"
            elif isinstance(exc, smtplib.SMTPServerDisconnected):
                what = f"connection closed by the server ({where})"
            else:
                what = f"connection failed ({where}): {exc.strerror or exc}"
            if stage == END:
                return self.error(
                    Outcome.AMBIGUOUS,
                    f"{what} after the message data was sent (it may have been accepted)",
                )
            return self.error(Outcome.TRANSIENT, what)
        if isinstance(exc, smtplib.SMTPException):  # e.g. no AUTH mechanism in common
            return self.error(Outcome.PROVIDER, f"{stage}: {exc}")
        raise exc

    def finish(self, *, polite: bool) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            left = self.deadline - time.monotonic()
            if polite and smtp.sock is not None and left > 0.05:
                smtp.sock.settimeout(min(_QUIT_TIMEOUT, left))
                smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass  # the server's answer to QUIT changes nothing
        finally:
            smtp.close()

    # --- the session -------------------------------------------------------------------

    def open(self) -> None:
        """Connect, EHLO, STARTTLS + EHLO, AUTH."""
        p = self.p
        self.stage = CONNECT
        ctx = p.tls_context() if p.security != "none" else None
        client: _BoundedSMTP | _BoundedSMTPSSL
        if ctx is not None and p.security == "tls":
            client = _BoundedSMTPSSL(local_hostname=p.helo, timeout=self.remaining(), context=ctx)
        else:
            client = _BoundedSMTP(local_hostname=p.helo, timeout=self.remaining())
        client.session = self
        client._host = p.host  # as SMTP(host) sets it: the TLS server name
        self.smtp = client
        code, msg = client.connect(p.host, p.port)
        if code != 220:
            raise self.reply_error(code, msg)
        if ctx is not None and p.security == "tls":
            self.notes.append(f"TLS {self._tls_version()}".rstrip())
        if self.smtp.sock is not None:
            # DATA goes out in several writes; without this, Nagle's algorithm holds the last
            # one until the server's delayed ACK (about 40 ms on every message)
            with contextlib.suppress(OSError):
                self.smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ehlo()
        if ctx is not None and p.security == "starttls":
            smtp = self.at(STARTTLS)
            if not smtp.has_extn("starttls"):
                raise self.error(
                    Outcome.PROVIDER,
                    "the server does not offer STARTTLS (security = starttls); refusing to "
                    "go on in the clear (security = tls for port 465, none to allow it)",
                )
            smtp.starttls(context=ctx)
            self.notes.append(f"STARTTLS {self._tls_version()}".rstrip())
            self.ehlo()
        elif p.security == "none":
            self.notes.append("no TLS")
        if p.username:
            smtp = self.at(AUTH)
            if not smtp.has_extn("auth"):
                raise self.error(
                    Outcome.PROVIDER, "the server does not offer AUTH, but a username is set"
                )
            smtp.login(p.username, p.password())
            self.notes.append("AUTH ok")
        size = self._size_limit()
        if size:
            self.notes.append(f"SIZE {size}")

    def ehlo(self) -> None:
        smtp = self.at(EHLO)
        code, msg = smtp.ehlo()
        if code != 250:
            if code in (500, 502) and self.p.security == "none" and not self.p.username:
                # EHLO not recognised (RFC 5321 §4.1.4): HELO does for a plain, anonymous relay
                code, msg = smtp.helo()
                if code == 250:
                    self.server_name = _reply_text(msg).partition(" ")[0]
                    return
            raise self.reply_error(code, msg)
        self.server_name = _reply_text(msg).partition(" ")[0]

    def _tls_version(self) -> str:
        sock = self.smtp.sock if self.smtp is not None else None
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        return version or ""

    def _size_limit(self) -> int | None:
        assert self.smtp is not None
        value = self.smtp.esmtp_features.get("size", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    def summary(self) -> str:
        """E.g. "ESMTP smtp.example.com; STARTTLS TLSv1.3; AUTH ok; SIZE 35882577"."""
        assert self.smtp is not None
        kind = "ESMTP" if self.smtp.does_esmtp else "SMTP"
        return "; ".join([f"{kind} {self.server_name}".rstrip(), *self.notes])

    def noop(self) -> None:
        code, msg = self.at(NOOP).noop()
        if code != 250:
            raise self.reply_error(code, msg)

    def deliver(self, message: Message) -> Receipt:
        """MAIL FROM, RCPT TO each recipient, DATA in steps; the 250 after the dot."""
        smtp = self.at(MAIL)
        recipients = [a.email for a in message.recipients()]
        addresses = [
            message.sender,
            message.return_path,
            *message.to,
            *message.cc,
            *message.bcc,
            *message.reply_to,
        ]
        options: list[str] = []
        if all(a.email.isascii() and a.name.isascii() for a in addresses):
            policy = email.policy.SMTP
        elif smtp.has_extn("smtputf8"):  # RFC 6531: UTF-8 addresses and headers
            options.append("SMTPUTF8")
            policy = email.policy.SMTPUTF8
        else:
            raise self.error(
                Outcome.REJECTED,
                "the message has a non-ASCII address and the server does not offer SMTPUTF8",
            )
        if message.raw is not None:  # given whole: any line ends, stuffed in one go
            whole = dot_stuff(message.raw)
            chunks: Iterable[bytes] = (whole,)
            length, eight_bit = len(whole), not whole.isascii()
        else:  # built: CRLF lines in line-aligned chunks, attachments encoded on the way
            stream = message.byte_stream(policy)
            chunks = _dot_stuffed(stream)
            length, eight_bit = stream.size, stream.eight_bit
        tags = tag_header_lines(message)  # header lines never start with "."
        if tags:
            chunks = itertools.chain((tags,), chunks)
            length += len(tags)
        size = self._size_limit()
        if size is not None and length > size:
            raise self.error(
                Outcome.REJECTED,
                f"the message is {length} bytes, the server takes at most {size} (SIZE)",
            )
        if smtp.has_extn("size"):
            options.append(f"SIZE={length}")
        if eight_bit and smtp.has_extn("8bitmime"):  # RFC 6152
            options.append("BODY=8BITMIME")

        try:
            code, msg = smtp.mail(message.return_path.email, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if self.reused and not _timed_out(exc):  # closed while idle (timeout, restart)
                raise _Stale from exc
            raise
        if code == 421 and self.reused:  # "closing transmission channel", e.g. idle too long
            raise _Stale
        if code != 250:
            raise self.reply_error(code, msg)

        refused: list[tuple[str, int, str]] = []
        for rcpt in recipients:
            code, msg = self.at(RCPT).rcpt(rcpt)
            if code not in (250, 251):  # 251: user not local, will forward
                refused.append((rcpt, code, _reply_text(msg)))
        if len(refused) == len(recipients):
            raise self._all_refused(refused)

        code, msg = self.at(DATA).docmd("DATA")
        if code != 354:
            raise self.reply_error(code, msg)
        sock = self.at(BODY).sock
        assert sock is not None
        for chunk in chunks:
            sock.settimeout(self.remaining())  # the session's deadline, not one per chunk
            sock.sendall(chunk)
        sock.sendall(b".\r\n")
        code, msg = self.at(END).getreply()
        if code != 250:
            raise self.reply_error(code, msg)

        detail = _reply_text(msg)
        if refused:
            named = ", ".join(f"{rcpt} ({code} {text})" for rcpt, code, text in refused)
            detail = f"{detail}; refused: {named}"
        return Receipt(self.p.name, message.message_id, detail=scrub(detail))

    def _all_refused(self, refused: list[tuple[str, int, str]]) -> ProviderError:
        """Every recipient was refused: the class of those refusals, worst for sending first."""
        classes = [classify_reply(RCPT, code, text) for _, code, text in refused]
        for outcome in (Outcome.PROVIDER, Outcome.TRANSIENT, Outcome.REJECTED, Outcome.PERMANENT):
            if outcome in classes:
                break
        status = refused[classes.index(outcome)][1]
        if len(refused) == 1:
            rcpt, code, text = refused[0]
            return self.error(outcome, f"{code} {text} (reply to RCPT TO <{rcpt}>)", status=code)
        named = "; ".join(f"{rcpt}: {code} {text}" for rcpt, code, text in refused)
        return self.error(outcome, f"every recipient was refused: {named}", status=status)

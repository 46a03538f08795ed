"""One SMTP session through smtplib: connect, EHLO, STARTTLS or implicit TLS, AUTH, then MAIL
FROM, RCPT TO, DATA and the reply after the final dot, all under one deadline.

Every attempt tracks the stage it is in, so each failure gets exactly one class
(docs/architecture.md): replies through reply.py, lost connections and timeouts here.
Facts: RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 1870 (SIZE), RFC 6152
(8BITMIME), RFC 6531 (SMTPUTF8), RFC 8314 (implicit TLS on 465), all at
https://www.rfc-editor.org/.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from mailrelay.providers.base import Outcome, ProviderError, Receipt
from mailrelay.providers.deadline import MAX_ANSWER, deadline_file
from mailrelay.providers.smtp.data import Unfit, message_data
from mailrelay.providers.smtp.reply import (
    AUTH,
    BODY,
    CONNECT,
    DATA,
    EHLO,
    END,
    MAIL,
    NOOP,
    RCPT,
    STARTTLS,
    classify_reply,
    reply_text,
    verdict,
)
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.message import Message

QUIT_TIMEOUT = 2.0


class Endpoint(Protocol):
    """What a session reads of its provider (SmtpProvider is one)."""

    name: str
    host: str
    port: int
    security: str
    username: str | None
    helo: str | None

    @property
    def label(self) -> str: ...

    def tls_context(self) -> ssl.SSLContext: ...

    def password(self) -> str: ...


def _timed_out(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, TimeoutError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class _BoundedReplies:
    """smtplib's reply reading under the session's deadline: each reply ends by it, and is
    at most MAX_ANSWER bytes, however many continuation lines ("220-...") a server sends."""

    session: Session
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


class Stale(Exception):
    """A kept session turned out closed by the server before MAIL FROM: reconnect."""


class Session:
    """One SMTP session under one deadline; turns every failure into one ProviderError."""

    def __init__(self, provider: Endpoint, timeout: float) -> None:
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

    def __enter__(self) -> Session:
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
        if isinstance(exc, Stale):
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
        found = verdict(stage or self.stage, code, msg)
        return self.error(found.outcome, found.detail, status=code)

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
                smtp.sock.settimeout(min(QUIT_TIMEOUT, left))
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
                    self.server_name = reply_text(msg).partition(" ")[0]
                    return
            raise self.reply_error(code, msg)
        self.server_name = reply_text(msg).partition(" ")[0]

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
        try:
            chunks, options = message_data(message, smtp.has_extn, self._size_limit())
        except Unfit as exc:
            raise self.error(Outcome.REJECTED, str(exc)) from None

        try:
            code, msg = smtp.mail(message.return_path.email, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if self.reused and not _timed_out(exc):  # closed while idle (timeout, restart)
                raise Stale from exc
            raise
        if code == 421 and self.reused:  # "closing transmission channel", e.g. idle too long
            raise Stale
        if code != 250:
            raise self.reply_error(code, msg)

        refused: list[tuple[str, int, str]] = []
        for rcpt in recipients:
            code, msg = self.at(RCPT).rcpt(rcpt)
            if code not in (250, 251):  # 251: user not local, will forward
                refused.append((rcpt, code, reply_text(msg)))
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

        detail = reply_text(msg)
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

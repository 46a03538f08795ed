"""Loopback SMTP servers for tests: no fixtures needed, import and use as context managers.

`SmtpServer` is a real aiosmtpd server on 127.0.0.1 (a free port picked by the OS) with
optional TLS (STARTTLS or implicit, certificates from a trustme CA), AUTH and failures
injected at any stage::

    from tests.smtpserver import SmtpServer, closing_server, silent_server

    with SmtpServer(tls="starttls", auth={"ops": "s3cret"}) as server:
        cfg = {"host": "127.0.0.1", "port": server.port, "ca_file": server.ca_file,
               "username": "ops", "password": "s3cret"}
        ...  # send through mailrelay
        (mail_from, rcpt_tos, data), = server.messages

    with SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as server: ...
    with SmtpServer(hang_after_data=True) as server: ...  # takes the data, never answers
    with silent_server() as server: ...   # accepts TCP, never says a word
    with closing_server() as server: ...  # accepts TCP and hangs up at once

Failure stages for `fail` (the value is a full reply such as "451 4.3.0 try later", or
"hang" to never answer, or "close" to drop the connection instead of answering):
"connect" (the greeting), "ehlo", "helo", "starttls", "auth", "mail", "rcpt" (every
recipient), "rcpt:<address>" (one recipient), "data_cmd" (the DATA command itself), "data"
(the reply after the final dot), "noop".

Every server counts the TCP connections it accepted in `connections` (thread-safe) and
shuts down cleanly on exit, leaving no thread behind.

A test that needs a plain server (no TLS, no AUTH, no failure) shares the session's one:

    with shared_server() as server: ...   # emptied for this test; not stopped at the end
    def test_x(smtp_server: SmtpServer): ...   # the same, as a fixture (tests/conftest.py)

A test that makes it fail, hang or ask for AUTH may set `fail`, `auth` or `data_delay` on it:
the next test gets the defaults back. A test that needs TLS, no SMTPUTF8, another SIZE,
several servers, or a port that goes dead when the server stops starts its own.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "FAIL_STAGES",
    "RawServer",
    "ReceivedMessage",
    "SmtpServer",
    "closing_server",
    "shared_server",
    "silent_server",
    "smtp_server",
    "stop_shared_server",
]

HOST = "127.0.0.1"
SERVER_NAME = "mx.mailrelay.test"  # what the server calls itself in the greeting and EHLO
FAIL_STAGES = (
    "connect",
    "ehlo",
    "helo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data_cmd",
    "data",
    "noop",
)
_FOREVER = 3600.0  # a "hang" lasts until the client goes away or the server stops

_ca_lock = threading.Lock()
_ca: trustme.CA | None = None


def shared_ca() -> trustme.CA:
    """One trustme CA per test process (key generation is the slow part)."""
    global _ca
    with _ca_lock:
        if _ca is None:
            _ca = trustme.CA()
        return _ca


class ReceivedMessage(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, after the server undid the dot-stuffing


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self) -> None:
        with self._lock:
            self._value += 1

    def reset(self) -> None:
        with self._lock:
            self._value = 0

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


class SmtpServer:
    """A real aiosmtpd server on 127.0.0.1 with TLS, AUTH and failure injection.

    tls: "none" (no STARTTLS offered), "starttls" (offered and required before MAIL),
        "implicit" (TLS from the first byte, like port 465).
    auth: user -> password; when given, AUTH PLAIN/LOGIN is offered (over TLS unless
        tls="none") and MAIL without AUTH gets "530 5.7.0 Authentication required".
        When not given, AUTH is not offered at all.
    fail: stage -> reply (see the module docstring).
    hang_after_data: take the message data, then never answer (the same as
        fail={"data": "hang"}).
    cert_hosts: the names the server certificate is issued for.
    smtputf8: offer SMTPUTF8. size_limit: the SIZE offered (and enforced); None for none.
    data_delay: seconds to wait before answering the message data (a slow relay).
    """

    def __init__(
        self,
        *,
        tls: Literal["none", "starttls", "implicit"] = "none",
        auth: Mapping[str, str] | None = None,
        fail: Mapping[str, str] | None = None,
        hang_after_data: bool = False,
        cert_hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
        smtputf8: bool = True,
        size_limit: int | None = 33554432,
        data_delay: float = 0.0,
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be none, starttls or implicit, not {tls!r}")
        self.fail = dict(fail or {})
        for key in self.fail:
            if key.partition(":")[0] not in FAIL_STAGES:
                raise ValueError(f"unknown failure stage {key!r}; known: {FAIL_STAGES}")
        if hang_after_data:
            self.fail["data"] = "hang"
        self.tls = tls
        self.auth = dict(auth) if auth is not None else None
        self.cert_hosts = tuple(cert_hosts)
        self.smtputf8 = smtputf8
        self.size_limit = size_limit
        self.data_delay = data_delay  # seconds before the reply to the data (a slow relay)
        self.host = HOST
        self.port = 0
        self.ca_file = ""  # the CA's PEM, for the client's ca_file (when tls is not "none")
        self.messages: list[ReceivedMessage] = []
        self.mail_options: list[list[str]] = []  # MAIL FROM parameters, one list per message
        self.mail_commands = 0  # MAIL FROM commands seen (a health check must send none)
        self.logins: list[str] = []  # users that authenticated
        self._connections = _Counter()
        self._lock = threading.Lock()
        self._queue_id = 0
        self._tmpdir: str | None = None
        self._controller: _Controller | None = None

    @property
    def connections(self) -> int:
        """TCP connections accepted since the server started."""
        return self._connections.value

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        ssl_context = tls_context = None
        if self.tls != "none":
            self._tmpdir = tempfile.mkdtemp(prefix="mailrelay-smtpserver-")
            ca = shared_ca()
            ca_path = Path(self._tmpdir) / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_path))
            self.ca_file = str(ca_path)
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(*self.cert_hosts).configure_cert(server_ctx)
            if self.tls == "implicit":
                ssl_context = server_ctx
            else:
                tls_context = server_ctx
        kwargs: dict[str, Any] = {
            "hostname": HOST,
            "port": self.port,  # 0 at first; a restart keeps the port
            "server_hostname": SERVER_NAME,
            "ssl_context": ssl_context,
            "tls_context": tls_context,
            "require_starttls": self.tls == "starttls",
            "enable_SMTPUTF8": self.smtputf8,
            "data_size_limit": self.size_limit,
            # AUTH is checked at MAIL by the handler, so aiosmtpd's own auth_required
            # (which warns when TLS is not required) stays off.
            "auth_required": False,
            "auth_require_tls": self.tls != "none",
            "authenticator": self._authenticate,
        }
        self._controller = _Controller(self, _Handler(self), **kwargs)
        self._controller.start()
        self.port = self._controller.port
        self._connections.reset()  # forget the controller's own start-up probe

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        try:
            if controller is not None:
                controller.stop()
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    def reset(self) -> None:
        """Forget what arrived and any failure or AUTH a test set: as if just started (for
        the shared server; what the controller was started with, TLS and SMTPUTF8 and SIZE,
        stays)."""
        with self._lock:
            self.fail = {}
            self.auth = None
            self.data_delay = 0.0
            self.messages.clear()
            self.mail_options.clear()
            self.mail_commands = 0
            self.logins.clear()
            self._queue_id = 0  # "queued as Q00001" again, as a new server says
        self._connections.reset()

    # --- what the handler calls --------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is not None and isinstance(data, LoginPassword):
            user = data.login.decode("utf-8", "replace")
            if self.auth.get(user) == data.password.decode("utf-8", "replace"):
                with self._lock:
                    self.logins.append(user)
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)  # "535 5.7.8 ..." from aiosmtpd

    def _record(self, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            self.messages.append(
                ReceivedMessage(envelope.mail_from or "", list(envelope.rcpt_tos), content)
            )
            self.mail_options.append(list(envelope.mail_options))
            self._queue_id += 1
            return f"250 2.0.0 Ok: queued as Q{self._queue_id:05d}"

    def _failure(self, stage: str) -> str | None:
        return self.fail.get(stage)


async def _act(server: SMTP, reply: str) -> str:
    """Answer with `reply`, or never answer ("hang"), or drop the connection ("close")."""
    if reply == "close":
        if server.transport is not None:
            server.transport.close()
        await asyncio.sleep(_FOREVER)  # cancelled when the connection is gone
    elif reply == "hang":
        await asyncio.sleep(_FOREVER)  # cancelled when the client gives up or at stop()
    return reply


class _Handler:
    """aiosmtpd handler hooks: record what arrives, or answer with an injected failure."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        reply = self.owner._failure("ehlo")
        if reply:
            return [await _act(server, reply)]
        session.host_name = hostname
        if self.owner.auth is None:  # no AUTH offered at all
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        reply = self.owner._failure("helo")
        if reply:
            return await _act(server, reply)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        reply = self.owner._failure("auth")
        if reply:
            return await _act(server, reply)
        return MISSING  # aiosmtpd's own PLAIN/LOGIN, checked by SmtpServer._authenticate

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self.owner._lock:
            self.owner.mail_commands += 1
        if self.owner.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self.owner._failure("mail")
        if reply:
            return await _act(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.owner._failure(f"rcpt:{address.lower()}") or self.owner._failure("rcpt")
        if reply:
            return await _act(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.owner._failure("data")
        if reply:
            return await _act(server, reply)
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        return self.owner._record(envelope)

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        reply = self.owner._failure("noop")
        if reply:
            return await _act(server, reply)
        return "250 OK"


class _SMTP(SMTP):
    """aiosmtpd's SMTP with failures at the greeting, STARTTLS and the DATA command."""

    def __init__(self, owner: SmtpServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner
        self._greeted = False

    async def push(self, status: Any) -> None:
        text = status.decode() if isinstance(status, bytes) else str(status)
        if not self._greeted and text.startswith("220 "):
            self._greeted = True
            reply = self._owner._failure("connect")
            if reply:
                status = await _act(self, reply)
        await super().push(status)

    async def smtp_STARTTLS(self, arg: str) -> None:
        reply = self._owner._failure("starttls")
        if reply and self.tls_context is not None:
            await self.push(await _act(self, reply))
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        reply = self._owner._failure("data_cmd")
        if reply and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(await _act(self, reply))
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    """Counts connections, and binds port 0 so the OS picks a free port (no races)."""

    def __init__(self, owner: SmtpServer, handler: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        self._owner._connections.add()
        return _SMTP(self._owner, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        create = super()._create_server()

        async def bound() -> asyncio.AbstractServer:
            server = await create
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]  # before the start-up probe
            return server

        return bound()


class RawServer:
    """A TCP server on 127.0.0.1 that either never speaks ("silent") or hangs up at once
    ("closing"). Exposes `host`, `port` and `connections`."""

    def __init__(self, mode: Literal["silent", "closing"]) -> None:
        if mode not in ("silent", "closing"):
            raise ValueError(f"mode must be silent or closing, not {mode!r}")
        self.mode = mode
        self.host = HOST
        self.port = 0
        self._connections = _Counter()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def connections(self) -> int:
        return self._connections.value

    def __enter__(self) -> RawServer:
        self._sock = socket.create_server((HOST, 0))
        self._sock.settimeout(0.05)  # so the accept loop notices stop() quickly
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"{self.mode}-server")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for conn in self._held:
            conn.close()
        self._held.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.add()
            if self.mode == "closing":
                conn.close()
            else:
                self._held.append(conn)


def silent_server() -> RawServer:
    """Accepts TCP connections and never says anything (for timeout tests)."""
    return RawServer("silent")


def closing_server() -> RawServer:
    """Accepts TCP connections and closes each one at once."""
    return RawServer("closing")


# --- the session's shared plain server -------------------------------------------------------

_shared: SmtpServer | None = None
_shared_lock = threading.Lock()


@contextmanager
def shared_server() -> Iterator[SmtpServer]:
    """The process's one plain server (started at first use), emptied for the caller."""
    global _shared
    with _shared_lock:
        if _shared is None:
            server = SmtpServer()
            server.start()
            _shared = server
        server = _shared
    server.reset()
    yield server


def stop_shared_server() -> None:
    """Stop the shared server, if one was started (at the end of the test session)."""
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """The session's shared plain server, emptied for this test."""
    with shared_server() as server:
        yield server

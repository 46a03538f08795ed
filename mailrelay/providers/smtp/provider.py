"""The `smtp` provider: its configuration (keys and smtp:// / smtps:// URLs), TLS context and
password, and the Provider contract over sessions (one per message, or kept per thread for
batches). The dialogue itself is in session.py.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
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
)
from mailrelay.providers.smtp.session import QUIT_TIMEOUT, Session, Stale
from mailrelay.secrets import remember_auth

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

SECURITIES = ("starttls", "tls", "none")
# submission (RFC 6409) / submissions (RFC 8314) / plain relay (RFC 5321)
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


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
        self._open: set[Session] = set()
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
            raise ProviderError(  # and this host only: other hosts may well have the secret
                Outcome.PROVIDER, f"{self.label}: cannot get the password: {exc}", local=True
            ) from None

    # --- the contract ------------------------------------------------------------------

    def hold_connections(self) -> None:
        self.reuse_connections = True

    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        timeout = min(self.timeout, timeout)
        if not self.reuse_connections:
            with Session(self, timeout) as session:
                session.open()
                return session.deliver(message)
        started = time.monotonic()
        idle: Session | None = getattr(self._local, "session", None)
        self._local.session = None
        if idle is not None:
            idle.restart(timeout)
            try:
                return self._deliver_kept(idle, message, fresh=False)
            except Stale:
                pass  # the server closed it while idle: connect once more, not a failure
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        return self._deliver_kept(Session(self, timeout), message, fresh=True)

    def _deliver_kept(self, session: Session, message: Message, *, fresh: bool) -> Receipt:
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
            session.restart(QUIT_TIMEOUT)
            session.finish(polite=True)
        self._local = threading.local()

    def check(self, *, timeout: float) -> Health:
        try:
            with Session(self, min(self.timeout, timeout)) as session:
                session.open()
                session.noop()
                return Health(True, session.summary())
        except ProviderError as exc:
            return Health(False, exc.message, exc.outcome)

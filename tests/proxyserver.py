"""A small forward proxy on loopback, for the tests of proxies from the environment.

It speaks the two forms a client uses (RFC 9110 §9.3.6, RFC 9112 §3.2.2): CONNECT
host:port, answered with 200 and then a byte tunnel to the target (for https:// targets, TLS
end to end), and a request whose target is an absolute URI, forwarded to that host in origin
form (for http:// targets), one request per connection. It records every request line and
Proxy-Authorization it got, and can require credentials (407 otherwise) or refuse everything
with a status of its own (`refuse = 502`, say).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urlsplit

_REASONS = {407: "Proxy Authentication Required", 502: "Bad Gateway", 403: "Forbidden"}


@dataclass
class ProxyServer:
    credentials: tuple[str, str] | None = None
    """(user, password) the proxy requires in Proxy-Authorization; None takes anyone."""
    refuse: int | None = None
    """Answer every request with this status instead of forwarding it."""
    echo: bool = False
    """Put the Proxy-Authorization it got in the reason phrase of a refusal (a hostile or
    careless proxy), to prove the client's error text never carries it."""
    request_lines: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    port: int = 0
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._keep(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def handle(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            line = rfile.readline().decode("latin-1").strip()
            if not line:
                return
            headers = _read_headers(rfile)
            self.request_lines.append(line)
            self.authorizations.append(headers.get("proxy-authorization"))
            method, target, _ = line.split(" ", 2)
            said = headers.get("proxy-authorization") if self.echo else None
            if self.refuse is not None:
                return _answer(conn, self.refuse, reason=f"refused {said}" if said else None)
            if self.credentials is not None and headers.get("proxy-authorization") != _basic(
                *self.credentials
            ):
                return _answer(conn, 407, 'Proxy-Authenticate: Basic realm="test"\r\n')
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self._keep(socket.create_connection((host, int(port)), timeout=10))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _relay(conn, upstream)
            else:
                self._forward(conn, rfile, method, target, headers)
        except OSError:
            return
        finally:
            rfile.close()
            conn.close()

    def _forward(
        self,
        conn: socket.socket,
        rfile: BinaryIO,
        method: str,
        target: str,
        headers: dict[str, str],
    ) -> None:
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname, f"not an absolute http URI: {target}"
        body = rfile.read(int(headers.get("content-length", "0")))
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"{method} {path} HTTP/1.1"]
        for name, value in headers.items():
            if not name.startswith("proxy-") and name != "connection":
                lines.append(f"{name}: {value}")
        lines.append("connection: close")
        upstream = self._keep(socket.create_connection((url.hostname, url.port or 80), timeout=10))
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        while data := upstream.recv(65536):  # the origin closes after its answer
            conn.sendall(data)
        upstream.close()


def _read_headers(rfile: BinaryIO) -> dict[str, str]:
    headers: dict[str, str] = {}
    while (raw := rfile.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _answer(conn: socket.socket, status: int, extra: str = "", reason: str | None = None) -> None:
    reason = reason or _REASONS.get(status, "Refused")
    head = f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n"
    conn.sendall(head.encode() + b"\r\n")


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Bytes both ways until each side has closed its half."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pipe, args=(b, a), daemon=True)
    back.start()
    pipe(a, b)
    back.join(timeout=30)
    b.close()


@contextlib.contextmanager
def proxy_server(**options: object) -> Iterator[ProxyServer]:
    proxy = ProxyServer(**options)  # type: ignore[arg-type]
    listener = socket.create_server(("127.0.0.1", 0))
    proxy.port = listener.getsockname()[1]
    threading.Thread(target=proxy.serve, args=(listener,), daemon=True).start()
    try:
        yield proxy
    finally:
        listener.close()
        proxy.close()

"""A small HTTP/1.1 client on the standard library, for the providers' API calls.

Why not requests: importing it (urllib3, idna, charset_normalizer...) costs about 100 ms,
more than a whole send to a fast API takes, and mailrelay runs thousands of times a day from
cron. This client does what the adapters need and no more: one request,
the whole body read, keep-alive connections pooled per host (batches and queue flushes reuse
them), separate connect and read timeouts, and failures reported as two kinds — the request
surely never reached the server (`ConnectFailure`), or it may have (`SendFailure`), which is
what the engine's outcome classes turn on.

Proxies come from the environment (httpproxy.py); request bodies are encoded by httpbody.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from functools import partial
from http.client import HTTPConnection, HTTPException, HTTPMessage, HTTPResponse, HTTPSConnection
from typing import Any
from urllib.parse import urlencode, urlsplit

from mailrelay.providers.deadline import MAX_ANSWER, deadline_file
from mailrelay.providers.httpbody import encode_body
from mailrelay.providers.httpproxy import Proxy, proxy_for

_MAX_IDLE_PER_HOST = 64


class TransportError(Exception):
    """Base of the two ways a request can fail below HTTP."""


class ConnectFailure(TransportError):
    """No connection (refused, DNS, connect timeout, TLS handshake): nothing was sent."""

    def __init__(
        self,
        message: str,
        *,
        timeout: bool = False,
        tls: bool = False,
        proxy_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.tls = tls
        self.proxy_status = proxy_status
        """The status with which a proxy refused to forward the request (CONNECT or
        absolute URI), when it did: the provider never saw the request."""


class SendFailure(TransportError):
    """The connection broke or went silent after the request started: it may have arrived."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Response:
    """What the adapters read of a reply: status, reason, headers, body."""

    def __init__(self, status_code: int, reason: str, headers: Any, content: bytes) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers  # an HTTPMessage: case-insensitive `.get`
        self.content = content

    @property
    def text(self) -> str:
        charset = "utf-8"
        ctype = self.headers.get("Content-Type") or ""
        for param in ctype.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


_tls_context: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """Verify as requests does: $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE, else certifi's bundle
    when installed, else the system's store."""
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not cafile:
                try:
                    import certifi

                    cafile = certifi.where()
                except ImportError:
                    cafile = None
            _tls_context = ssl.create_default_context(cafile=cafile)
        return _tls_context


class Pool:
    """Idle keep-alive connections per (scheme, host, port), shared by threads."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int, str], list[HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _take(self, key: tuple[str, str, int, str]) -> HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _dropped(conn.sock):
                    return conn
                conn.close()  # the server closed it while it sat idle
        return None

    def _give_back(self, key: tuple[str, str, int, str], conn: HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        connect_timeout: float,
        read_timeout: float,
    ) -> Response:
        """One request; `read_timeout` bounds the whole attempt (connect, TLS, request and
        reply), `connect_timeout` the connection alone. At most MAX_ANSWER bytes of the
        body are read: an error text or a message id never needs more."""
        deadline = time.monotonic() + read_timeout
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailure(f"not an http(s) URL: {url}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        query = parts.query
        if params:
            query = (query + "&" if query else "") + urlencode(params)
        if query:
            target += "?" + query

        send_headers = {"User-Agent": self.user_agent, "Accept": "*/*"}
        body, content_type = encode_body(json_body, data, files)
        if content_type is not None:
            send_headers["Content-Type"] = content_type
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            send_headers["Authorization"] = f"Basic {token}"
        for name, value in (headers or {}).items():
            # the adapter's own headers win, whatever their case
            for existing in [k for k in send_headers if k.lower() == name.lower()]:
                del send_headers[existing]
            send_headers[name] = value
        if body is not None or method in ("POST", "PUT", "PATCH"):
            send_headers["Content-Length"] = str(len(body or b""))

        proxy = proxy_for(scheme, parts.hostname, port)
        if proxy is not None and scheme == "http":
            target = f"http://{parts.netloc.rpartition('@')[2]}{target}"  # absolute URI
            if proxy.authorization:
                send_headers["Proxy-Authorization"] = proxy.authorization
        key = (scheme, parts.hostname, port, proxy.label if proxy else "")
        conn = self._take(key) or self._connect(
            scheme, parts.hostname, port, min(connect_timeout, read_timeout), proxy
        )
        resp, content, whole = _exchange(conn, method, target, send_headers, body, deadline)
        if proxy is not None and scheme == "http" and resp.status == 407:
            conn.close()  # the proxy kept the request: it never went on to the provider
            raise ConnectFailure(
                f"proxy {proxy.label} refused the request: 407 {resp.reason}", proxy_status=407
            )
        if resp.will_close or not whole:  # the rest of a long body is left unread
            conn.close()
        else:
            self._give_back(key, conn)
        headers_obj: HTTPMessage = resp.headers
        return Response(resp.status, resp.reason, headers_obj, content)

    def _connect(
        self, scheme: str, host: str, port: int, timeout: float, proxy: Proxy | None = None
    ) -> HTTPConnection:
        conn: HTTPConnection
        where = (host, port) if proxy is None else (proxy.host, proxy.port)
        if scheme == "https":
            conn = HTTPSConnection(*where, timeout=timeout, context=tls_context())
            if proxy is not None:
                tunnel_headers = {}
                if proxy.authorization:
                    tunnel_headers["Proxy-Authorization"] = proxy.authorization
                conn.set_tunnel(host, port, headers=tunnel_headers)
        else:
            conn = HTTPConnection(*where, timeout=timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise ConnectFailure(f"TLS failed: {_reason(exc)}", tls=True) from None
        except ssl.CertificateError as exc:
            conn.close()
            raise ConnectFailure(f"TLS failed: {_reason(exc)}", tls=True) from None
        except TimeoutError:
            conn.close()
            raise ConnectFailure("no connection in time", timeout=True) from None
        except OSError as exc:
            conn.close()
            if proxy is None:
                raise ConnectFailure(_reason(exc)) from None
            refused = _TUNNEL_REFUSED.match(str(exc))
            if refused:  # the proxy answered the CONNECT with an error: nothing was sent
                raise ConnectFailure(
                    f"proxy {proxy.label} refused the tunnel: {refused[1]} {refused[2]}"[:200],
                    proxy_status=int(refused[1]),
                ) from None
            raise ConnectFailure(f"proxy {proxy.label}: {_reason(exc)}") from None
        except HTTPException as exc:  # a proxy that does not speak HTTP to the CONNECT
            conn.close()
            raise ConnectFailure(f"proxy {where[0]}:{where[1]}: {_reason(exc)}") from None
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


# http.client's words when a proxy answers CONNECT with anything but 200
def _exchange(
    conn: HTTPConnection,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
) -> tuple[HTTPResponse, bytes, bool]:
    """Send the request on `conn` and read the reply by `deadline`: the response, at most
    MAX_ANSWER bytes of its body, and whether that is the whole body (the connection is
    closed on a failure, which is a SendFailure: the request may have arrived)."""
    try:
        if conn.sock is not None:  # sendall's timeout bounds the whole upload
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)  # headers and body leave in one write where they fit
        conn.response_class = partial(_BoundedResponse, deadline=deadline)  # type: ignore[assignment]
        resp = conn.getresponse()
        content = resp.read(MAX_ANSWER + 1)
    except TimeoutError:
        conn.close()
        raise SendFailure("no answer in time", timeout=True) from None
    except (OSError, HTTPException) as exc:
        conn.close()
        raise SendFailure(_reason(exc)) from None
    whole = len(content) <= MAX_ANSWER and resp.isclosed()
    return resp, content[:MAX_ANSWER], whole


_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3}) ?(.*)")


class _BoundedResponse(HTTPResponse):
    """An HTTP response read under the attempt's deadline (see DeadlineReader)."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = deadline_file(sock, lambda: deadline, holds=self.fp)


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or spoke out of turn)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"name lookup failed: {exc.strerror or exc}"
    strerror = getattr(exc, "strerror", None)
    if isinstance(exc, ssl.SSLError):
        return str(getattr(exc, "reason", None) or exc)[:200]
    if strerror:
        return str(strerror)
    text = str(exc) or type(exc).__name__
    return text[:200]

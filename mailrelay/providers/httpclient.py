"""A small HTTP/1.1 client on the standard library, for the providers' API calls.

Why not requests: importing it (urllib3, idna, charset_normalizer...) costs about 100 ms,
more than a whole send to a fast API takes, and mailrelay runs thousands of times a day from
cron. This client does what the adapters need and no more: one request,
the whole body read, keep-alive connections pooled per host (batches and queue flushes reuse
them), separate connect and read timeouts, and failures reported as two kinds — the request
surely never reached the server (`ConnectFailure`), or it may have (`SendFailure`), which is
what the engine's outcome classes turn on.

Proxies come from the environment as requests and urllib read them
(`urllib.request.getproxies()`: `https_proxy`, `http_proxy`, `all_proxy`, the lowercase name
winning over the uppercase one; `no_proxy` through `urllib.request.proxy_bypass()`, with `*`
for every host). An https:// target is reached through a CONNECT tunnel
(`HTTPSConnection.set_tunnel`, TLS end to end with the provider); an http:// target is asked
of the proxy with its absolute URL. `user:password` in the proxy URL becomes a
Proxy-Authorization header and never appears in an error.
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
import uuid
from collections.abc import Iterable, Mapping
from functools import partial
from http.client import HTTPConnection, HTTPException, HTTPMessage, HTTPResponse, HTTPSConnection
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from mailrelay.errors import ConfigError
from mailrelay.providers.deadline import MAX_ANSWER, deadline_file

PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")
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


def proxy_in_environment() -> bool:
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in PROXY_VARIABLES)


class Proxy:
    """A proxy from the environment: where it listens and its Proxy-Authorization."""

    def __init__(self, host: str, port: int, authorization: str | None) -> None:
        self.host = host
        self.port = port
        self.authorization = authorization

    @property
    def label(self) -> str:
        """host:port, never the credentials."""
        return f"{self.host}:{self.port}"


def proxy_for(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy the environment names for this target, or None (none set, or no_proxy)."""
    if not proxy_in_environment():
        return None  # the common case costs no urllib.request import
    import urllib.request

    proxies = urllib.request.getproxies()
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    if urllib.request.proxy_bypass(host) or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None
    if "://" not in url:
        url = "http://" + url  # "proxy:3128", as curl and requests take it
    # a proxy this client cannot use is the environment's configuration, not an outage: it
    # fails over like an unset secret, outcome "provider" (exit 78 when nothing else took the
    # message, not 75 as if the servers were down); the URL is not shown (it may hold a
    # password)
    where = f"{scheme.upper()}_PROXY" if proxies.get(scheme) else "ALL_PROXY"
    parts = urlsplit(url)
    try:
        proxy_port = parts.port or 80
    except ValueError:
        raise ConfigError(f"{where} in the environment: the proxy URL has a bad port") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise ConfigError(
            f"{where} in the environment: only http:// proxies are supported "
            f"(got {parts.scheme}://{'' if parts.hostname else ' without a host'})"
        )
    authorization = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        from mailrelay.secrets import remember, remember_auth

        remember(password)
        remember_auth(user, password)  # a proxy's page that echoes the header
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(parts.hostname, proxy_port, authorization)


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


def encode_multipart(
    data: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
    files: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[bytes, str]:
    """A multipart/form-data body from requests-style `data` and `files`.

    A file value is (filename, content[, content type]); filename None makes a plain field.
    """
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []

    def part(name: str, value: Any, filename: str | None, ctype: str | None) -> None:
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        body = value if isinstance(value, bytes) else str(value).encode("utf-8")
        chunks.append(head.encode("utf-8") + b"\r\n" + body + b"\r\n")

    for name, value in _pairs(data):
        for one in value if isinstance(value, list) else [value]:
            part(name, one, None, None)
    for name, spec in _pairs(files):
        if isinstance(spec, tuple):
            filename, content = spec[0], spec[1]
            ctype = spec[2] if len(spec) > 2 else None
        else:
            filename, content, ctype = name, spec, None
        part(name, content, filename, ctype)
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _pairs(values: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return list(values.items())
    return list(values)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


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
        body: bytes | None = None
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            send_headers["Content-Type"] = "application/json"
        elif files is not None:
            body, ctype = encode_multipart(data, files)
            send_headers["Content-Type"] = ctype
        elif data is not None:
            if isinstance(data, (bytes, str)):
                body = data.encode("utf-8") if isinstance(data, str) else data
            else:
                body = urlencode(_pairs(data), doseq=True).encode("ascii")
                send_headers["Content-Type"] = "application/x-www-form-urlencoded"
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
        try:
            if conn.sock is not None:  # sendall's timeout bounds the whole upload
                conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
            for name, value in send_headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)  # headers and body leave in one write where they fit
            conn.response_class = partial(_BoundedResponse, deadline=deadline)  # type: ignore[assignment]
            resp = conn.getresponse()
            content = resp.read(MAX_ANSWER + 1)
            whole = len(content) <= MAX_ANSWER and resp.isclosed()
            content = content[:MAX_ANSWER]
        except TimeoutError:
            conn.close()
            raise SendFailure("no answer in time", timeout=True) from None
        except (OSError, HTTPException) as exc:
            conn.close()
            raise SendFailure(_reason(exc)) from None
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

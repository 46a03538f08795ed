"""The HTTP client under the HTTP providers (providers/httpclient.py), against raw loopback
servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from mailrelay.providers.httpbody import encode_multipart
from mailrelay.providers.httpclient import ConnectFailure, Pool, SendFailure
from mailrelay.providers.httpproxy import proxy_in_environment


@dataclass
class RawServer:
    """Answers every request with 200 and a small JSON body; counts connections and
    request lines. `close_after` closes each connection after that many requests;
    `silent` reads the request and never answers."""

    close_after: int | None = None
    silent: bool = False
    connections: int = 0
    request_lines: list[str] = field(default_factory=list)
    port: int = 0

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        served = 0
        try:
            while True:
                line = rfile.readline()
                if not line:
                    return
                self.request_lines.append(line.decode().strip())
                length = 0
                while (header := rfile.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                rfile.read(length)
                if self.silent:
                    threading.Event().wait(5)
                    return
                served += 1
                body = b'{"ok": true}'
                last = self.close_after is not None and served >= self.close_after
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"Connection: close\r\n" if last else b"")
                    + b"\r\n"
                    + body
                )
                if last:
                    return
        except OSError:
            return
        finally:
            rfile.close()
            conn.close()


@contextmanager
def raw_server(**options: object) -> Iterator[RawServer]:
    server = RawServer(**options)  # type: ignore[arg-type]
    listener = socket.create_server(("127.0.0.1", 0))
    server.port = listener.getsockname()[1]
    threading.Thread(target=server.serve, args=(listener,), daemon=True).start()
    try:
        yield server
    finally:
        listener.close()


def post(pool: Pool, port: int, **kw: object) -> int:
    resp = pool.request(
        "POST",
        f"http://127.0.0.1:{port}/email",
        json_body={"n": 1},
        connect_timeout=2,
        read_timeout=kw.pop("read_timeout", 2),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    assert resp.json() == {"ok": True}
    return resp.status_code


def test_keep_alive_connections_are_reused() -> None:
    pool = Pool("test")
    with raw_server() as server:
        for _ in range(20):
            assert post(pool, server.port) == 200
    assert server.connections == 1
    assert len(server.request_lines) == 20
    pool.close()


def test_a_connection_the_server_closed_is_replaced_without_a_failure() -> None:
    pool = Pool("test")
    with raw_server(close_after=3) as server:
        for _ in range(10):
            assert post(pool, server.port) == 200
    pool.close()
    assert server.connections == 4  # 3 + 3 + 3 + 1


def test_refused_is_a_connect_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectFailure):
        post(Pool("test"), port)


def test_silence_after_the_request_is_a_send_failure_with_timeout() -> None:
    with raw_server(silent=True) as server, pytest.raises(SendFailure) as info:
        post(Pool("test"), server.port, read_timeout=0.3)
    assert info.value.timeout


def test_basic_auth_params_and_headers() -> None:
    with raw_server() as server:
        pool = Pool("ua/1")
        resp = pool.request(
            "GET",
            f"http://127.0.0.1:{server.port}/v3/x",
            auth=("api", "key"),
            params={"a": "1 2"},
            connect_timeout=2,
            read_timeout=2,
        )
        pool.close()
    assert resp.status_code == 200
    assert server.request_lines == ["GET /v3/x?a=1+2 HTTP/1.1"]


def test_multipart_body_parses_back() -> None:
    from email.parser import BytesParser
    from email.policy import HTTP

    body, ctype = encode_multipart(
        None,
        [
            ("to", (None, "a@example.com")),
            ("attachment", ("r.pdf", b"%PDF\x00", "application/pdf")),
        ],
    )
    parsed = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    parts = list(parsed.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == [
        "to",
        "attachment",
    ]
    assert parts[0].get_content().strip() == "a@example.com"
    assert parts[1].get_filename() == "r.pdf"
    assert parts[1].get_payload(decode=True) == b"%PDF\x00"


def test_an_http_proxy_in_the_environment_gets_the_request_by_its_absolute_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With http_proxy set, the client sends to the proxy, naming the target by its absolute
    URI (RFC 9112 §3.2.2); tests/test_proxy.py goes through a real proxy."""
    from mailrelay.providers import httpapi
    from mailrelay.providers.httpapi import HttpRequest
    from mailrelay.providers.postmark import PostmarkProvider
    from mailrelay.secrets import Secret

    monkeypatch.setattr(httpapi, "_pool", None)  # a pool of its own, closed below
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not proxy_in_environment()
    with raw_server() as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        assert proxy_in_environment()
        provider = PostmarkProvider(
            "pm", credential=Secret("t"), base_url="http://mail.invalid:8080"
        )
        resp = provider.perform(HttpRequest("GET", "/server"), 2)
        httpapi.shared_pool().close()  # its keep-alive connection to the proxy
    assert resp.status_code == 200
    assert proxy.request_lines == ["GET http://mail.invalid:8080/server HTTP/1.1"]

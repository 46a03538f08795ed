"""Local servers for the benchmarks: a fast HTTP fake ESP, an SMTP sink, a silent port.

Everything listens on 127.0.0.1 only. The HTTP server writes each response in one `sendall`
with TCP_NODELAY set: a server that writes headers and body separately on a keep-alive
connection stalls about 40 ms per request (Nagle's algorithm against delayed ACKs), and the
benchmark would measure that stall instead of the client.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection

MAX_BODY = 64 * 1024 * 1024


class _Handler:
    """One keep-alive connection: read requests, answer each with one write."""

    def __init__(self, conn: socket.socket, counter: list[int], lock: threading.Lock) -> None:
        self.conn = conn
        self.rfile = conn.makefile("rb")
        self.counter = counter
        self.lock = lock

    def serve(self) -> None:
        try:
            while self.one():
                pass
        except (OSError, ValueError):
            pass
        finally:
            self.rfile.close()
            self.conn.close()

    def one(self) -> bool:
        line = self.rfile.readline(65537)
        if not line:
            return False
        method, path, version = line.decode("latin-1").split()
        length = 0
        close = version == "HTTP/1.0"
        chunked = False
        while True:
            header = self.rfile.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            key = name.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "connection" and value.strip().lower() == "close":
                close = True
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        elif length:
            if length > MAX_BODY:
                return False
            self.rfile.read(length)
        with self.lock:
            self.counter[0] += 1
        if method == "POST" and path.rstrip("/").endswith("/email"):
            body = json.dumps(
                {"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4())}
            ).encode()
        elif method == "GET":
            body = b'{"Name": "bench"}'
        else:
            body = b'{"ok": true}'
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        ).encode()
        self.conn.sendall(head + body)
        return not close


def _http_main(pipe: Connection) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    counter = [0]
    lock = threading.Lock()
    pipe.send(listener.getsockname()[1])

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_Handler(conn, counter, lock).serve, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    while True:  # answer "how many requests so far?" until told to stop
        msg = pipe.recv()
        if msg == "count":
            with lock:
                pipe.send(counter[0])
        else:
            return


def _smtp_main(pipe: Connection) -> None:
    from aiosmtpd.controller import Controller

    count = [0]

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            count[0] += 1
            return "250 2.0.0 Ok: queued"

    port = dead_port()  # aiosmtpd checks its own port by connecting to it: 0 will not do
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    pipe.send(port)
    while True:
        msg = pipe.recv()
        if msg == "count":
            pipe.send(count[0])
        else:
            controller.stop()
            return


def _silent_main(pipe: Connection) -> None:
    """Accepts connections and never says a word (a provider that hangs)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    pipe.send(listener.getsockname()[1])
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    pipe.recv()


@dataclass
class Server:
    port: int
    pipe: Connection

    def count(self) -> int:
        self.pipe.send("count")
        return int(self.pipe.recv())


@contextmanager
def serve(kind: str) -> Iterator[Server]:
    """Run one server in its own process (so its work does not share our GIL)."""
    target = {"http": _http_main, "smtp": _smtp_main, "silent": _silent_main}[kind]
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=target, args=(theirs,), daemon=True)
    proc.start()
    try:
        yield Server(int(ours.recv()), ours)
    finally:
        with suppress(OSError):
            ours.send("stop")
        proc.join(2)
        if proc.is_alive():
            proc.kill()


def dead_port() -> int:
    """A loopback port with nobody listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""The gthread worker of `mailrelay serve`, with a bounded time for each client.

gunicorn's threaded worker reads a request's headers and its body in one of its threads,
with blocking reads that have no end: a client that sends a request line and then nothing
(or one byte a minute) holds that thread for good, and a handful of such clients hold every
thread, so /healthz goes unanswered and a graceful stop waits its whole timeout. Here each
request gets `header_timeout` seconds for its request line and headers, counted from its
first byte, and `body_timeout` seconds for its body, counted from the end of its headers;
a read past either deadline ends the request (headers: the connection is closed; body: the
application answers 408). Both come from [serve] in the config.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 60.0


class DeadlineSocket:
    """A client socket whose reads end at the deadline of the request's current phase."""

    def __init__(self, sock: Any, conn: DeadlineConn) -> None:
        self._sock = sock
        self._conn = conn

    def recv(self, size: int) -> bytes:
        conn = self._conn
        now = time.monotonic()
        if conn.deadline is None:  # the phase starts with its first read
            conn.deadline = now + conn.limit
        remaining = conn.deadline - now
        prior = self._sock.gettimeout()
        if remaining <= 0:
            return self._expired()
        try:
            self._sock.settimeout(remaining if prior is None else min(prior, remaining))
            data: bytes = self._sock.recv(size)
        except TimeoutError:
            if prior is not None and prior < remaining:
                raise  # the caller's own (shorter) timeout, e.g. gunicorn's drain
            return self._expired()
        finally:
            self._sock.settimeout(prior)
        return data

    def _expired(self) -> bytes:
        conn = self._conn
        if conn.phase == "headers":
            conn.timed_out = True
            raise NoMoreData(b"")  # gunicorn closes the connection quietly
        raise TimeoutError(f"no complete request body in {conn.limit:g} s")

    def __getattr__(self, name: str) -> Any:  # settimeout, gettimeout, fileno, ...
        return getattr(self._sock, name)


class DeadlineConn(TConn):  # type: ignore[misc]
    """gunicorn's connection, its parser reading through a DeadlineSocket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = "headers"
        self.limit = DEFAULT_HEADER_TIMEOUT
        self.deadline: float | None = None
        self.timed_out = False

    def init(self) -> None:
        fresh = self.parser is None
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if fresh and unreader is not None and hasattr(unreader, "sock"):
            unreader.sock = DeadlineSocket(unreader.sock, self)

    def start(self, phase: str, limit: float, now: float | None = None) -> None:
        self.phase, self.limit, self.deadline = phase, limit, now


class GracefulWorker(ThreadWorker):  # type: ignore[misc]
    """A gthread worker for which SIGINT (Ctrl-C reaches every process) is SIGTERM, and
    whose clients have a bounded time to send each request (see the module's docstring)."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)
        signal.siginterrupt(signal.SIGINT, False)

    def init_process(self) -> None:
        timeouts = getattr(self.app, "client_timeouts", None)
        if timeouts is not None:
            self.header_timeout, self.body_timeout = timeouts
        super().init_process()

    def accept(self, listener: Any) -> None:
        """gunicorn's accept, making a DeadlineConn."""
        import errno

        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(True)
        self.enqueue_req(DeadlineConn(self.cfg, client, address, listener.getsockname()))

    def handle(self, conn: Any) -> Any:
        if isinstance(conn, DeadlineConn):
            conn.start("headers", self.header_timeout)  # armed by the request's first byte
        result = super().handle(conn)
        if isinstance(conn, DeadlineConn) and conn.timed_out:
            conn.timed_out = False
            self.log.warning(
                "client %s sent no complete request headers in %g s; connection closed",
                _client(conn.client),
                self.header_timeout,
            )
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn, DeadlineConn):
            conn.start("body", self.body_timeout, time.monotonic() + self.body_timeout)
        return super().handle_request(req, conn)


def _client(address: Any) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)

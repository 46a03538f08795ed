"""The gthread worker of `mailrelay serve`, with a bounded time for each client.

gunicorn's threaded worker reads a request's headers and its body in one of its threads,
with blocking reads: a client that sends a request line and then nothing holds that thread,
and a handful of such clients hold every thread, so /healthz goes unanswered. It also closes
each finished connection on its one event-loop thread with a blocking wait (up to 2 s) for
the client's end, so clients that never close are closed one after the other, 2 s apart,
while every other connection waits for the loop.

Here the event loop reads each request's headers without blocking, each connection on its
own clock, and a thread takes the request only once its headers are all in: a client has
`header_timeout` seconds for its request line and headers, counted from its first byte,
else the loop closes the connection. Its body is read in the thread, with `body_timeout`
seconds counted from the end of its headers (past it the application answers 408). A
finished connection lingers on the event loop, not in a blocking read. A stopping worker
closes at once the connections that have sent nothing of a request. Both times come from
[serve] in the config. TLS (and HTTP/2 prior knowledge) keep gunicorn's reading in a
thread, bounded by the same deadlines.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import signal
import socket
import time
from functools import partial
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 60.0
HEAD_CHUNK = 64 * 1024
HEAD_HANDOFF = 64 * 1024  # headers this long go to gunicorn's parser, which refuses them
LINGER = 2.0  # seconds a closing connection waits for the client's end (as gunicorn's)
LINGER_DRAIN = 64 * 1024  # bytes it discards meanwhile, at most


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
        self.head = bytearray()  # what the poller read of the next request's headers
        self.head_deadline: float | None = None  # header_timeout after its first byte
        self.closes_at = 0.0  # when the poller gives up on it (headers, or closing)
        self.drained = 0

    def init(self) -> None:
        fresh = self.parser is None
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if fresh and unreader is not None and hasattr(unreader, "sock"):
            unreader.sock = DeadlineSocket(unreader.sock, self)
        if self.head and unreader is not None:  # the parser reads those bytes first
            unreader.unread(bytes(self.head))
            self.head.clear()

    def start(self, phase: str, limit: float, now: float | None = None) -> None:
        self.phase, self.limit, self.deadline = phase, limit, now


class GracefulWorker(ThreadWorker):  # type: ignore[misc]
    """A gthread worker for which SIGINT (Ctrl-C reaches every process) is SIGTERM, and
    whose clients have a bounded time to send each request (see the module's docstring)."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: set[DeadlineConn] = set()  # headers still coming, on the poller
        self.lingering: set[DeadlineConn] = set()  # answered, closing, on the poller

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)
        signal.siginterrupt(signal.SIGINT, False)

    def init_process(self) -> None:
        timeouts = getattr(self.app, "client_timeouts", None)
        if timeouts is not None:
            self.header_timeout, self.body_timeout = timeouts
        super().init_process()

    def _polled(self) -> bool:
        """Whether this worker reads headers and closes on its poller (plain HTTP/1); a TLS
        socket's records, an HTTP/2 preface are read in a thread, as gunicorn does."""
        cleartext = getattr(self.cfg, "http2_cleartext", None)
        return not self.cfg.is_ssl and cleartext not in ("prior-knowledge", "both")

    def accept(self, listener: Any) -> None:
        """gunicorn's accept, making a DeadlineConn whose headers the poller reads."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = DeadlineConn(self.cfg, client, address, listener.getsockname())
        if self._polled():
            self._read_head(conn)
        else:
            client.setblocking(True)
            self.enqueue_req(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection sends its next request: the poller reads its headers."""
        if not (isinstance(conn, DeadlineConn) and self._polled() and not conn.is_http2):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head(conn)
        self._on_head_bytes(conn, client)

    def _read_head(self, conn: DeadlineConn) -> None:
        conn.head.clear()
        conn.head_deadline = None
        conn.closes_at = time.monotonic() + max(float(self.cfg.keepalive), self.header_timeout)
        conn.sock.setblocking(False)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: DeadlineConn, _sock: Any) -> None:
        """Runs on the poller: what the client sent so far; a thread gets the connection only
        once its headers are all there, so a client that stops half way holds no thread."""
        try:
            data = conn.sock.recv(HEAD_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._unpoll(conn, self.reading)
            self._close(conn)
            return
        if conn.head_deadline is None:  # its first byte: header_timeout from now
            conn.head_deadline = time.monotonic() + self.header_timeout
            conn.closes_at = conn.head_deadline
        seen = len(conn.head)
        conn.head += data
        tail = bytes(conn.head[max(0, seen - 3) :])
        if b"\r\n\r\n" in tail or b"\n\n" in tail or len(conn.head) > HEAD_HANDOFF:
            self._unpoll(conn, self.reading)
            conn.data_ready = True
            self.enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gunicorn's, but a connection that ends lingers on the poller, not in a blocking
        read of the main thread (up to 2 s each, one connection after the other)."""
        ending = not fs.cancelled() and fs.exception() is None and not fs.result()
        if not (ending and isinstance(conn, DeadlineConn) and self._polled()):
            super().finish_request(conn, fs)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # the answer is all out: FIN after it
            conn.sock.setblocking(False)
            conn.closes_at = time.monotonic() + LINGER
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger, conn))
        except (OSError, ValueError):
            self._close(conn)
            return
        self.lingering.add(conn)

    def _on_linger(self, conn: DeadlineConn, _sock: Any) -> None:
        """Runs on the poller: discard what the client still sends until it closes (so the
        kernel does not reset the connection over unread bytes, cutting off the answer)."""
        try:
            data = conn.sock.recv(HEAD_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_DRAIN:
            self._unpoll(conn, self.lingering)
            self._close(conn)

    def murder_pending(self) -> None:
        """gunicorn's, and the connections whose headers or closing are out of time; a
        stopping worker closes at once those that have sent nothing of a request."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if c.closes_at <= now or self._idle_at_stop(c)]:
            self._unpoll(conn, self.reading)
            if conn.head_deadline is not None and conn.closes_at <= now:
                self._warn_headers(conn)
            self._close(conn)
        for conn in [c for c in self.lingering if c.closes_at <= now]:
            self._unpoll(conn, self.lingering)
            self._close(conn)

    def _idle_at_stop(self, conn: DeadlineConn) -> bool:
        return not self.alive and conn.head_deadline is None

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gunicorn's, waking up in time for the first connection out of time."""
        waiting = self.reading | self.lingering
        if waiting:
            soonest = min(c.closes_at for c in waiting)
            timeout = min(timeout, max(soonest - time.monotonic(), 0.0))
        super().wait_for_and_dispatch_events(timeout)

    def _unpoll(self, conn: DeadlineConn, among: set[DeadlineConn]) -> None:
        among.discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _close(self, conn: DeadlineConn) -> None:
        self.nr_conns -= 1
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _warn_headers(self, conn: Any) -> None:
        self.log.warning(
            "client %s sent no complete request headers in %g s; connection closed",
            _client(conn.client),
            self.header_timeout,
        )

    def handle(self, conn: Any) -> Any:
        if isinstance(conn, DeadlineConn):  # from the first byte the poller saw, else the next
            deadline, conn.head_deadline = conn.head_deadline, None
            conn.start("headers", self.header_timeout, deadline)
        result = super().handle(conn)
        if isinstance(conn, DeadlineConn) and conn.timed_out:
            conn.timed_out = False
            self._warn_headers(conn)
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn, DeadlineConn):
            conn.start("body", self.body_timeout, time.monotonic() + self.body_timeout)
        return super().handle_request(req, conn)


def _client(address: Any) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)

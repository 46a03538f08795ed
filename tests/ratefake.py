"""A provider that enforces a rate limit across all its clients, on loopback: it speaks
Resend's `POST /emails` (Bearer key, JSON, `{"id"}` back) and allows `limit` requests in
each fixed one-second window, answering beyond it with Resend's 429
`rate_limit_exceeded`, `retry-after` and the draft-06 `ratelimit-limit/-remaining/-reset`
fields it sends on every answer (resend.com/docs/api-reference/rate-limit).

`quota_spent = True` answers every send with the 429 `daily_quota_exceeded` instead;
`refuse = N` answers the next N sends with the rate 429 (`retry-after: 1`).
`latency` holds every answer that long (a provider across the internet). Threaded, so
several hosts' batches arrive at once as they would. Used by tests and bench/.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

KEY = "re_ratefake_key"


class RateFake:
    def __init__(self, limit: int | None, *, latency: float = 0.0, headers: bool = True) -> None:
        self.limit = limit
        self.latency = latency
        self.headers = headers
        self.quota_spent = False
        self.refuse = 0  # answer this many next sends with a rate 429, whatever the window
        self.accepted = 0
        self.limited = 0  # 429 rate_limit_exceeded answers
        self.quota = 0  # 429 daily_quota_exceeded answers
        self.recipients: list[int] = []  # recipients of each accepted send
        self._lock = threading.Lock()
        self._window = 0
        self._count = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body leave in two writes: without this, Nagle's algorithm and
                # the client's delayed ACK hold each keep-alive answer ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:  # `status`'s probe, GET /domains
                self._answer(200, {"data": []}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    self._answer(401, {"name": "invalid_api_key", "message": "bad key"}, {})
                    return
                status, answer, fields = fake.take(body)
                if fake.latency:
                    time.sleep(fake.latency)
                self._answer(status, answer, fields)

            def _answer(self, status: int, body: Any, fields: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in fields.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        """The answer to one send: counted in the current window, refused beyond the limit."""
        now = time.monotonic()
        with self._lock:
            if self.quota_spent:
                self.quota += 1
                words = "You have reached your daily email sending quota."
                return 429, {"name": "daily_quota_exceeded", "message": words}, {}
            window = math.floor(now)
            if window != self._window:
                self._window, self._count = window, 0
            reset = str(max(1, math.ceil(window + 1 - now)))
            if self.refuse or (self.limit is not None and self._count >= self.limit):
                self.refuse = max(self.refuse - 1, 0)
                self.limited += 1
                words = (
                    f"Too many requests. You can only make {self.limit or 1} requests per second."
                )
                fields = {"retry-after": reset, **self._fields(0, reset)}
                return 429, {"name": "rate_limit_exceeded", "message": words}, fields
            self._count += 1
            self.accepted += 1
            to = body.get("to") or []
            self.recipients.append(len(to) + len(body.get("cc") or []) + len(body.get("bcc") or []))
            left = (self.limit or 0) - self._count
            return 200, {"id": f"fake-{self.accepted}"}, self._fields(left, reset)

    def _fields(self, left: int, reset: str) -> dict[str, str]:
        if not self.headers or self.limit is None:
            return {}
        return {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(left),
            "ratelimit-reset": reset,
        }

    def table(self, name: str = "limited", **keys: Any) -> str:
        """The provider's config table, with more keys (e.g. rate_limit = "20/s")."""
        lines = [
            "[[providers]]",
            f'name = "{name}"',
            'type = "resend"',
            f'api_key = "{KEY}"',
            f'base_url = "{self.base_url}"',
            "timeout = 10",
        ]
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> RateFake:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

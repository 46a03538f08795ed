"""Provider events forwarded to one URL of the user's (`events_url` in `[serve]`), each
request signed with our own HMAC so the receiver can tell it came from this service:

    X-Mailrelay-Timestamp: <unix seconds>
    X-Mailrelay-Signature: v1=<hex HMAC-SHA256(events_secret, timestamp + "." + body)>

The body is `{"events": [...]}` (the events of one webhook request, as `Event.to_dict`).
Sent from a background thread, so no provider waits on the user's server; a failure is one
warning and the events are not sent again (the audit log keeps them all).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.events.model import Event

TIMEOUT = 10.0
MAX_QUEUED = 1000


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class Forwarder:
    def __init__(self, url: str, secret: str, *, warn: Callable[[str], None]) -> None:
        self.url = url
        self.secret = secret
        self.warn = warn
        self._queue: queue.Queue[bytes] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="mailrelay-events", daemon=True)
        self._thread.start()

    def __call__(self, events: Sequence[Event]) -> None:
        if not events:
            return
        body = json.dumps({"events": [e.to_dict() for e in events]}, ensure_ascii=False)
        try:
            self._queue.put_nowait(body.encode("utf-8"))
        except queue.Full:
            self.warn(f"events not forwarded to {self.url}: {MAX_QUEUED} requests waiting")

    def drain(self) -> None:
        """Wait until every event handed over so far was sent (or failed)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._send(body)
            finally:
                self._queue.task_done()

    def _send(self, body: bytes) -> None:
        import requests

        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Mailrelay-Timestamp": stamp,
            "X-Mailrelay-Signature": signature(self.secret, stamp, body),
        }
        try:
            answer = requests.post(self.url, data=body, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            self.warn(scrub(f"events not forwarded to {self.url}: {exc}"))
            return
        if answer.status_code >= 300:
            self.warn(scrub(f"events not forwarded to {self.url}: HTTP {answer.status_code}"))

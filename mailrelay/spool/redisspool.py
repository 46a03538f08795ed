"""The spool in Redis (or Valkey): one queue for every host that names the same server.

Chosen when the spool setting (or, without one, the state) is a Redis URL. An entry's JSON
document (the message included) waits in a hash beside a sorted set of queue ids by their
next try; a flush moves the due ids into a stream (one atomic script) and reads them through
the consumer group `flushers`, one at a time, so every host's flush works the whole queue
and no two read one entry. What became of a message is recorded in the same script that
acknowledges its stream entry (mailrelay.spool.redisscripts). A host killed while it holds an
entry leaves it pending in the group; another flush claims it (XAUTOCLAIM) once it has been
idle longer than a whole send can take (`claim_idle`), and sends it again: the one window in
which a message can be delivered twice (a provider that takes an idempotency key drops it).

While Redis cannot be reached, what must be queued goes to the local spool folder with one
warning, and a flush on this host moves it into Redis once Redis answers, each message once
(its queue id is kept, and an id Redis has already is not added twice).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailrelay.clock import Now, iso_text, utcnow
from mailrelay.errors import InputFileError
from mailrelay.spool import redisscripts as lua
from mailrelay.spool.backoff import next_try_time
from mailrelay.spool.entry import (
    ID_ALPHABET,
    HeldMessage,
    QueuedMessage,
    load_document,
    new_queue_id,
)
from mailrelay.spool.files import SpoolError
from mailrelay.spool.flush import FlushItem, FlushReport, Sender, Spool
from mailrelay.spool.redisdurable import RedisDurable
from mailrelay.spool.redisflush import RedisFlush
from mailrelay.spool.redisheld import RedisDown, field_pairs
from mailrelay.spool.store import QueueIdBusy, UnknownQueueId
from mailrelay.state import redisclient

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.metrics import SpoolStats
    from mailrelay.result import Attempt

TIMEOUT = 3.0  # connect and each reply (a queued answer may wait for the server's fsync)
CLAIM_MARGIN = 15.0  # beyond the send's deadline (timeout) before another host takes an entry over
DOC_SLACK = 256 * 1024  # a document's envelope, history and JSON beyond the message itself


class RedisSpool(RedisDurable):
    """The spool in Redis, with the local folder for the time Redis cannot be reached."""

    def __init__(
        self,
        url: str,
        *,
        local: Spool,
        password: str | None = None,
        claim_idle: float = 60.0 + CLAIM_MARGIN,
        max_size: int | None = None,
        warn: Callable[[str], None] | None = None,
        now: Now = utcnow,
        timeout: float = TIMEOUT,
    ) -> None:
        from mailrelay.message import DEFAULT_MAX_SIZE
        from mailrelay.state.redisurl import masked, server_of

        self.location = masked(url)
        server, prefix = server_of(url, password, "spool")
        self._server, self._timeout = server, timeout
        self._per_thread = threading.local()  # a connection per thread: a WAITAOF blocks it
        self._conns: list[redisclient.Connection] = []
        self._conns_lock = threading.Lock()
        self.local = local
        self.claim_idle = claim_idle
        self.max_doc = 2 * (max_size or DEFAULT_MAX_SIZE) + DOC_SLACK  # base64 and JSON
        self.warn = warn or (lambda _msg: None)
        self.now = now
        p = f"{{{prefix}}}:spool:"
        self.prefix = p
        self.docs, self.retry, self.stream = p + "docs", p + "retry", p + "stream"
        self.sids, self.failed, self.corrupt, self.held_key = (
            p + "sids",
            p + "failed",
            p + "corrupt",
            p + "held",
        )
        self.where = f"{self.location} (spool)"
        self.failed_where = f"{self.location} (spool, failed)"
        self._persistence: dict[str, Any] | None = None
        self._deferred = self._wait_warned = False
        self._unsynced: set[redisclient.Connection] = set()  # wrote without waiting
        self._down_warned = False
        self._tokens: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RedisSpool({self.location!r})"

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()

    # --- writing ---------------------------------------------------------------------------

    def add(
        self, message: Message, attempts: list[Attempt], *, retry: float, max_retry: float
    ) -> QueuedMessage:
        """Queue a message after its first try failed: in Redis, else (unreachable) in the
        local folder with one warning; raises SpoolError when neither can take it."""
        from mailrelay.message import message_to_dict

        now = self.now()
        entry = QueuedMessage(
            id=new_queue_id(),
            created=now,
            tries=1,
            next_try=next_try_time(now, 1, retry, max_retry),
            sender=str(message.envelope_from or message.sender),
            recipients=[str(a) for a in message.recipients()],
            message_doc=message_to_dict(message),
            history=[{"time": iso_text(now), "attempts": [a.to_dict() for a in attempts]}],
        )
        try:
            self.put(entry)
        except RedisDown as exc:
            self.down(exc, f"queuing in the local spool {self.local.path} until it is back")
            return self.local.add(message, attempts, retry=retry, max_retry=max_retry)
        return entry

    def put(self, entry: QueuedMessage, *, keep_id: bool = False) -> bool:
        """Write an entry (a fresh id on a clash, unless `keep_id`: then False when Redis has
        it already, or delivered it). Raises RedisDown, or SpoolError when it is too big."""
        for _ in range(8):
            doc = json.dumps(entry.to_document(), separators=(",", ":"), ensure_ascii=False)
            if len(doc) > self.max_doc:
                raise SpoolError(
                    f"spool {self.location}: message {entry.id} is {len(doc)} bytes as a "
                    f"document, beyond the limit of {self.max_doc} (max_size)"
                )
            keys = [self.docs, self.retry, self.failed, self.sent_key(entry.id)]
            score = int(entry.next_try.timestamp() * 1000)
            if self._add_durably(keys, [entry.id, doc, score]):
                return True
            if keep_id:
                return False
            entry.id = new_queue_id()
        raise SpoolError(f"spool {self.location}: no free queue id after 8 tries")

    def hold(
        self, raw: bytes, *, reason: str, options: dict[str, Any], message_id: str | None
    ) -> HeldMessage:
        entry = HeldMessage(new_queue_id(), self.now(), reason, raw, options, message_id)
        try:
            doc = json.dumps(entry.to_document(), separators=(",", ":"))
            self.call("HSET", self.held_key, entry.id, doc)
        except RedisDown as exc:
            self.down(exc, f"holding in the local spool {self.local.path}")
            return self.local.hold(raw, reason=reason, options=options, message_id=message_id)
        return entry

    # --- reading ---------------------------------------------------------------------------

    def entries(self, *, failed: bool = False) -> list[QueuedMessage]:
        return self.with_local(
            self.local.entries(failed=failed),
            lambda: self._scan(self.failed if failed else self.docs),
            QueuedMessage.from_document,
            "message {} in {} is unreadable ({}); skipped",
        )

    def _scan(self, key: str, match: str = "*") -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        cursor: bytes | str = "0"
        while True:
            cursor, flat = self.call("HSCAN", key, cursor, "MATCH", match, "COUNT", 500)
            out += field_pairs(flat)
            if cursor in (b"0", "0"):
                return out

    def depth(self) -> int:
        """How many messages wait (queued and held, here and in the local folder)."""
        count = self.local.depth()
        try:
            replies = self.client.pipeline([["HLEN", self.docs], ["HLEN", self.held_key]])
            count += sum(r for r in replies if isinstance(r, int))
        except (OSError, redisclient.RedisError):
            pass
        return count

    def stats(self) -> SpoolStats:
        """The local folder's counts plus Redis's (no oldest age: ids are not by time)."""
        stats = self.local.stats()
        keys = {"queued": self.docs, "failed": self.failed, "corrupt": self.corrupt}
        keys["held"] = self.held_key
        try:
            replies = self.client.pipeline([["HLEN", key] for key in keys.values()])
        except (OSError, redisclient.RedisError):
            return stats
        for folder, n in zip(keys, replies, strict=True):
            if isinstance(n, int):
                stats.counts[folder] = stats.counts.get(folder, 0) + n
        return stats

    def pending(self) -> bool:
        return self.depth() > 0

    def place(self, entry: QueuedMessage) -> str:
        if entry.path is not None:
            return str(entry.path)
        return f"{self.failed_where if entry.failed_reason is not None else self.where} {entry.id}"

    def find(self, ident: str) -> QueuedMessage:
        """A message by id (or a unique start of one), queued or failed, here or local."""
        ident = ident.strip().removesuffix(".json")
        if not ident or any(c not in ID_ALPHABET for c in ident):
            return self.local.find(ident)
        found: list[tuple[str, bytes]] = []
        try:
            for key in (self.docs, self.failed):
                found += self._scan(key, f"{ident}*")
        except RedisDown as exc:
            self.down(exc, "looking in the local spool only")
        exact = [f for f in found if f[0] == ident]
        if not exact and len(found) > 1:
            raise UnknownQueueId(f"queue: {ident} matches {len(found)} messages; give more of it")
        if not exact and not found:
            try:
                return self.local.find(ident)
            except UnknownQueueId:
                raise UnknownQueueId(
                    f"queue: no message {ident} in {self.where} (see 'mailrelay queue list')"
                ) from None
        name, doc = (exact or found)[0]
        try:
            return QueuedMessage.from_document(load_document(doc))
        except ValueError as exc:
            raise InputFileError(f"message {name} in {self.where} is unreadable: {exc}") from None

    def find_any(self, ident: str) -> QueuedMessage | HeldMessage:
        """A message by id (or a unique start of one): queued, failed or held."""
        try:
            return self.find(ident)
        except UnknownQueueId as missing:
            ident = ident.strip().removesuffix(".json")
            held = [h for h in self.held() if ident and h.id.startswith(ident)]
            exact = [h for h in held if h.id == ident]
            if exact or len(held) == 1:
                return (exact or held)[0]
            if held:
                raise UnknownQueueId(
                    f"queue: {ident} matches {len(held)} messages; give more of it"
                ) from None
            raise missing from None

    def drop(self, ident: str) -> QueuedMessage:
        """Remove a queued, failed or held message for good (not one a flush is sending)."""
        try:
            entry = self.find(ident)
        except UnknownQueueId:
            entry = self._held_entry(ident)
        if entry.path is not None:
            return self.local.drop(ident)
        keys = [self.docs, self.retry, self.stream, self.sids, self.failed, self.held_key]
        idle = int(self.claim_idle * 1000)
        where, _doc = self.run(lua.DROP, keys, [entry.id, lua.GROUP, idle])
        if where == b"busy":
            raise QueueIdBusy(
                f"queue: message {entry.id} is being sent by a flush right now; "
                "try again in a moment"
            )
        if where == b"none":
            raise UnknownQueueId(f"queue: no message {ident} (sent meanwhile)")
        return entry

    def _held_entry(self, ident: str) -> QueuedMessage:
        """A held message in Redis by id or a unique start of one, as `drop` reports it."""
        ident = ident.strip()
        found = self._scan(self.held_key, f"{ident}*") if ident.isalnum() else []
        if len(found) != 1:
            raise UnknownQueueId(f"queue: no message {ident} in {self.where}")
        held = HeldMessage.from_document(load_document(found[0][1]))
        return QueuedMessage(held.id, held.created, 0, held.created, "", held.recipients, {})

    # --- flushing --------------------------------------------------------------------------

    def flush(
        self,
        send: Sender,
        *,
        retry: float,
        max_retry: float,
        max_age: float,
        ignore_backoff: bool = False,
        max_size: int | None = None,
        progress: Callable[[FlushItem | None], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> FlushReport:
        """Move the local folder's messages in (Redis back after an outage), then send every
        due message of the whole queue; with Redis unreachable, flush the local folder."""
        options: dict[str, Any] = dict(
            retry=retry,
            max_retry=max_retry,
            max_age=max_age,
            ignore_backoff=ignore_backoff,
            max_size=max_size,
            progress=progress,
        )
        try:
            self.migrate()
            consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
            flush = RedisFlush(self, consumer)
            total = flush.promote(everything=ignore_backoff)
        except RedisDown as exc:
            self.down(exc, f"flushing the local spool {self.local.path} only")
            return self.local.flush(send, on_start=on_start, **options)
        if on_start is not None:
            on_start(total)
        return flush.run(send, **options)

    def migrate(self) -> int:
        """Move the local folder's queued messages into Redis, each once; how many."""
        moved = 0
        for path in self.local.files():
            with self.local._locked(path) as fd:
                if fd is None:
                    continue
                try:
                    entry = self.local._parse(os.read(fd, os.fstat(fd).st_size + 1), path)
                except (OSError, ValueError):
                    continue  # the local flush moves it to corrupt/
                if entry.sent_at is None:
                    entry.path = None
                    moved += self.put(entry, keep_id=True)
                os.unlink(path)
        return moved

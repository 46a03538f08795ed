"""One flush of the spool in Redis: move the due entries into the stream, then take them one
at a time through the consumer group (first those a dead host left pending longer than a
send can take, XAUTOCLAIM; then new ones, XREADGROUP), send each and record what became of
it in the script that acknowledges it. One at a time, so no entry this host holds waits
idle behind another's send long enough to be taken over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from mailrelay.clock import iso_text
from mailrelay.errors import MailrelayError
from mailrelay.spool import redisscripts as lua
from mailrelay.spool.backoff import next_try_time
from mailrelay.spool.entry import QueuedMessage, load_document
from mailrelay.spool.flush import FlushItem, FlushReport, Sender
from mailrelay.spool.redisheld import RedisDown, RedisHeld
from mailrelay.state.redisclient import RedisError

PROMOTE_BATCH = 1000


class RedisFlush:
    def __init__(self, spool: RedisHeld, consumer: str) -> None:
        self.spool = spool
        self.consumer = consumer
        self.cursor: bytes | str = "0-0"
        self.claiming = True

    def promote(self, *, everything: bool) -> int:
        """Move the due ids (every id with `everything`) into the stream; how many."""
        s = self.spool
        until = "+inf" if everything else str(int(s.now().timestamp() * 1000))
        total = 0
        while True:
            keys = [s.retry, s.stream, s.sids]
            n = int(s.run(lua.PROMOTE, keys, [until, PROMOTE_BATCH, lua.GROUP]))
            total += n
            if n < PROMOTE_BATCH:
                return total

    def next(self) -> tuple[str, str] | None:
        """(stream id, queue id) of the next entry this flush holds, or None when done."""
        s = self.spool
        idle = int(s.claim_idle * 1000)
        while self.claiming:
            cursor, claimed, *_ = s.call(
                "XAUTOCLAIM", s.stream, lua.GROUP, self.consumer, idle, self.cursor, "COUNT", 1
            )
            self.cursor = cursor
            if cursor in (b"0-0", "0-0"):
                self.claiming = False
            for entry in claimed or []:
                if entry is not None and entry[1]:
                    return _decode(entry)
            if not claimed and not self.claiming:
                break
        reply = s.call(
            "XREADGROUP", "GROUP", lua.GROUP, self.consumer, "COUNT", 1, "STREAMS", s.stream, ">"
        )
        if not reply:
            return None
        return _decode(reply[0][1][0])

    def run(
        self,
        send: Sender,
        *,
        retry: float,
        max_retry: float,
        max_age: float,
        ignore_backoff: bool,
        max_size: int | None,
        progress: Callable[[FlushItem | None], None] | None,
    ) -> FlushReport:
        s = self.spool
        report = FlushReport()
        try:
            while (taken := self.next()) is not None:
                item = self.one(*taken, send, retry, max_retry, max_age, max_size)
                if item is not None:
                    report.items.append(item)
                if progress is not None:
                    progress(item)
            if not ignore_backoff:
                flat = s.call("ZRANGE", s.retry, 0, -1, "WITHSCORES")
                for i in range(0, len(flat) - 1, 2):
                    when = datetime.fromtimestamp(float(flat[i + 1]) / 1000, timezone.utc)
                    report.items.append(FlushItem(flat[i].decode(), "not_due", next_try=when))
            idle = int(s.claim_idle * 1000)
            s.run(lua.FORGET_CONSUMER, [s.stream], [lua.GROUP, self.consumer, idle])
        except RedisDown as exc:
            s.warn(f"spool {s.location}: the flush stopped ({exc.reason}); the rest waits")
        return report

    def finish(self, sid: str, ident: str, what: str, doc: str = "", when: int = 0) -> None:
        s = self.spool
        keys = [s.stream, s.sids, s.docs, s.retry, s.failed, s.corrupt, s.sent_key(ident)]
        s.run(lua.FINISH, keys, [lua.GROUP, sid, ident, what, doc, when])

    def one(
        self,
        sid: str,
        ident: str,
        send: Sender,
        retry: float,
        max_retry: float,
        max_age: float,
        max_size: int | None,
    ) -> FlushItem | None:
        s = self.spool
        try:
            raw, sent = s.client.pipeline([["HGET", s.docs, ident], ["EXISTS", s.sent_key(ident)]])
        except (OSError, RedisError) as exc:
            raise RedisDown(str(exc)) from None
        if sent == 1 or not isinstance(raw, bytes):  # delivered already, or dropped
            self.finish(sid, ident, "forget")
            return None
        try:
            entry = QueuedMessage.from_document(load_document(raw))
            message = entry.message(max_size=max_size)
        except (ValueError, MailrelayError) as exc:
            self.finish(sid, ident, "corrupt", raw.decode("utf-8", "replace"))
            return FlushItem(ident, "corrupt", f"unreadable ({exc})")
        expired = entry.expired_reason(s.now(), max_age)
        if expired is not None:
            self.finish(sid, ident, "failed", self._failed_doc(entry, expired))
            return FlushItem(ident, "failed", expired)
        result = send(message)
        tried_at = s.now()
        entry.record_try(result, tried_at)
        fate = result.fate
        if fate == "sent":
            winner = result.winner
            try:
                self.finish(sid, ident, "sent", iso_text(tried_at), lua.SENT_TTL)
            except RedisDown as exc:
                s.warn(
                    f"sent {ident} but cannot record it in {s.location} ({exc.reason}); "
                    "another flush will send it again once it has waited its claim time"
                )
                raise
            detail = f"via {winner.provider}" if winner else ""
            return FlushItem(ident, "sent", detail, result=result)
        if fate == "refused":
            why = entry.refused_reason()
            self.finish(sid, ident, "failed", self._failed_doc(entry, why))
            return FlushItem(ident, "failed", why, result=result)
        entry.next_try = next_try_time(tried_at, entry.tries, retry, max_retry)
        doc = json.dumps(entry.to_document(), separators=(",", ":"), ensure_ascii=False)
        self.finish(sid, ident, "retry", doc, int(entry.next_try.timestamp() * 1000))
        return FlushItem(
            ident, "queued", entry.last_error or "", result=result, next_try=entry.next_try
        )

    def _failed_doc(self, entry: QueuedMessage, why: str) -> str:
        entry.failed_reason, entry.failed_at = why, self.spool.now()
        return json.dumps(entry.to_document(), separators=(",", ":"), ensure_ascii=False)


def _decode(entry: list[Any]) -> tuple[str, str]:
    sid, fields = entry
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    return sid.decode(), values.get(b"id", b"").decode()

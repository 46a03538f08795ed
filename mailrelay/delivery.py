"""What becomes of a message: the one rule every front end uses.

`send`, `send --batch`, sendmail mode, `queue flush` and the HTTP service all end a send
here, so they can never disagree on what happens to a message. The rule:

- a provider accepted it: **sent** (exit 0);
- every provider failed for now (the failure may be retried) and queuing is on: it is
  written to the spool, **queued** (exit 0); when the spool cannot be written it is
  **failed** with exit 73 and `spool_error` says why;
- the configuration does not allow sending yet (no config, no usable From, a local name
  with no alias, no providers, a broken config, or every provider failed in a way only a
  configuration change mends: `needs_config_change`) and the caller keeps such messages
  (sendmail mode): **held** in the spool's `held/` folder with the reason, for
  `queue flush` once the configuration allows;
- anything else: **failed**, with the engine's exit code (65, 69, 75, 78).

What a result means for the message is `SendResult.fate` (result.py): sent, retry (failed
for now) or refused (by a provider, for the message itself). It is decided there, below this
layer, because the queue flush that lives in the spool (beneath delivery) follows it too: an
entry that is sent is removed, one to retry stays queued with a longer backoff, a refused
one moves to failed/.

Nothing here knows of click or of a terminal. A service calls, for example::

    from mailrelay.delivery import Queueing, deliver

    delivery = deliver(engine, message, queue=Queueing(spool, retry=300, max_retry=3600))
    if delivery.status == "queued":
        answer(202, {"queue_id": delivery.queue_id})
    elif delivery.status == "sent":
        answer(200, delivery.result.to_dict())

`settle` does the same for a result the caller already has (`engine.send` done elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mailrelay.datarecord import record
from mailrelay.errors import ExitCode, MailrelayError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.result import Disposition, SendResult
    from mailrelay.spool import FlushItem, HeldMessage
    from mailrelay.spool.protocol import QueueStore
    from mailrelay.suppression import Suppression, SuppressionList

Status = Literal["sent", "queued", "held", "failed"]


@record
class Queueing:
    """Queuing is on: where failed-for-now messages go and when they are tried again."""

    spool: QueueStore
    retry: float
    max_retry: float


@record
class Delivery:
    """The end of one send: a status, the engine's result, where the message was kept."""

    status: Status
    exit_code: int
    result: SendResult | None = None
    queue_id: str | None = None
    reason: str = ""
    path: Path | None = None  # the spool file of a queued or held message
    spool_error: str | None = None  # queuing was wanted, the spool could not be written
    skipped: list[Suppression] | None = None  # suppressed recipients not sent to

    @property
    def kept(self) -> bool:
        """The message is safe without having been sent (queued or held)."""
        return self.status in ("queued", "held")

    def to_dict(self) -> dict[str, Any]:
        """The result's JSON document with the delivery's own fields (exit code, queue id)."""
        doc: dict[str, Any] = self.result.to_dict() if self.result is not None else {}
        doc["status"] = self.status
        doc["exit_code"] = self.exit_code
        if self.queue_id is not None:
            doc.update(queued=self.status == "queued", queue_id=self.queue_id)
            doc["spool_file"] = str(self.path) if self.path else None
        if self.status == "held":
            doc["held"] = True
        if self.reason:
            doc["reason"] = self.reason
        if self.spool_error is not None:
            doc["queue_error"] = self.spool_error
        if self.skipped:
            doc["suppressed"] = [s.to_dict() for s in self.skipped]
        return doc


def settle(message: Message, result: SendResult, *, queue: Queueing | None) -> Delivery:
    """Turn an engine result into sent / queued / failed, writing the spool when queuing."""
    fate = result.fate
    if fate == "sent":
        return Delivery("sent", int(ExitCode.OK), result)
    if queue is None or fate == "refused":
        return Delivery("failed", int(result.exit_code), result, reason=failure_reason(result))
    try:
        entry = queue.spool.add(
            message, result.attempts, retry=queue.retry, max_retry=queue.max_retry
        )
    except MailrelayError as exc:
        return _unspooled(result, str(exc))
    except OSError as exc:
        return _unspooled(result, f"cannot write to the spool: {exc.strerror or exc}")
    return Delivery(
        "queued",
        int(ExitCode.OK),
        result,
        queue_id=entry.id,
        reason=failure_reason(result),
        path=entry.path,
    )


def deliver(
    engine: Engine,
    message: Message,
    *,
    queue: Queueing | None,
    hold: Callable[[SendResult], Delivery | None] | None = None,
    suppressions: SuppressionList | None = None,
) -> Delivery:
    """Send `message` through `engine` and settle the result (see the module docstring).

    The spool is written inside the send, before the engine records it, so the state counts
    the message once with what became of it (queued, or failed when the spool refused it).
    `hold` may keep a message that failed for now in held/ instead (sendmail mode: when
    only a configuration change can mend it, see `needs_config_change`). With
    `suppressions`, suppressed recipients are left out before any provider is
    contacted: the message goes to the others (`skipped` names the ones left out), or, when
    every recipient is suppressed, it fails with exit 65 and no provider tried."""
    skipped: list[Suppression] = []
    if suppressions is not None:
        from mailrelay.suppression import withhold

        kept_message, skipped = withhold(message, suppressions, warn=engine.warn)
        if kept_message is None:
            why = "; ".join(s.describe() for s in skipped)
            reason = f"not sent: every recipient is suppressed: {why}"
            return Delivery("failed", int(ExitCode.DATAERR), reason=reason, skipped=skipped)
        message = kept_message
    outcome = _deliver(engine, message, queue=queue, hold=hold)
    outcome.skipped = skipped or None
    return outcome


def _deliver(
    engine: Engine,
    message: Message,
    *,
    queue: Queueing | None,
    hold: Callable[[SendResult], Delivery | None] | None,
) -> Delivery:
    kept: list[Delivery] = []

    def keep(result: SendResult) -> Disposition:
        delivery = hold(result) if hold is not None else None
        if delivery is None:
            delivery = settle(message, result, queue=queue)
        kept.append(delivery)
        return "queued" if delivery.status == "queued" else "failed"

    result = engine.send(message, keep=keep)
    return kept[0] if kept else settle(message, result, queue=None)


def failure_reason(result: SendResult) -> str:
    """One line: each provider tried and its outcome ("" when one accepted)."""
    if result.delivered:
        return ""
    return ", ".join(f"{a.provider} ({a.outcome.value})" for a in result.attempts)


def needs_config_change(result: SendResult) -> bool:
    """Every provider failed in a way only a configuration change mends (`provider`:
    credentials, a relay without the TLS `security` asks for; `rejected`: a message the
    provider cannot carry), none for now: retrying it unchanged would fail for days."""
    from mailrelay.providers.base import Outcome

    outcomes = {a.outcome for a in result.attempts}
    return (
        result.fate == "retry"
        and bool(outcomes)
        and outcomes <= {Outcome.PROVIDER, Outcome.REJECTED}
    )


def config_change_reason(result: SendResult) -> str:
    """One line: what each provider said, for a message held until the config changes."""
    said = "; ".join(f"{a.provider} ({a.outcome.value}): {a.detail}" for a in result.attempts)
    return f"no provider can send it as configured: {said}"


def _unspooled(result: SendResult, error: str) -> Delivery:
    return Delivery(
        "failed",
        int(ExitCode.CANTCREAT),
        result,
        reason=failure_reason(result),
        spool_error=error,
    )


# --- held messages (sendmail mode): kept as they came until the configuration allows ---------


def hold(
    spool: QueueStore,
    raw: bytes,
    *,
    reason: str,
    options: dict[str, Any],
    result: SendResult | None = None,
    message: Message | None = None,
) -> Delivery:
    """Keep `raw` (a whole RFC 5322 message) in held/ with `reason`, exit 78.

    A Message-ID and a Date are added when the message has none (the Message-ID and Date
    of `message`, when it was read already), so the held copy and any copy sent meanwhile
    are known to be one message (see `forget_held`) and the Date says when it was written,
    not when a flush sent it. When even held/ cannot be written, the result is failed with
    exit 73 and `spool_error` says why."""
    from mailrelay.spool import SpoolError

    raw, message_id = _with_id_and_date(raw, options, message)
    try:
        entry = spool.hold(raw, reason=reason, options=options, message_id=message_id)
    except SpoolError as exc:
        return Delivery(
            "failed", int(ExitCode.CANTCREAT), result, reason=reason, spool_error=str(exc)
        )
    return Delivery(
        "held", int(ExitCode.CONFIG), result, queue_id=entry.id, reason=reason, path=entry.path
    )


def _with_id_and_date(
    raw: bytes, options: dict[str, Any], message: Message | None
) -> tuple[bytes, str]:
    from email.parser import BytesHeaderParser
    from email.policy import compat32
    from email.utils import format_datetime, make_msgid

    head = BytesHeaderParser(policy=compat32).parsebytes(raw)
    newline = b"\r\n" if b"\r\n" in raw.split(b"\n", 1)[0] + b"\n" else b"\n"
    added = b""
    if head.get("Date") is None or not str(head.get("Date")).strip():
        when = format_datetime(message.date) if message is not None else _now_text()
        added += b"Date: " + when.encode() + newline
    found = head.get("Message-ID")
    if found is not None and str(found).strip():
        return added + raw, " ".join(str(found).split())
    if message is not None:
        message_id = message.message_id
    else:
        sender = str(options.get("sender") or "")
        domain = sender.rpartition("@")[2] if "@" in sender else "localhost"
        message_id = make_msgid(domain=domain.strip("<> ") or "localhost")
    return b"Message-ID: " + message_id.encode() + newline + added + raw, message_id


def _now_text() -> str:
    from datetime import datetime, timezone
    from email.utils import format_datetime

    return format_datetime(datetime.now(timezone.utc))


def forget_held(spool: QueueStore, message_id: str) -> int:
    """Remove held copies of a message that was just sent (resent by hand, say); how many.

    Costs a directory listing, and a read only when held/ holds anything."""
    from mailrelay.spool import SpoolError

    removed = 0
    try:
        for key in spool.held_keys():
            with spool.take_held(key) as entry:
                if entry is not None and entry.message_id == message_id:
                    spool.release(entry)
                    removed += 1
    except (SpoolError, ValueError, OSError):
        pass  # the mail is out; a stale held copy is shown by 'queue list'
    return removed


def flush_held(
    spool: QueueStore,
    load: Callable[[HeldMessage], Message],
    send: Callable[[Message], SendResult],
    *,
    queue: Queueing,
) -> list[FlushItem]:
    """Try every held message: `load` turns one into a Message with today's configuration
    (raising ConfigError, or NoSenderError, while it still does not allow sending: the
    message stays held with the new reason; any other MessageError moves it to corrupt/).
    Sent: removed. Failed for now: queued in its place. Refused: queued, then failed/."""
    from pathlib import Path

    from mailrelay.errors import ConfigError, MessageError, NoSenderError
    from mailrelay.spool import FlushItem

    items: list[FlushItem] = []
    for key in spool.held_keys():
        ident = key.stem if isinstance(key, Path) else str(key)
        path = key if isinstance(key, Path) else None
        try:
            with spool.take_held(key) as entry:
                if entry is None:
                    if spool.held_exists(key):
                        items.append(FlushItem(ident, "locked", "being sent by another flush"))
                    continue
                try:
                    message = load(entry)
                except (ConfigError, NoSenderError) as exc:
                    spool.rehold(entry, str(exc))
                    items.append(FlushItem(ident, "held", str(exc), path=path))
                    continue
                except MessageError as exc:
                    aside = spool.move_corrupt(key)
                    items.append(FlushItem(ident, "corrupt", f"unreadable ({exc})", path=aside))
                    continue
                result = send(message)
                if needs_config_change(result):  # the configuration still cannot send it
                    reason = config_change_reason(result)
                    spool.rehold(entry, reason)
                    items.append(FlushItem(ident, "held", reason, result=result, path=path))
                    continue
                delivery = settle(message, result, queue=queue)
                items.append(_held_item(spool, entry, message, delivery))
        except ValueError as exc:  # unreadable: take_held moved it to corrupt/
            items.append(FlushItem(ident, "corrupt", str(exc)))
    return items


def _held_item(
    spool: QueueStore, entry: HeldMessage, message: Message, delivery: Delivery
) -> FlushItem:
    from mailrelay.spool import FlushItem, SpoolError

    if delivery.spool_error is not None:  # not queued: it stays held, nothing is lost
        raise SpoolError(delivery.spool_error)
    if delivery.status == "sent":
        spool.release(entry)
        winner = delivery.result.winner if delivery.result else None
        return FlushItem(entry.id, "sent", f"via {winner.provider}" if winner else "")
    if delivery.status == "queued":
        spool.release(entry)
        return FlushItem(entry.id, "queued", delivery.reason, result=delivery.result)
    # refused permanently: keep it for a person, in failed/ as a queue entry would be
    assert delivery.result is not None
    failed = delivery.result
    entry_q = spool.add(message, failed.attempts, retry=0.0, max_retry=0.0)
    moved = spool.fail(entry_q, f"refused permanently: {delivery.reason}")
    spool.release(entry)
    return FlushItem(entry.id, "failed", delivery.reason, result=failed, path=moved)

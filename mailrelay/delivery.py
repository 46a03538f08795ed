"""What becomes of a message: the one rule every front end uses.

`send`, `send --batch`, sendmail mode, `queue flush` and the HTTP service all end a send
here, so they can never disagree on what happens to a message. The rule:

- a provider accepted it: **sent** (exit 0);
- every provider failed for now (the failure may be retried) and queuing is on: it is
  written to the spool, **queued** (exit 0); when the spool cannot be written it is
  **failed** with exit 73 and `spool_error` says why;
- the configuration does not allow sending yet (no config, no usable From, no providers, a
  broken config) and the caller keeps such messages (sendmail mode): **held** in the spool's
  `held/` folder with the reason, for `queue flush` once the configuration allows;
- anything else: **failed**, with the engine's exit code (65, 69, 75, 78).

Nothing here knows of click or of a terminal. A service calls, for example::

    from mailrelay.delivery import Queueing, deliver

    outcome = deliver(engine, message, queue=Queueing(spool, retry=300, max_retry=3600))
    if outcome.status == "queued":
        answer(202, {"queue_id": outcome.queue_id})
    elif outcome.status == "sent":
        answer(200, outcome.result.to_dict())

`settle` does the same for a result the caller already has (`engine.send` done elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mailrelay.errors import ExitCode, MailrelayError
from mailrelay.record import record

if TYPE_CHECKING:
    from pathlib import Path

    from mailrelay.engine import Engine, SendResult
    from mailrelay.message import Message
    from mailrelay.spool import Spool

Status = Literal["sent", "queued", "held", "failed"]


@record
class Queueing:
    """Queuing is on: where failed-for-now messages go and when they are tried again."""

    spool: Spool
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
        return doc


def settle(message: Message, result: SendResult, *, queue: Queueing | None) -> Delivery:
    """Turn an engine result into sent / queued / failed, writing the spool when queuing."""
    if result.delivered:
        return Delivery("sent", int(ExitCode.OK), result)
    if queue is None or not result.retryable:
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


def deliver(engine: Engine, message: Message, *, queue: Queueing | None) -> Delivery:
    """Send `message` through `engine` and settle the result (see the module docstring)."""
    return settle(message, engine.send(message), queue=queue)


def failure_reason(result: SendResult) -> str:
    """One line: each provider tried and its outcome ("" when one accepted)."""
    if result.delivered:
        return ""
    return ", ".join(f"{a.provider} ({a.outcome.value})" for a in result.attempts)


def _unspooled(result: SendResult, error: str) -> Delivery:
    return Delivery(
        "failed",
        int(ExitCode.CANTCREAT),
        result,
        reason=failure_reason(result),
        spool_error=error,
    )

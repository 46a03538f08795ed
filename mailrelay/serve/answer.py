"""Engine result → HTTP answer: the one place where `serve` decides what a send means.

The same rule as `mailrelay send` (cli/send.py `deliver`), in HTTP words: sent is 200 with
the `send --json` document; every provider failed for now and the spool took it is 202;
a provider refused the message itself is 422; every provider failed, none temporarily, is
502; every provider failed for now and the message was not queued is 503 with Retry-After.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mailrelay.datarecord import field, record
from mailrelay.errors import ExitCode

if TYPE_CHECKING:
    from mailrelay.cli import App
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.result import SendResult

PROBLEM_TYPE = "application/problem+json"


@record
class Answer:
    """What the service says: a status, a JSON body and any extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return PROBLEM_TYPE if self.status >= 400 else "application/json"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": dict(self.headers)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Answer:
        return cls(int(doc["status"]), dict(doc["body"]), dict(doc.get("headers") or {}))


def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Answer:
    """An RFC 9457 problem document (title, status, detail, and any extension members)."""
    return Answer(
        status, {"title": title, "status": status, "detail": detail, **extra}, headers or {}
    )


def retry_after(engine: Engine) -> str:
    """Seconds until the first provider's cooldown ends, at least 1 (RFC 9110 Retry-After)."""
    wait = engine.first_recovery(engine.store.load())
    if wait is None:
        wait = engine.policy.cooldown
    return str(max(1, math.ceil(wait)))


def deliver(app: App, engine: Engine, message: Message, *, queue: bool) -> Answer:
    """Send `message` and say what happened; with `queue`, a message every provider failed
    for now goes to the spool (202). A spool that cannot be written leaves the 503."""
    result = engine.send(message)
    return answer_for(app, engine, message, result, queue=queue)


def answer_for(
    app: App, engine: Engine, message: Message, result: SendResult, *, queue: bool
) -> Answer:
    doc = result.to_dict()
    code = result.exit_code
    if result.delivered:
        return Answer(200, doc)
    if code == ExitCode.DATAERR:
        last = result.attempts[-1]
        return problem(
            422,
            "The provider refused the message",
            f"not sent: {last.provider} ({last.type}) refused the message itself: {last.detail}",
            result=doc,
        )
    if queue:
        from mailrelay.spool import SpoolError

        try:
            entry = app.enqueue(message, result.attempts)
        except SpoolError as exc:
            result.warnings.append(str(exc))
            doc = result.to_dict()
        else:
            doc.update(exit_code=0, queued=entry.id)
            return Answer(202, doc)
    failed = ", ".join(f"{a.provider} ({a.outcome.value})" for a in result.attempts)
    if code == ExitCode.TEMPFAIL:
        return problem(
            503,
            "Every provider failed for now",
            f"not sent: every provider failed, at least one temporarily ({failed}); "
            "try again after Retry-After seconds",
            headers={"Retry-After": retry_after(engine)},
            result=doc,
        )
    return problem(
        502,
        "Every provider failed",
        f"not sent: every provider failed, none temporarily ({failed})",
        result=doc,
    )

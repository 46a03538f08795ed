"""Engine result → HTTP answer: the one place where `serve` decides what a send means.

The service sends through mailrelay.delivery.deliver, as `mailrelay send` does, and this
module says its `Delivery` in HTTP words: sent is 200 with the `send --json` document;
queued (every provider failed for now and the spool took it) is 202; a provider refused
the message itself (65) is 422; every provider failed, none temporarily (69, or 78 for the
providers' own configuration) is 502; every provider failed for now and the message was not
queued (75), or queuing was wanted and the spool could not be written (73), is 503 with
Retry-After.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mailrelay.datarecord import field, record
from mailrelay.errors import ExitCode

if TYPE_CHECKING:
    from flask import Response

    from mailrelay.delivery import Delivery
    from mailrelay.engine import Engine

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


def json_response(answer: Answer) -> Response:
    """The answer as Flask's response: its JSON body (times in RFC 3339, known secrets
    scrubbed), status and headers."""
    import json

    from flask import Response

    from mailrelay.reports import jsonable
    from mailrelay.secrets import scrub

    body = json.dumps(answer.body, default=jsonable, ensure_ascii=False)
    return Response(
        scrub(body), status=answer.status, headers=answer.headers, content_type=answer.content_type
    )


def retry_after(engine: Engine) -> str:
    """Seconds until the first provider's cooldown ends, at least 1 (RFC 9110 Retry-After)."""
    wait = engine.first_recovery(engine.store.load())
    return _seconds(engine.policy.cooldown if wait is None else wait)


def _seconds(wait: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def answer_for(engine: Engine, delivery: Delivery) -> Answer:
    """The HTTP answer for what mailrelay.delivery made of a message (the CLI's rule)."""
    result = delivery.result
    doc = result.to_dict() if result is not None else {}
    if delivery.skipped:  # recipients left out before any provider was contacted
        doc["suppressed"] = [s.to_dict() for s in delivery.skipped]
    if result is None and delivery.skipped:
        return problem(422, "Every recipient is suppressed", delivery.reason, result=doc)
    if delivery.status == "sent":
        return Answer(200, doc)
    if delivery.status == "queued":
        doc.update(exit_code=0, queued=delivery.queue_id)
        return Answer(202, doc)
    attempts = result.attempts if result is not None else []
    code = delivery.exit_code
    if code == ExitCode.DATAERR:
        last = attempts[-1]
        return problem(
            422,
            "The provider refused the message",
            f"not sent: {last.provider} ({last.type}) refused the message itself: {last.detail}",
            result=doc,
        )
    failed = ", ".join(f"{a.provider} ({a.outcome.value})" for a in attempts)
    if code == ExitCode.CANTCREAT:  # queuing was wanted and the spool could not be written
        why = delivery.spool_error or "the spool could not be written"
        doc["warnings"] = [*doc.get("warnings", []), why]
        return problem(
            503,
            "Every provider failed for now and the spool refused the message",
            f"not sent: every provider failed ({failed}); not queued either: {why}; "
            "try again after Retry-After seconds",
            headers={"Retry-After": retry_after(engine)},
            result=doc,
        )
    if code == ExitCode.TEMPFAIL:
        return problem(
            503,
            "Every provider failed for now",
            f"not sent: every provider failed, at least one temporarily ({failed}); "
            "try again after Retry-After seconds",
            headers={"Retry-After": retry_after(engine)},
            result=doc,
        )
    # 69, and 78 (every provider's own configuration failed, e.g. an unset secret): the
    # client's request is fine and retrying cannot help until the operator fixes the
    # upstream side, which is what a gateway's 502 says
    return problem(
        502,
        "Every provider failed",
        f"not sent: every provider failed, none temporarily ({failed})",
        result=doc,
    )


def resting_answer(engine: Engine, wait: float) -> Answer:
    """The answer while every provider rests and none is due for its probe (Engine.resting):
    503 at once, no provider contacted, no message built."""
    names = ", ".join(p.name for p in engine.providers)
    return problem(
        503,
        "Every provider is resting",
        f"not sent: every provider is resting after failures ({names}); none was tried; "
        "try again after Retry-After seconds",
        headers={"Retry-After": _seconds(wait)},
    )

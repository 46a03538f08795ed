"""Alert events as transitions of the state, not messages: `provider_down` when a provider
that was healthy fails and starts resting, `provider_up` when one that had failed accepts
again, `all_failed` and `queued` when messages start going unsent after the last one went
out, `expired` when a queue flush moves messages to failed/. Ten sends while a provider
rests give one `provider_down`.

A transition is found inside the atomic state update itself (`Transitions.detect`, from the
state before and after the change), so among several processes sharing one state store only
the one whose update made the transition raises it. A store that runs the change more than
once (an optimistic retry) is fine: each run starts the list afresh and the run that was
applied is the one left. mailrelay/alerts.py sends the events.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailrelay.clock import iso_text
from mailrelay.datarecord import record
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.result import Attempt
    from mailrelay.state import State

EVENTS = ("provider_down", "provider_up", "all_failed", "queued", "expired", "suppressed")
UNSENT = ("queued", "failed")  # message results that mean no provider took it
MAX_DETAIL = 1000


@record
class Event:
    event: str  # one of EVENTS
    time: datetime
    provider: str | None = None
    outcome: str | None = None  # an outcome class, e.g. "transient"
    detail: str = ""
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "time": iso_text(self.time, timespec="milliseconds"),
            "provider": self.provider,
            "outcome": self.outcome,
            "detail": scrub(self.detail)[:MAX_DETAIL],
            "host": self.host,
        }

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def title(self) -> str:
        about = f" {self.provider}" if self.provider else ""
        return f"mailrelay {self.event}{about} on {self.host}"


_hostname: str | None = None


def hostname() -> str:
    global _hostname
    if _hostname is None:
        _hostname = socket.gethostname()
    return _hostname


class Transitions:
    """The events one state update makes; give `begin` the state before the change and
    `detect` the state after it, both inside the update (see the module docstring)."""

    def __init__(self, attempts: Sequence[Attempt], result: str | None, now: datetime) -> None:
        self.attempts = [a for a in attempts if a.tried]
        self.result = result  # the message's result, None when not counted
        self.now = now
        self.events: list[Event] = []
        self._failures: dict[str, int] = {}
        self._last_result: str | None = None

    def begin(self, before: State) -> None:
        self.events = []
        self._failures = {
            a.provider: before.providers[a.provider].consecutive_failures
            if a.provider in before.providers
            else 0
            for a in self.attempts
        }
        self._last_result = before.last_result

    def detect(self, after: State) -> list[Event]:
        host, now = hostname(), self.now
        last: dict[str, Attempt] = {a.provider: a for a in self.attempts}
        for name, attempt in last.items():
            entry = after.providers.get(name)
            if entry is None:
                continue
            was = self._failures.get(name, 0)
            if was == 0 and entry.consecutive_failures > 0:
                detail = attempt.detail
                if entry.cooldown_until is not None:
                    detail += (
                        f"; resting until {iso_text(entry.cooldown_until, timespec='milliseconds')}"
                    )
                self.events.append(
                    Event("provider_down", now, name, attempt.outcome.value, detail, host)
                )
            elif was > 0 and entry.consecutive_failures == 0:
                detail = f"accepted again after {was} consecutive failure(s)"
                self.events.append(Event("provider_up", now, name, "accepted", detail, host))
        if self.result in UNSENT and self._last_result not in UNSENT:
            final = self.attempts[-1].outcome.value if self.attempts else None
            tried = ", ".join(f"{a.provider} ({a.outcome.value})" for a in self.attempts)
            self.events.append(
                Event("all_failed", now, None, final, f"no provider took a message: {tried}", host)
            )
            if self.result == "queued":
                self.events.append(
                    Event(
                        "queued",
                        now,
                        None,
                        final,
                        "messages are being kept in the spool for 'mailrelay queue flush'",
                        host,
                    )
                )
        return self.events


def expired_event(moved: Sequence[tuple[str, str]]) -> Event:
    """One event for the messages a queue flush moved to failed/: (id, reason) pairs."""
    shown = "; ".join(f"{ident}: {why}" for ident, why in moved[:5])
    more = f"; and {len(moved) - 5} more" if len(moved) > 5 else ""
    detail = f"{len(moved)} message(s) moved to failed/: {shown}{more}"
    from mailrelay.clock import utcnow

    return Event("expired", utcnow(), None, None, detail, hostname())

"""What one send produced: an `Attempt` per provider tried, the `SendResult` with its exit
code, and the `Listener`s the engine tells of both (the audit log is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from mailrelay.datarecord import field, record
from mailrelay.errors import ExitCode
from mailrelay.providers.base import Outcome

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.ratelimit.learn import Observed

# What becomes of the message, by the one rule of mailrelay.delivery (SendResult.fate)
Fate = Literal["sent", "retry", "refused"]
# What the state counts for the message once the send is over (State.messages)
Disposition = Literal["sent", "queued", "failed", "rejected"]


@record
class Attempt:
    """One provider tried once (or passed over because the deadline had run out)."""

    provider: str
    type: str
    outcome: Outcome
    detail: str
    latency: float = 0.0
    status: int | None = None
    message_id: str | None = None
    retry_after: float | None = None
    config_error: bool = False
    tried: bool = True
    capability: bool = False  # refused for what the provider cannot carry: not its failure
    # this host's problem (a secret or command missing here): not the provider's shared health
    local: bool = False
    refused: tuple[tuple[str, str], ...] = ()  # recipients it refused, taking the rest
    limited: str | None = None  # "rate" or "quota": held back by a limit, not a failure
    rate: Observed | None = None  # the limit the answer told (header fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "type": self.type,
            "outcome": self.outcome.value,
            "status": self.status,
            "message_id": self.message_id,
            "detail": self.detail,
            "latency_ms": round(self.latency * 1000, 1),
            "retry_after": self.retry_after,
            "tried": self.tried,
            **({"refused": dict(self.refused)} if self.refused else {}),
            "rate_limited": self.limited,
        }


@record
class SendResult:
    message_id: str  # our RFC 5322 Message-ID
    attempts: list[Attempt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    disposition: Disposition | None = None  # what the state counts for the message

    @property
    def winner(self) -> Attempt | None:
        last = self.attempts[-1] if self.attempts else None
        return last if last is not None and last.outcome is Outcome.ACCEPTED else None

    @property
    def delivered(self) -> bool:
        return self.winner is not None

    @property
    def fate(self) -> Fate:
        """The rule every front end follows (mailrelay.delivery), decided here, below both
        the delivery layer and the spool's flush, so that both read the same rule: "sent"
        when a provider took the message; "refused" when a provider refused the message
        itself (exit 65: never queued, never tried again; a queued one moves to failed/);
        else "retry": failed for now, it may be queued, or stays queued with a backoff."""
        if self.delivered:
            return "sent"
        return "refused" if self.exit_code == ExitCode.DATAERR else "retry"

    @property
    def exit_code(self) -> ExitCode:
        if self.delivered:
            return ExitCode.OK
        outcomes = {a.outcome for a in self.attempts}
        if self.attempts and self.attempts[-1].outcome is Outcome.PERMANENT:
            return ExitCode.DATAERR
        if outcomes & {Outcome.TRANSIENT, Outcome.AMBIGUOUS}:
            return ExitCode.TEMPFAIL
        if self.attempts and all(a.config_error for a in self.attempts):
            return ExitCode.CONFIG
        return ExitCode.UNAVAILABLE

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "delivered": self.delivered,
            "message_id": self.message_id,
            "provider": winner.provider if winner else None,
            "provider_message_id": winner.message_id if winner else None,
            "exit_code": int(self.exit_code),
            "attempts": [a.to_dict() for a in self.attempts],
            "warnings": list(self.warnings),
        }


class Listener(Protocol):
    """Told of every attempt and every final result (the audit log is one)."""

    def attempt(self, message: Message, attempt: Attempt) -> None: ...

    def result(self, message: Message, result: SendResult) -> None: ...

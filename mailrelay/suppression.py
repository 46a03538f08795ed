"""One suppression list across providers: the addresses no provider is to be given again,
kept as records of kind "suppression" in the state (`mailrelay.state.records`), so a hard
bounce reported by one provider stops the next send through any other.

Hard bounces (and invalid addresses), complaints and unsubscribes add an address, with the
reason, the provider that reported it and the time; a bounce may expire after
`suppress_bounces_for` ([defaults], seconds; 0 keeps it). `send` refuses a suppressed
recipient before any provider is contacted (delivery.suppressed), unless told to ignore it.
"""

from __future__ import annotations

import copy
import csv
import io
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mailrelay.clock import iso_text
from mailrelay.datarecord import record
from mailrelay.errors import ExitCode, MailrelayError

if TYPE_CHECKING:
    from mailrelay.events.model import Event
    from mailrelay.message import Message
    from mailrelay.result import SendResult
    from mailrelay.state.records import Record, RecordStore

KIND = "suppression"
REASONS = ("bounced", "complained", "unsubscribed", "manual")
# the CSV columns the ESPs' suppression exports name their address in (lower case)
_EMAIL_COLUMNS = ("email", "email address", "emailaddress", "recipient", "address", "e-mail")
_REASON_COLUMNS = ("reason", "type", "suppressionreason", "bounce type")


class SuppressedError(MailrelayError):
    """Every recipient of a message is suppressed: nothing sent, no provider tried."""

    exit_code = ExitCode.DATAERR


@record
class Suppression:
    address: str
    reason: str  # one of REASONS
    provider: str  # the provider that reported it ("" for one added by hand)
    since: datetime
    detail: str = ""
    expires: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "provider": self.provider,
            "since": iso_text(self.since, timespec="seconds"),
            "expires": iso_text(self.expires, timespec="seconds") if self.expires else None,
            "detail": self.detail,
        }

    def describe(self) -> str:
        by = f" by {self.provider}" if self.provider else ""
        since = iso_text(self.since, timespec="seconds")
        return f"{self.address} is suppressed ({self.reason}{by} at {since})"


def reason_for(event: Event) -> str | None:
    """The suppression an event calls for, or None: hard bounces and invalid addresses,
    complaints and unsubscribes do; soft bounces, blocks and the rest do not."""
    if event.event == "bounced" and event.reject_reason in ("bounced", "invalid"):
        return "bounced"
    if event.event == "rejected" and event.reject_reason in ("bounced", "invalid"):
        return "bounced"  # a send refused because the ESP's own list holds a bounce
    if event.event == "complained" or (event.event == "rejected" and event.reject_reason == "spam"):
        return "complained"
    if event.event == "unsubscribed" or event.reject_reason == "unsubscribed":
        return "unsubscribed"
    return None


class SuppressionList:
    def __init__(self, records: RecordStore, *, bounce_expiry: float = 0.0) -> None:
        self.records = records
        self.bounce_expiry = bounce_expiry

    def add(
        self,
        address: str,
        reason: str,
        *,
        provider: str = "",
        detail: str = "",
        when: datetime | None = None,
    ) -> Suppression:
        since = when or datetime.now(timezone.utc)
        ttl = self.bounce_expiry if reason == "bounced" and self.bounce_expiry > 0 else None
        value: Record = {"reason": reason, "provider": provider, "since": since.timestamp()}
        value["detail"] = detail[:300]
        self.records.put(KIND, normalise(address), value, ttl)
        expires = datetime.fromtimestamp(time.time() + ttl, timezone.utc) if ttl else None
        return Suppression(normalise(address), reason, provider, since, detail[:300], expires)

    def add_many(self, pairs: Iterable[tuple[str, str]], *, detail: str = "") -> int:
        """Add (address, reason) pairs by hand (an import): no expiry, one write each."""
        since = time.time()
        return self.records.put_many(
            KIND,
            (
                (normalise(a), {"reason": r, "provider": "", "since": since, "detail": detail})
                for a, r in pairs
            ),
        )

    def add_event(self, event: Event) -> Suppression | None:
        reason = reason_for(event)
        if reason is None or not event.recipient:
            return None
        detail = event.description or event.raw_event
        return self.add(event.recipient, reason, provider=event.provider, detail=detail)

    def remove(self, address: str) -> bool:
        return self.records.remove(KIND, normalise(address))

    def lookup(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        """The suppressed ones among `addresses`, by normalised address."""
        keys = list(dict.fromkeys(normalise(a) for a in addresses))
        return {k: _suppression(k, v) for k, v in self.records.get_many(KIND, keys).items()}

    def all(self) -> list[Suppression]:
        return [_suppression(k, v) for k, v in sorted(self.records.items(KIND).items())]


def withhold(
    message: Message, suppressions: SuppressionList, *, warn: Callable[[str], None]
) -> tuple[Message | None, list[Suppression]]:
    """The message without its suppressed recipients (None when none is left) and the
    suppressions that left them out. A suppression list that cannot be read costs a
    warning, never the mail: the message goes out as it is."""
    try:
        found = suppressions.lookup(a.email for a in message.recipients())
    except (MailrelayError, OSError, ValueError) as exc:
        warn(f"suppression list not checked: {exc}")
        return message, []
    if not found:
        return message, []
    kept = copy.copy(message)
    kept.to = [a for a in message.to if normalise(a.email) not in found]
    kept.cc = [a for a in message.cc if normalise(a.email) not in found]
    kept.bcc = [a for a in message.bcc if normalise(a.email) not in found]
    skipped = list(found.values())
    return (kept if kept.recipients() else None), skipped


def suppressing(
    send: Callable[[Message], SendResult],
    suppressions: SuppressionList,
    *,
    warn: Callable[[str], None],
) -> Callable[[Message], SendResult]:
    """`send` (an engine's, as the spool's flush takes it) leaving suppressed recipients
    out; a message with none left is refused without contacting a provider (a queued one
    moves to failed/ with the suppression as its reason)."""

    def run(message: Message) -> SendResult:
        from mailrelay.providers.base import Outcome
        from mailrelay.result import Attempt, SendResult

        kept, skipped = withhold(message, suppressions, warn=warn)
        if kept is not None:
            return send(kept)
        why = "every recipient is suppressed: " + "; ".join(s.describe() for s in skipped)
        refusal = Attempt("suppression", "suppression", Outcome.PERMANENT, why, tried=False)
        return SendResult(message.message_id, [refusal])

    return run


def normalise(address: str) -> str:
    return address.strip().lower()


def _suppression(address: str, value: Record) -> Suppression:
    expires = value.get("expires")
    return Suppression(
        address=address,
        reason=str(value.get("reason", "manual")),
        provider=str(value.get("provider", "")),
        since=datetime.fromtimestamp(float(value.get("since", 0)), timezone.utc),
        detail=str(value.get("detail", "")),
        expires=datetime.fromtimestamp(expires, timezone.utc) if expires else None,
    )


def read_csv(text: str, *, default_reason: str = "manual") -> list[tuple[str, str]]:
    """(address, reason) pairs of a CSV export: the first column whose header names an
    email (Email, Email Address, Recipient…, any case), and a reason column when there is
    one; a file without a header row is read as one address per line."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    column = next((header.index(c) for c in _EMAIL_COLUMNS if c in header), None)
    if column is None:
        column, body = 0, rows
        reason_column = None
    else:
        body = rows[1:]
        reason_column = next((header.index(c) for c in _REASON_COLUMNS if c in header), None)
    out = []
    for row in body:
        if len(row) <= column or "@" not in row[column]:
            continue
        reason = default_reason
        if reason_column is not None and len(row) > reason_column:
            reason = _reason_word(row[reason_column]) or default_reason
        out.append((normalise(row[column]), reason))
    return out


def _reason_word(raw: str) -> str | None:
    word = raw.strip().lower()
    if "bounce" in word or "invalid" in word or "hard" in word:
        return "bounced"
    if "spam" in word or "complain" in word or "abuse" in word:
        return "complained"
    if "unsub" in word:
        return "unsubscribed"
    return None

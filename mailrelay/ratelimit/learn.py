"""What a provider's answer says of its limit: read from the rate-limit header fields.

Read, in this order of preference (the first that gives a value wins, per value):
- IETF draft-ietf-httpapi-ratelimit-headers, the structured form of draft 07 and later:
  `RateLimit: "name";r=REMAINING;t=RESET` and `RateLimit-Policy: "name";q=QUOTA;w=WINDOW`;
- the same draft's older separate fields (draft 06, Resend): `RateLimit-Limit`,
  `RateLimit-Remaining`, `RateLimit-Reset` (seconds);
- `X-RateLimit-Limit/-Remaining/-Reset` (SendGrid: Reset is a Unix time; MailerSend),
  `x-sib-ratelimit-*` (Brevo, seconds), `x-apiquota-remaining/-reset` (MailerSend's daily
  quota, an ISO 8601 time).
A reset larger than a year of seconds is taken as a Unix time. Header names are matched
without regard to case (the HTTP client's header map is case-insensitive).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime

from mailrelay.datarecord import record
from mailrelay.ratelimit.spec import BURST_FROM, SAFETY

_EPOCH_FROM = 365 * 86400.0  # a "reset" above this is a Unix time, not seconds
_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9.]+)")


@record(frozen=True)
class Observed:
    """The limit an answer told: `remaining` of `limit` until `reset` seconds from now, or
    a `window` of seconds for the limit (RateLimit-Policy's w)."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None

    def interval(self, window: float | None = None) -> float | None:
        """Seconds between requests that keep within the limit: the limit over its window
        (the policy's `w`, else `window`, the longest reset seen: a reset counts down within
        its window), else what remains spread evenly until the reset; None when the answer
        says too little. Short windows get the safety margin of configured limits."""
        window = self.window or window
        if self.limit and window:
            pace = window / self.limit
        elif self.remaining and self.reset:
            pace = self.reset / self.remaining
        else:
            return None
        return pace * SAFETY if (window or self.reset or 0.0) < BURST_FROM else pace

    @property
    def expires(self) -> float:
        """Seconds the learned pace holds: until the window resets."""
        return max(self.reset or 0.0, self.window or 0.0, 1.0)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip().split(",")[0].split(";")[0])
    except ValueError:
        return None
    return number if number == number and number >= 0 else None  # not NaN


def _seconds(value: str | None, now: float) -> float | None:
    number = _number(value)
    if number is None and value:
        try:  # MailerSend's x-apiquota-reset: "2026-08-14T00:00:00Z"
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        number = when.timestamp()
    if number is None:
        return None
    if number > _EPOCH_FROM:
        number -= now
    return max(number, 0.0)


def _structured(value: str | None) -> dict[str, float]:
    """The parameters of the first item of an IETF structured RateLimit field."""
    if not value:
        return {}
    first = value.split(",")[0]
    return {key: float(number) for key, number in _PARAM.findall(first.lower())}


def observe(headers: Mapping[str, str], *, now: float | None = None) -> Observed | None:
    """The limit the header fields tell; None when they tell nothing (the usual case)."""
    get = headers.get
    now = time.time() if now is None else now
    fields = _structured(get("RateLimit"))
    policy = _structured(get("RateLimit-Policy"))
    limit = policy.get("q")
    remaining = fields.get("r")
    reset = fields.get("t")
    window = policy.get("w")
    for prefix in ("RateLimit-", "X-RateLimit-", "x-sib-ratelimit-"):
        if limit is None:
            limit = _number(get(prefix + "Limit"))
        if remaining is None:
            remaining = _number(get(prefix + "Remaining"))
        if reset is None:
            reset = _seconds(get(prefix + "Reset"), now)
    if remaining is None and get("x-apiquota-remaining") is not None:
        remaining = _number(get("x-apiquota-remaining"))
        reset = _seconds(get("x-apiquota-reset"), now)
    if limit is None and remaining is None:
        return None
    return Observed(
        int(limit) if limit is not None else None,
        int(remaining) if remaining is not None else None,
        reset,
        window,
    )

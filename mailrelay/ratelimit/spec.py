"""A provider's configured budget: `rate_limit = "10/s"` (or a list), `unit = "recipients"`.

A limit is COUNT per PERIOD. Short periods (a minute or less) are paced evenly, one token
every PERIOD/COUNT seconds, so a fleet never bursts past a per-second limit; long ones (an
hour, a day) may be spent in bursts up to COUNT, as a daily quota allows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from mailrelay.datarecord import record

if TYPE_CHECKING:
    from mailrelay.providers.options import ProviderConfig

# what a rate 429 and a spent quota count in the state's per-provider `outcomes`, beside
# the attempt's class: mailrelay_provider_rate_limited_total{kind} reads them
LIMITED_COUNTS = {"rate": "rate_limited", "quota": "quota_spent"}

Unit = Literal["requests", "recipients"]
UNITS: tuple[Unit, ...] = ("requests", "recipients")

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
BURST_FROM = 3600.0  # periods this long allow a burst of the whole count
# paced limits go this much slower than written: the provider's window and ours are not in
# phase, and requests reach it a few milliseconds apart from when they left
SAFETY = 1.03


@record(frozen=True)
class Limit:
    """COUNT tokens per PERIOD seconds, as written (`text`)."""

    count: int
    period: float
    text: str

    @property
    def interval(self) -> float:
        """Seconds between two tokens when paced evenly (with the safety margin)."""
        pace = self.period / self.count
        return pace if self.period >= BURST_FROM else pace * SAFETY

    @property
    def burst(self) -> int:
        """Tokens that may be spent at once."""
        return self.count if self.period >= BURST_FROM else 1

    @property
    def per_second(self) -> float:
        return self.count / self.period


@record(frozen=True)
class Budget:
    """What a provider may spend: its limits (none: unlimited) and what a message costs."""

    limits: tuple[Limit, ...] = ()
    unit: Unit = "requests"

    def describe(self) -> str:
        """ "10/s, 100000/day (recipients)", or "" when there is no limit."""
        if not self.limits:
            return ""
        text = ", ".join(limit.text for limit in self.limits)
        return f"{text} ({self.unit})" if self.unit == "recipients" else text


def parse_limit(text: str) -> Limit:
    """ "10/s", "600/min", "5000/day", "100/5min" → Limit; ValueError saying why."""
    match = _FORM.match(text.lower())
    if match is None:
        raise ValueError(f'expected COUNT/PERIOD such as "10/s", "600/min", got {text!r}')
    count, times, unit = int(match[1]), match[2], match[3]
    unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _PERIODS else unit
    if unit not in _PERIODS:
        raise ValueError(f"unknown period {match[3]!r} in {text!r}; use s, min, h or day")
    if count < 1:
        raise ValueError(f"the count must be at least 1, got {text!r}")
    period = _PERIODS[unit] * (int(times) if times else 1)
    if period <= 0:
        raise ValueError(f"the period must be longer than 0, got {text!r}")
    return Limit(count, period, text.strip())


def budget_from_config(
    cfg: ProviderConfig, defaults: tuple[str, ...], default_unit: Unit
) -> Budget:
    """`rate_limit` (a string or a list; [] for none) and `unit`, else the type's defaults."""
    texts = defaults
    if cfg.has("rate_limit"):  # [] (or "") for none; a URL's query may list "10/s,5000/day"
        texts = tuple(t for v in cfg.get_str_list("rate_limit") for t in v.split(",") if t)
    limits = []
    for text in texts:
        try:
            limits.append(parse_limit(text))
        except ValueError as exc:
            raise cfg.error("rate_limit", str(exc)) from None
    unit = cfg.get_choice("unit", UNITS, default_unit)
    return Budget(tuple(limits), unit)

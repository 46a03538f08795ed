"""What the engine asks before and tells after each attempt: `Pacer.turn` waits for the
provider's budget when the wait fits the send's deadline, or says the provider is passed
over for now; `Pacer.observe` learns from the answer (header fields, a rate 429's
Retry-After, a spent quota's reset)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailrelay.providers.base import Outcome
from mailrelay.ratelimit.bucket import BudgetStore
from mailrelay.ratelimit.quota import to_midnight, until_text
from mailrelay.ratelimit.spec import BURST_FROM
from mailrelay.result import Attempt
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.base import Provider

RATE_BLOCK_DEFAULT = 1.0  # a rate 429 without Retry-After or reset: rest this long
_KEEP_FOR_SENDING = 0.5  # of the remaining deadline, at most _KEEP_CAP s, is kept for the send
_KEEP_CAP = 10.0


class Pacer:
    """Paces the providers of one engine through a shared budget store."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.sleep = sleep
        self.warn = warn or (lambda _msg: None)
        self._warned = False
        self._windows: dict[str, float] = {}  # the longest reset each provider has told

    @staticmethod
    def applies(provider: Provider) -> bool:
        """Whether the provider has a budget or may learn one from its answers."""
        return bool(provider.budget.limits) or provider.rate_headers

    def turn(self, provider: Provider, message: Message, remaining: float) -> Attempt | None:
        """None when the provider may be tried now (after waiting for its turn); else the
        not-tried attempt that passes it over."""
        if not self.applies(provider):
            return None
        budget = provider.budget
        cost = float(len(message.recipients())) if budget.unit == "recipients" else 1.0
        afford = max(remaining - min(remaining * _KEEP_FOR_SENDING, _KEEP_CAP), 0.0)
        try:
            verdict = self.store.reserve(provider.name, budget.limits, max(cost, 1.0), afford)
        except Exception as exc:  # a budget that cannot be read must not cost the mail
            self._trouble(exc)
            return None
        if verdict.go:
            if verdict.wait > 0:
                self.sleep(verdict.wait)
            return None
        if verdict.kind == "quota":
            why = f"quota spent until {until_text(verdict.wait)}"
        else:
            why = f"rate limit: budget again in {verdict.wait:.1f} s"
        return Attempt(
            provider.name,
            provider.type,
            Outcome.TRANSIENT,
            f"not tried: {why}",
            retry_after=verdict.wait,
            tried=False,
            limited=verdict.kind or "rate",
        )

    def observe(self, provider: Provider, attempt: Attempt) -> None:
        """Learn from the attempt's answer: the pace its header fields tell, a block."""
        if not self.applies(provider) or not attempt.tried:
            return
        try:
            self._learn(provider, attempt)
        except Exception as exc:
            self._trouble(exc)

    def _trouble(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            note = exc if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            self.warn(scrub(f"rate budgets in {self.store.location}: {note}; sending unpaced"))

    def _learn(self, provider: Provider, attempt: Attempt) -> None:
        seen = attempt.rate
        if seen is not None:
            if seen.reset and seen.reset < BURST_FROM:
                window = max(self._windows.get(provider.name, 1.0), seen.reset)
                self._windows[provider.name] = window
            interval = seen.interval(self._windows.get(provider.name))
            # nothing left: wait for the reset, unless a pace is known and the reset is a
            # whole second rounded up (it may be 1 ms away; the pace spaces the sends anyway)
            if seen.remaining == 0 and seen.reset and (interval is None or seen.reset > 1.0):
                self.store.block(provider.name, seen.reset, "rate")
            if interval is not None:
                self.store.learn(provider.name, interval, seen.expires)
        if attempt.limited == "quota":
            self.store.block(provider.name, attempt.retry_after or to_midnight(), "quota")
        elif attempt.limited == "rate":
            wait = attempt.retry_after
            if wait is None and seen is not None and seen.reset:
                wait = seen.reset
            self.store.block(provider.name, wait or RATE_BLOCK_DEFAULT, "rate")

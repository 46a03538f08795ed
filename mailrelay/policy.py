"""The failover policy: how the engine walks the providers and how long a failing one rests,
and who lets through the one probe of a cooldown period when the service passes resting
providers over (`Policy.skip_cooling`)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol

from mailrelay.datarecord import record
from mailrelay.providers.base import Outcome

COOLDOWN_CEILING = 3650 * 86400.0  # whatever the policy says: datetime arithmetic stays in range


@record
class Policy:
    """How the engine walks providers and how long failing ones rest."""

    order: str = "sticky"  # sticky | priority | round-robin
    timeout: float = 60.0  # total deadline of one send, across all attempts
    on_ambiguous: str = "failover"  # failover | stop
    cooldown: float = 60.0  # first cooldown after a transient failure; doubles per failure
    provider_cooldown: float = 600.0  # first cooldown after an account/config failure
    max_cooldown: float = 6 * 3600.0
    # The service's rule (`mailrelay serve`): a provider in cooldown is passed over, except
    # for one request per provider per cooldown period (a half-open probe), so a service
    # under load never hammers resting providers. The CLI (False) tries every provider.
    skip_cooling: bool = False

    def cooldown_for(
        self, outcome: Outcome, consecutive: int, retry_after: float | None
    ) -> float | None:
        """Seconds a provider rests after this failure, or None for no cooldown."""
        if outcome in (Outcome.TRANSIENT, Outcome.AMBIGUOUS):
            base = self.cooldown
        elif outcome is Outcome.PROVIDER:
            base = self.provider_cooldown
        else:
            return None
        # 2**60 s is past any cap: saturate instead of overflowing float (at 2**1024)
        wait = base * float(2 ** min(max(consecutive - 1, 0), 60))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_cooldown, COOLDOWN_CEILING)

    def cooldown_steps(self, outcome: Outcome, retry_after: float | None) -> tuple[float, ...]:
        """cooldown_for after the 1st, 2nd, ... consecutive failure, up to max_cooldown
        (the last step holds for every later failure); empty for no cooldown. A store
        that counts failures elsewhere (Redis) picks the step by its own count."""
        steps: list[float] = []
        for consecutive in range(1, 65):
            wait = self.cooldown_for(outcome, consecutive, retry_after)
            if wait is None:
                return ()
            steps.append(wait)
            if wait >= self.max_cooldown:
                break
        while len(steps) > 1 and steps[-1] == steps[-2]:
            steps.pop()  # the last step repeats anyway
        return tuple(steps)


class ProbeGate(Protocol):
    """Who lets the one probe of a cooldown period through (Policy.skip_cooling)."""

    def claim(self, provider: str, until: datetime) -> bool:
        """True for the first caller for this provider and cooldown end, False after."""
        ...

    def taken(self, provider: str, until: datetime) -> bool:
        """Whether this provider's probe for this cooldown end has been claimed (claims
        nothing: a False only says that a send now would be the probe)."""
        ...


class LocalProbeGate:
    """Claims kept in this process (threads of one worker)."""

    def __init__(self) -> None:
        self._claimed: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def claim(self, provider: str, until: datetime) -> bool:
        with self._lock:
            if self._claimed.get(provider) == until:
                return False
            self._claimed[provider] = until
            return True

    def taken(self, provider: str, until: datetime) -> bool:
        with self._lock:
            return self._claimed.get(provider) == until

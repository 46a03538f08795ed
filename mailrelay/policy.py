"""The failover policy: how the engine walks the providers and how long a failing one rests,
and who lets through the one probe of a cooldown period when the service passes resting
providers over (`Policy.skip_cooling`)."""

from __future__ import annotations

import random
import threading
from datetime import datetime
from typing import Protocol

from mailrelay.backoff import JITTER, Random, doubling, jittered
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
    # Each cooldown is shortened by up to this fraction (mailrelay.backoff), so providers
    # that failed together do not all come back in the same second; `rand` draws it.
    jitter: float = JITTER
    rand: Random = random.random

    def cooldown_for(
        self, outcome: Outcome, consecutive: int, retry_after: float | None
    ) -> float | None:
        """Seconds a provider rests after this failure, or None for no cooldown."""
        wait = self._step(outcome, consecutive)
        if wait is None:
            return None
        return self._settle(jittered(wait, jitter=self.jitter, rand=self.rand), retry_after)

    def _step(self, outcome: Outcome, consecutive: int) -> float | None:
        """The doubling step before jitter and Retry-After, or None for no cooldown."""
        if outcome in (Outcome.TRANSIENT, Outcome.AMBIGUOUS):
            base = self.cooldown
        elif outcome is Outcome.PROVIDER:
            base = self.provider_cooldown
        else:
            return None
        return doubling(base, consecutive, min(self.max_cooldown, COOLDOWN_CEILING))

    def _settle(self, wait: float, retry_after: float | None) -> float:
        """At least the provider's Retry-After, never past the cap."""
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_cooldown, COOLDOWN_CEILING)

    def cooldown_steps(self, outcome: Outcome, retry_after: float | None) -> tuple[float, ...]:
        """cooldown_for after the 1st, 2nd, ... consecutive failure, up to max_cooldown
        (the last step holds for every later failure); empty for no cooldown. A store
        that counts failures elsewhere (Redis) picks the step by its own count."""
        steps: list[float] = []
        for consecutive in range(1, 65):
            wait = self._step(outcome, consecutive)
            if wait is None:
                return ()
            steps.append(self._settle(wait, retry_after))
            if steps[-1] >= self.max_cooldown:
                break
        while len(steps) > 1 and steps[-1] == steps[-2]:
            steps.pop()  # the last step repeats anyway
        # jitter once the list is known, so that it neither hides the cap nor the repeats
        return tuple(
            self._settle(jittered(s, jitter=self.jitter, rand=self.rand), retry_after)
            for s in steps
        )


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

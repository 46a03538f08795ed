"""Health probes (`mailrelay status`, `config check`): every provider checked at once,
without sending."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mailrelay.clock import Clock
from mailrelay.datarecord import record
from mailrelay.errors import ConfigError
from mailrelay.providers.base import Health, Outcome, Provider, ProviderError
from mailrelay.secrets import scrub


@record
class Probe:
    provider: str
    type: str
    health: Health
    latency: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "type": self.type,
            "healthy": self.health.ok,
            "detail": self.health.detail,
            "outcome": self.health.outcome.value if self.health.outcome else None,
            "latency_ms": round(self.latency * 1000, 1),
        }


def probe(
    providers: Sequence[Provider], timeout: float, clock: Clock = time.monotonic
) -> list[Probe]:
    """Check every provider at once, without sending; results in the configured order."""

    def one(provider: Provider) -> Probe:
        started = clock()
        try:
            health = provider.check(timeout=timeout)
        except ProviderError as exc:
            health = Health(False, scrub(exc.message), exc.outcome)
        except ConfigError as exc:
            health = Health(False, scrub(str(exc)), Outcome.PROVIDER)
        except Exception as exc:  # a bug in a probe must not hide the other results
            health = Health(False, scrub(f"internal error: {type(exc).__name__}: {exc}"), None)
        return Probe(
            provider.name,
            provider.type,
            Health(health.ok, scrub(health.detail), health.outcome),
            clock() - started,
        )

    if not providers:
        return []
    from concurrent.futures import ThreadPoolExecutor  # only `status` probes at once

    with ThreadPoolExecutor(max_workers=min(16, len(providers))) as pool:
        return list(pool.map(one, providers))

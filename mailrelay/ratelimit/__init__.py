"""Rate limits: a provider's budget (spec.py), the shared token buckets that keep it
(bucket.py for a host, redisbucket.py for a fleet), what answers tell of it (learn.py), and
the engine's pacing through it (pacer.py). Only the light modules are re-exported here:
the provider base reads a budget on every start-up; the buckets load when a send paces."""

from mailrelay.ratelimit.learn import Observed, observe
from mailrelay.ratelimit.spec import Budget, Limit, parse_limit

__all__ = ["Budget", "Limit", "Observed", "observe", "parse_limit"]

"""`/metrics` of `mailrelay serve`: the families of `mailrelay metrics` (mailrelay.metrics,
from the state store and the spool, which every worker shares) and two of serve's own,
counted by each worker and summed over all of them at every scrape:

- `mailrelay_http_requests_total{route,code}`: requests by URL rule (never the raw path, so
  the label values are bounded) and status code;
- `mailrelay_send_duration_seconds{provider}`: a histogram of each provider attempt's time.

Summed with prometheus-client's multiprocess mode: `mailrelay serve` makes a private folder
(mode 0700) before gunicorn forks and names it in PROMETHEUS_MULTIPROC_DIR; each worker
writes its counts to its own memory-mapped files there, and a scrape reads every worker's
files (https://prometheus.github.io/client_python/multiprocess/). Only counters and a
histogram live there: a dead worker's counts stay in the sum, as a counter's must.
prometheus-client is imported when a worker builds its app, never by `send` or the CLI, and
never before that folder is named (it picks its storage when first imported).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from mailrelay.metrics import Family, Sample, SpoolStats, format_families, render

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mailrelay.message import Message
    from mailrelay.result import Attempt, SendResult
    from mailrelay.state import State

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = {  # label order in the page; prometheus-client's merge sorts them by name
    "mailrelay_http_requests": ("route", "code"),
    "mailrelay_send_duration_seconds": ("provider", "le"),
    "mailrelay_events": ("provider", "event"),
    "mailrelay_webhooks_refused": ("provider", "reason"),
}
SUFFIXES = ("", "_bucket", "_count", "_sum")  # not _created: multiprocess mode has none
# mail APIs answer in tens of milliseconds to a few seconds; an SMTP relay or a provider
# timing out takes up to its timeout (30 s by default)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class ServeMetrics:
    """This worker's request counter and attempt histogram; also an engine Listener, so
    every attempt the worker's engines make is observed (`tried` ones: a provider passed
    over took no time)."""

    def __init__(self, providers: Sequence[str] = ()) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        self.folder = os.environ.get(MULTIPROC_ENV) or None
        if self.folder is not None and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"prometheus_client was imported before {MULTIPROC_ENV} was set: "
                "its counts would be this process's only"
            )
        self._warned = False
        self._lock = threading.Lock()
        # without the folder (an app made outside `mailrelay serve`): this process's counts
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mailrelay_http_requests",
            "HTTP requests answered, by route (the URL rule) and status code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mailrelay_send_duration_seconds",
            "How long each attempt to hand a message to a provider took.",
            ["provider"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "mailrelay_events",
            "Provider events received by webhook (duplicates not counted), by provider and "
            "normalised event.",
            ["provider", "event"],
            registry=self.registry,
        )
        self.refused = Counter(
            "mailrelay_webhooks_refused",
            "Webhook requests refused, by provider and reason (forged, stale, malformed).",
            ["provider", "reason"],
            registry=self.registry,
        )
        for name in providers:  # a series from the start (0), so rate() sees the first one
            self._guarded(partial(self.duration.labels, provider=name))

    def count_request(self, route: str, code: int) -> None:
        self._guarded(lambda: self.requests.labels(route=route, code=str(code)).inc())

    def count_event(self, provider: str, event: str) -> None:
        self._guarded(lambda: self.events.labels(provider=provider, event=event).inc())

    def count_refused(self, provider: str, reason: str) -> None:
        self._guarded(lambda: self.refused.labels(provider=provider, reason=reason).inc())

    # --- engine Listener ---------------------------------------------------------------

    def attempt(self, message: Message, attempt: Attempt) -> None:
        if attempt.tried:
            duration = max(attempt.latency, 0.0)
            self._guarded(lambda: self.duration.labels(provider=attempt.provider).observe(duration))

    def result(self, message: Message, result: SendResult) -> None:
        pass

    # --- the page ------------------------------------------------------------------------

    def render(self) -> str:
        """serve's own families, every worker's counts added up, in the format (and the
        label order) of the rest of the page."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        try:
            registry = self.registry
            if self.folder is not None:
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path=self.folder)  # type: ignore[no-untyped-call]
            return format_families(_family(metric) for metric in registry.collect())
        except (OSError, ValueError, RuntimeError) as exc:  # the folder gone (a stop), a bad file
            self._warn(exc)
            return ""

    def page(self, state: State, spool: SpoolStats | None, providers: Sequence[str]) -> str:
        """The whole /metrics page: the shared state's families once (they are not per
        worker, so never summed), then serve's own."""
        return render(state, spool, providers=providers) + self.render()

    def _guarded(self, write: Callable[[], object]) -> None:
        """A metric write never costs a request: when it fails (the folder removed under a
        worker still answering at a stop, a full disk), one warning per worker, no more."""
        try:
            write()
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        from mailrelay.logline import escape_controls
        from mailrelay.secrets import scrub

        reason = escape_controls(f"{type(exc).__name__}: {exc}")
        note = f"mailrelay: warning: serve's metrics failed: {reason}\n"
        sys.stderr.write(scrub(note))


def _family(metric: Metric) -> Family:
    """A family prometheus-client collected, as mailrelay.metrics formats them: samples
    grouped by series, buckets in order, labels in the order they were declared."""
    name = metric.name + ("_total" if metric.type == "counter" else "")
    order = LABELS.get(metric.name, ())
    family = Family(name, metric.type, metric.documentation)
    samples = []
    for sample in metric.samples:
        suffix = sample.name.removeprefix(name)
        if suffix not in SUFFIXES:
            continue
        labels = sorted(sample.labels.items(), key=lambda kv: _rank(order, kv[0]))
        series = tuple(kv for kv in labels if kv[0] != "le")
        le = float(sample.labels.get("le", "0"))
        samples.append(
            ((series, SUFFIXES.index(suffix), le), Sample(dict(labels), sample.value, suffix))
        )
    family.samples = [sample for _key, sample in sorted(samples, key=lambda pair: pair[0])]
    return family


def _rank(order: tuple[str, ...], label: str) -> int:
    return order.index(label) if label in order else len(order)

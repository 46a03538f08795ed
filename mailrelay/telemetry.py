"""OpenTelemetry traces, optional (`pip install 'mailrelay[otel]'`) and off unless
$OTEL_EXPORTER_OTLP_ENDPOINT or `[telemetry] enabled = true` turns them on.

A send is one span (`mailrelay.send`) with one child per provider attempt
(`mailrelay.attempt`: provider, type, outcome class, HTTP status, Retry-After, latency);
never an address, a subject, a body or a provider's own words (they may quote an address).
The W3C `traceparent` of the send (from `serve`'s request, else the send's own) goes with the
message into the spool, so a retry an hour later is a span of the same trace.

Nothing here imports opentelemetry until tracing is on: a send with it off pays nothing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailrelay.datarecord import record

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.result import Attempt, SendResult

# https://www.w3.org/TR/trace-context/#traceparent-header: version 00, a trace id and a
# parent id that are not all zeros, flags
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def valid_traceparent(value: object) -> str | None:
    """`value` if it is a W3C traceparent this version of the spec defines, else None."""
    if isinstance(value, str) and _TRACEPARENT.fullmatch(value.strip()):
        return value.strip()
    return None


@record
class TelemetrySettings:
    enabled: bool = False
    endpoint: str | None = None  # the OTLP/HTTP endpoint; else $OTEL_EXPORTER_OTLP_ENDPOINT
    service_name: str = "mailrelay"


def read_telemetry(table: object, source: str) -> TelemetrySettings:
    """The `[telemetry]` table of the config."""
    from mailrelay.errors import ConfigError, did_you_mean
    from mailrelay.providers.options import ProviderConfig

    if not isinstance(table, dict):
        raise ConfigError("[telemetry] must be a table", source=source)
    known = ("enabled", "endpoint", "service_name")
    for key in sorted(set(table) - set(known)):
        raise ConfigError(
            f"unknown key{did_you_mean(key, known)}; known: {', '.join(known)}",
            source=source,
            key=f"telemetry.{key}",
        )
    cfg = ProviderConfig("[telemetry]", "telemetry", table, source)
    return TelemetrySettings(
        enabled=cfg.get_bool("enabled", True),
        endpoint=cfg.get_str("endpoint"),
        service_name=cfg.get_str("service_name", "mailrelay") or "mailrelay",
    )


def wanted(settings: TelemetrySettings | None, environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or bool(settings and settings.enabled)


def listener_for(
    settings: TelemetrySettings | None, environ: Mapping[str, str], warn: Any
) -> TraceListener | None:
    """The listener that traces every send, or None when tracing is off (or the `otel`
    extra is not installed: one warning)."""
    if not wanted(settings, environ):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        warn("telemetry is on but OpenTelemetry is not installed: pip install 'mailrelay[otel]'")
        return None
    from mailrelay import __version__

    name = settings.service_name if settings else "mailrelay"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    endpoint = settings.endpoint if settings else None
    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # flushed at exit by the SDK
    return TraceListener(provider.get_tracer("mailrelay", __version__))


class TraceListener:
    """A Listener (mailrelay.result) that makes the spans of each send."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._open: dict[int, Any] = {}  # id(message) -> its send span, until its result
        self._lock = threading.Lock()  # serve's threads send at once

    def _send_span(self, message: Message, start_ns: int) -> Any:
        with self._lock:
            span = self._open.get(id(message))
            if span is None:
                span = self._open[id(message)] = self._start_send(message, start_ns)
        return span

    def _start_send(self, message: Message, start_ns: int) -> Any:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagator = TraceContextTextMapPropagator()
        parent = None
        if message.traceparent is not None:
            parent = propagator.extract({"traceparent": message.traceparent})
        span = self.tracer.start_span("mailrelay.send", context=parent, start_time=start_ns)
        if message.traceparent is None:  # a retry from the spool joins this trace
            ctx = span.get_span_context()
            message.traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
        return span

    def attempt(self, message: Message, attempt: Attempt) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        start = end - int(attempt.latency * 1e9)
        parent = trace.set_span_in_context(self._send_span(message, start))
        span = self.tracer.start_span(
            "mailrelay.attempt", context=parent, start_time=start, attributes=_attributes(attempt)
        )
        if attempt.outcome.value != "accepted":
            span.set_status(Status(StatusCode.ERROR, attempt.outcome.value))
        span.end(end_time=end)

    def result(self, message: Message, result: SendResult) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._send_span(message, time.time_ns())
        with self._lock:
            self._open.pop(id(message), None)
        winner = result.winner
        span.set_attribute("mailrelay.result", result.disposition or "")
        span.set_attribute("mailrelay.exit_code", int(result.exit_code))
        span.set_attribute("mailrelay.attempts", sum(1 for a in result.attempts if a.tried))
        if winner is not None:
            span.set_attribute("mailrelay.provider", winner.provider)
        else:
            span.set_status(Status(StatusCode.ERROR, result.disposition or "failed"))
        span.end()


def _attributes(attempt: Attempt) -> dict[str, Any]:
    found: dict[str, Any] = {
        "mailrelay.provider": attempt.provider,
        "mailrelay.provider.type": attempt.type,
        "mailrelay.outcome": attempt.outcome.value,
        "mailrelay.latency_ms": round(attempt.latency * 1000, 1),
    }
    if attempt.status is not None:
        found["http.response.status_code"] = attempt.status
    if attempt.retry_after is not None:
        found["mailrelay.retry_after"] = attempt.retry_after
    return found

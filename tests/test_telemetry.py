"""OpenTelemetry traces (the `otel` extra): a span per send and per attempt, in the SDK's
in-memory exporter; one trace from serve's traceparent through the spool to a retry; no
address, subject or body in any span; nothing imported while tracing is off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from mailrelay.app import App
from mailrelay.config import load_settings
from mailrelay.delivery import deliver
from mailrelay.engine import Engine
from mailrelay.message import message_from_dict
from mailrelay.telemetry import TraceListener, valid_traceparent
from tests.conftest import free_port
from tests.test_e2e import mailrelay
from tests.test_import_cost import loaded_after
from tests.test_serve import AUTH, MESSAGE, Server, config, dead_smtp

SECRETS = ("ann@example.org", "cron@example.com", "Quarterly numbers", "the body text")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def traced_app(
    tmp_path: Path, urls: list[str], exporter: InMemorySpanExporter
) -> tuple[App, Engine]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = load_settings(None, urls)
    settings.spool_dir = str(tmp_path / "spool")
    app = App(
        config=None,
        state=str(tmp_path / "state.toml"),
        providers=(),
        debug=False,
        warn=lambda _: None,
        log_file=None,
        settings=settings,
    )
    engine = app.engine()
    engine.listeners.append(TraceListener(provider.get_tracer("test")))
    return app, engine


def message() -> Any:
    return message_from_dict(
        {"from": SECRETS[1], "to": SECRETS[0], "subject": SECRETS[2], "text": SECRETS[3]}
    )


def no_secret_in(spans: tuple[ReadableSpan, ...]) -> None:
    for span in spans:
        text = repr(dict(span.attributes or {})) + span.name + repr(span.status.description)
        assert not any(s in text for s in SECRETS), text


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_failover_is_one_send_span_with_an_attempt_span_each(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}?security=none&timeout=5"
    _, engine = traced_app(tmp_path, [dead, f"outbox://{tmp_path}/outbox"], exporter)
    result = deliver(engine, message(), queue=None)
    assert result.status == "sent"
    spans = exporter.get_finished_spans()
    (send,) = by_name(spans, "mailrelay.send")
    attempts = by_name(spans, "mailrelay.attempt")
    assert [a.attributes["mailrelay.outcome"] for a in attempts] == ["transient", "accepted"]
    assert [a.attributes["mailrelay.provider"] for a in attempts] == ["smtp", "outbox"]
    assert all(a.parent is not None and a.parent.span_id == send.context.span_id for a in attempts)
    assert {s.context.trace_id for s in spans} == {send.context.trace_id}
    assert send.attributes["mailrelay.result"] == "sent"
    assert send.attributes["mailrelay.provider"] == "outbox"
    assert all("mailrelay.latency_ms" in a.attributes for a in attempts)
    no_secret_in(spans)


def test_a_queued_retry_joins_the_trace_of_the_first_send(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}?security=none&timeout=5"
    first, engine = traced_app(tmp_path, [dead], exporter)
    sent = message()
    sent.traceparent = PARENT  # as serve takes it from the request
    assert deliver(engine, sent, queue=first.queueing()).status == "queued"
    (entry,) = first.spool().entries()
    assert entry.traceparent == PARENT
    later, engine = traced_app(tmp_path, [f"outbox://{tmp_path}/outbox"], exporter)
    report = later.spool().flush(
        engine.send, retry=60, max_retry=3600, max_age=86400, ignore_backoff=True
    )
    assert [i.status for i in report.items] == ["sent"]
    spans = exporter.get_finished_spans()
    sends = by_name(spans, "mailrelay.send")
    assert len(sends) == 2 and len(by_name(spans, "mailrelay.attempt")) == 2
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE}  # one trace, an hour apart
    assert all(s.parent is not None for s in sends)  # both under the caller's span
    no_secret_in(spans)


def test_without_a_traceparent_the_spool_keeps_the_sends_own(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}?security=none&timeout=5"
    app, engine = traced_app(tmp_path, [dead], exporter)
    assert deliver(engine, message(), queue=app.queueing()).status == "queued"
    (send,) = by_name(exporter.get_finished_spans(), "mailrelay.send")
    (entry,) = app.spool().entries()
    assert entry.traceparent == f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-01"


def test_serve_carries_the_requests_traceparent_into_the_queue_entry(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    server = Server(
        tmp_path, config(tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(spool))
    )
    try:
        r = requests.post(
            server.url + "/v1/messages",
            json=MESSAGE,
            headers={**AUTH, "traceparent": PARENT},
            timeout=60,
        )
        assert r.status_code == 202, r.text
        bad = requests.post(
            server.url + "/v1/messages",
            json=MESSAGE,
            headers={**AUTH, "traceparent": "00-zz-not-a-trace-01"},
            timeout=60,
        )
        assert bad.status_code == 202  # a bad traceparent is ignored, never an error
    finally:
        server.stop()

    found = [json.loads(p.read_text()).get("traceparent") for p in spool.glob("*.json")]
    assert sorted(found, key=str) == [PARENT, None]


def test_only_w3c_traceparents_are_taken() -> None:
    assert valid_traceparent(PARENT) == PARENT
    span = "00f067aa0ba902b7"
    for bad in (None, 7, "", f"01-{TRACE}-{span}-01", f"00-{'0' * 32}-{span}-01",
                f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE.upper()}-{span}-01"):  # fmt: skip
        assert valid_traceparent(bad) is None, bad


def test_tracing_off_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    code = (
        "from mailrelay.app import App\n"
        "from mailrelay.config import load_settings\n"
        f"s = load_settings(None, ['outbox://{tmp_path}/outbox'])\n"
        "app = App(config=None, state=None, providers=(), debug=False,"
        " warn=print, log_file=None, settings=s)\n"
        "app.engine()\n"
    )
    assert loaded_after(code, ("opentelemetry", "mailrelay.telemetry")) == []


def received_spans(httpserver: HTTPServer) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for request, _ in httpserver.log:
        assert request.path == "/v1/traces"
        body = ExportTraceServiceRequest.FromString(request.get_data())
        for resource in body.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    return spans


@pytest.mark.parametrize("how", ["environment", "config"])
def test_the_installed_command_exports_to_an_otlp_endpoint(
    tmp_path: Path, httpserver: HTTPServer, how: str
) -> None:
    httpserver.expect_request("/v1/traces", method="POST").respond_with_data(b"", status=200)
    dead = f"smtp://127.0.0.1:{free_port()}?security=none&timeout=5"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[defaults]\nfrom = "cron@example.com"\n'
        + (
            f'[telemetry]\nendpoint = "{httpserver.url_for("/v1/traces")}"\n'
            if how == "config"
            else ""
        )
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": httpserver.url_for("")} if how == "environment" else {}
    r = mailrelay(
        "--config", str(cfg), "--provider", dead, "--provider", f"outbox://{tmp_path}/outbox",
        "send", "-s", SECRETS[2], SECRETS[0], input=SECRETS[3], env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    spans = received_spans(httpserver)
    assert sorted(s.name for s in spans) == ["mailrelay.attempt"] * 2 + ["mailrelay.send"]
    assert len({s.trace_id for s in spans}) == 1
    raw = b"".join(request.get_data() for request, _ in httpserver.log)
    assert not any(s.encode() in raw for s in SECRETS)  # no address, subject or body


def test_off_without_endpoint_or_telemetry(tmp_path: Path, httpserver: HTTPServer) -> None:
    r = mailrelay("--provider", f"outbox://{tmp_path}/outbox", "send", "-r", SECRETS[1],
                  "-s", "x", SECRETS[0])  # fmt: skip
    assert r.returncode == 0 and "telemetry" not in r.stderr
    assert httpserver.log == []

"""The `info` blueprint: what the service says of itself and of the providers — liveness and
readiness for orchestrators, the metrics, the API's description and its page, the status
page, and the documents of `mailrelay providers --json` and `mailrelay status --json`."""

from __future__ import annotations

from flask import Blueprint, Response

from mailrelay.serve import apipage, pages
from mailrelay.serve.answer import Answer, json_response, problem
from mailrelay.serve.metrics import CONTENT_TYPE
from mailrelay.serve.openapi import openapi_document
from mailrelay.serve.service import current_service

STATUS_PROBE_TIMEOUT = 10.0
HTML = "text/html; charset=utf-8"

info = Blueprint("info", __name__)


@info.get("/healthz")
def healthz() -> Response:
    return json_response(Answer(200, {"status": "ok"}))


@info.get("/readyz")
def readyz() -> Response:
    engine = current_service().engine
    state = engine.store.load()
    cooling = sum(1 for p in engine.providers if engine.cooling_until(state, p))
    doc = {"ready": True, "providers": len(engine.providers), "cooling": cooling}
    if cooling < len(engine.providers):
        return json_response(Answer(200, doc))
    from mailrelay.serve.answer import retry_after

    return json_response(
        problem(
            503,
            "Not ready",
            f"every provider ({cooling}) is cooling down",
            headers={"Retry-After": retry_after(engine)},
        )
    )


@info.get("/metrics")
def metrics() -> Response:
    from mailrelay.ratelimit.report import engine_metrics

    service = current_service()
    state = service.engine.store.load()
    spool = service.app.spool().stats()
    names = [p.name for p in service.engine.providers]
    page = service.metrics.page(state, spool, names)
    page += engine_metrics(state, service.engine)  # the rate-limit families
    return Response(page, content_type=CONTENT_TYPE)


@info.get("/openapi.json")
def openapi() -> Response:
    return json_response(Answer(200, openapi_document()))


@info.get("/api")
def api_page() -> Response:
    return Response(apipage.api_page(), content_type=HTML)


@info.get("/")
def status_page() -> Response:
    return Response(pages.status_page(current_service()), content_type=HTML)


@info.get("/v1/providers")
def providers() -> Response:
    from mailrelay.reports import providers_document

    return json_response(Answer(200, providers_document(current_service().app)))


@info.get("/v1/status")
def status() -> Response:
    from mailrelay.reports import status_document

    doc = status_document(current_service().app, STATUS_PROBE_TIMEOUT)
    return json_response(Answer(200, doc))

"""`POST /v1/webhooks/<provider name>`: provider events for `mailrelay serve`, as a Flask
blueprint. A request is authenticated by the provider's own scheme (mailrelay.events), not
by serve's bearer token; a forged, stale or malformed one is refused (401/400), counted in
`mailrelay_webhooks_refused_total` and never acted on. Events are handled by
mailrelay.events.handle (dedupe, suppression, audit log, alerts) and counted in
`mailrelay_events_total{provider,event}`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from mailrelay.errors import ConfigError
from mailrelay.serve.answer import Answer, problem

if TYPE_CHECKING:
    from mailrelay.events.handle import EventSinks
    from mailrelay.events.settings import WebhookSettings
    from mailrelay.events.status import StatusLog
    from mailrelay.serve.service import Service

PREFIX = "/v1/webhooks/"  # serve's bearer token is not asked for under it
webhooks = Blueprint("webhooks", __name__)


@webhooks.record_once
def _attach(setup: BlueprintSetupState) -> None:
    """Every send of this app keeps its message's status (GET /v1/messages/<id>)."""
    from mailrelay.events.status import StatusLog

    service: Service = setup.app.extensions["mailrelay"]
    app = service.app
    log = StatusLog(app.records(), keep=app.settings.message_status_for)
    service.engine.listeners.append(log)
    setup.app.extensions["mailrelay.status"] = log


def _status_log() -> StatusLog:
    log: StatusLog = current_app.extensions["mailrelay.status"]
    return log


def _service() -> Service:
    service: Service = current_app.extensions["mailrelay"]
    return service


def _settings(service: Service, name: str) -> WebhookSettings | None:
    """The webhook settings of the provider NAME, or None when it takes no webhooks."""
    from mailrelay.events import WEBHOOK_TYPES, webhook_settings

    cache: dict[str, WebhookSettings | None] = current_app.extensions.setdefault(
        "mailrelay.webhooks", {}
    )
    if name not in cache:
        spec = next((s for s in service.app.settings.providers if s.name == name), None)
        found = None
        if spec is not None and spec.type in WEBHOOK_TYPES:
            found = webhook_settings(spec)
        cache[name] = found if found is not None and found.configured else None
    return cache[name]


def _sinks(service: Service) -> EventSinks:
    sinks: EventSinks | None = current_app.extensions.get("mailrelay.event_sinks")
    if sinks is None:
        from mailrelay.events.handle import EventSinks

        app = service.app
        sinks = EventSinks(app.records(), app.suppressions())
        from mailrelay.audit import AuditLog

        sinks.audit = [log for log in app.listeners() if isinstance(log, AuditLog)]
        sinks.count = lambda e: service.metrics.count_event(e.provider, e.event)
        sinks.alert = app.alerter()
        sinks.also = [_status_log().apply]
        serve = app.settings.serve
        if serve.events_url and serve.events_secret is not None:
            from mailrelay.events.forward import Forwarder

            secret = serve.events_secret.reveal()
            sinks.forward = Forwarder(serve.events_url, secret, warn=app.warn)
        current_app.extensions["mailrelay.event_sinks"] = sinks
    return sinks


def _json(answer: Answer) -> Response:
    import json

    from mailrelay.reports import jsonable
    from mailrelay.secrets import scrub

    body = scrub(json.dumps(answer.body, default=jsonable, ensure_ascii=False))
    return Response(
        body, status=answer.status, headers=answer.headers, content_type=answer.content_type
    )


@webhooks.route(PREFIX + "<name>", methods=["HEAD"])
def check(name: str) -> Response:
    """Mandrill (and people) check that the URL answers before events are sent to it."""
    found = _settings(_service(), name) is not None
    return Response(status=200 if found else 404)


@webhooks.post(PREFIX + "<name>")
def receive(name: str) -> Response:
    from mailrelay.events import WebhookError, WebhookRequest, read_events
    from mailrelay.events.handle import handle

    service = _service()
    try:
        settings = _settings(service, name)
    except ConfigError as exc:
        return _json(problem(500, "Webhook misconfigured", str(exc)))
    if settings is None:
        detail = f"no provider named {name!r} takes webhooks (give it webhook_signing_key, "
        detail += "webhook_basic_auth or sns_topic_arns in the config)"
        return _json(problem(404, "No such webhook", detail))
    incoming = WebhookRequest(request.url, dict(request.headers), request.get_data())
    try:
        reading = read_events(incoming, settings, datetime.now(timezone.utc))
    except WebhookError as exc:
        service.metrics.count_refused(name, exc.kind)
        return _json(problem(exc.http_status, f"Webhook refused ({exc.kind})", str(exc)))
    except ConfigError as exc:  # a key in env/command/file form that cannot be read now
        return _json(problem(500, "Webhook misconfigured", str(exc)))
    done = handle(reading.events, _sinks(service))
    doc = done.to_dict()
    if reading.confirmed:
        doc["subscription"] = "confirmed"
    return _json(Answer(200, doc))


@webhooks.get("/v1/messages/<path:message_id>")
def message_status(message_id: str) -> Response:
    """What became of a message sent through this service, per recipient (bearer token)."""
    doc = _status_log().lookup(message_id)
    if doc is None:
        keep = current_app.extensions["mailrelay"].app.settings.message_status_for
        detail = f"no status kept for message {message_id!r} (kept {keep / 86400:g} days)"
        return _json(problem(404, "No such message", detail))
    doc.pop("expires", None)
    return _json(Answer(200, doc))

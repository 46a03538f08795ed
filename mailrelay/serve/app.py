"""The Flask application of `mailrelay serve` (see `create_app`), laid out as Flask's
tutorial lays one out: `create_app` builds the library's App and the worker's Service, puts
the Service in `app.extensions["mailrelay"]` and registers the blueprints — `messages`
(serve/messages.py: the sends) and `info` (serve/info.py: health, metrics, the API, the
status page and documents) — and the hooks below, which every route passes through: the
token check, the request's log line and count, and the errors as problem documents.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from mailrelay.errors import ExitCode, MailrelayError
from mailrelay.logline import escape_controls
from mailrelay.secrets import scrub
from mailrelay.serve import apipage
from mailrelay.serve.answer import json_response, problem
from mailrelay.serve.keys import INFLIGHT_MARGIN, FileKeyStore
from mailrelay.serve.probegate import FileProbeGate
from mailrelay.serve.service import Service, current_service, serve_tokens
from mailrelay.serve.webhooks import PREFIX as WEBHOOKS

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailrelay.config import Settings
    from mailrelay.policy import ProbeGate
    from mailrelay.serve.keys import KeyStore

# Routes anyone may read: liveness and readiness for orchestrators, the API's description.
PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/api"})
PAGES = frozenset({"/"})  # a browser's login: HTTP Basic, the token as password
LOG_REQUESTS = "MAILRELAY_LOG_REQUESTS"  # app.config: one line on stderr per request


def log_warning(text: str) -> None:
    """The App's warnings, in the service's log (stderr), as the CLI words them."""
    sys.stderr.write(scrub(f"mailrelay: warning: {text}") + "\n")
    sys.stderr.flush()


def key_and_probe_stores(
    settings: Settings, state: str | None, warn: Callable[[str], None]
) -> tuple[KeyStore, ProbeGate]:
    """Where Idempotency-Key claims and probe claims live: in Redis when the state is a
    Redis URL (the whole fleet shares them), else in files beside the state file."""
    from mailrelay.state import default_state_path, state_path, state_url

    url = state_url(state, os.environ, settings.state_url)
    if url is not None:
        from mailrelay.serve.fleet import fleet_stores

        return fleet_stores(
            settings, url, (settings.state_file or default_state_path()).parent, warn
        )
    here = state_path(state, os.environ, settings.state_file).parent
    probes = FileProbeGate(here / "probes", keep=settings.max_cooldown + 60)
    keys = FileKeyStore(here / "idempotency", inflight=settings.timeout + INFLIGHT_MARGIN)
    return keys, probes


def create_app(
    settings: Settings,
    *,
    state: str | None = None,
    log_file: str | None = None,
    tokens: list[str] | None = None,
    spool: str | None = None,
    log: bool = True,
) -> Flask:
    """The service for `settings`: `tokens` are the secrets a client may present (None:
    resolve [serve] tokens; an empty list: no auth, for a loopback `--no-auth`)."""
    from mailrelay.app import App
    from mailrelay.serve.info import info
    from mailrelay.serve.messages import messages
    from mailrelay.serve.webhooks import webhooks

    app = App(
        config=None,
        state=state,
        spool=spool,
        providers=(),
        debug=False,
        warn=log_warning,
        log_file=log_file,
        settings=settings,
    )
    app.providers()  # a config problem shows now, not at the first request
    keys, probes = key_and_probe_stores(settings, state, app.warn)
    service = Service(app, serve_tokens(settings) if tokens is None else tokens, keys, probes)
    # Flask's static route serves the Swagger UI files of /api (public, like /api itself)
    flask = Flask(
        "mailrelay.serve", static_folder=apipage.swagger_dist(), static_url_path=apipage.ASSETS
    )
    flask.config["MAX_CONTENT_LENGTH"] = settings.serve.max_request_bytes
    flask.config[LOG_REQUESTS] = log
    flask.extensions["mailrelay"] = service
    flask.before_request(authenticate)
    flask.after_request(count_and_log)
    flask.register_error_handler(HTTPException, http_error)
    flask.register_error_handler(Exception, internal_error)
    flask.register_blueprint(info)
    flask.register_blueprint(messages)
    flask.register_blueprint(webhooks)  # provider events: their own auth (serve/webhooks.py)
    return flask


def authenticate() -> Response | None:
    """Every route but the public ones wants a token: a Bearer one, or a browser's Basic
    password; anything else is a 401 with the challenge that fits."""
    g.started = time.perf_counter()
    path = request.path
    if (
        path in PUBLIC
        or path.startswith(apipage.ASSETS + "/")
        or path.startswith(WEBHOOKS)
        or current_service().authorized(request.headers.get("Authorization"))
    ):
        return None
    challenge = 'Basic realm="mailrelay"' if path in PAGES else 'Bearer realm="mailrelay"'
    return json_response(
        problem(
            401,
            "Unauthorized",
            "a valid token is required: 'Authorization: Bearer TOKEN'"
            + (" (a browser: any user name, the token as password)" if path in PAGES else ""),
            headers={"WWW-Authenticate": challenge},
        )
    )


def count_and_log(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    current_service().metrics.count_request(rule, response.status_code)
    if current_app.config[LOG_REQUESTS]:
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # no query string, body, subject or credentials: only what the request was, and
        # which worker process answered it; a control character (a %0A in the path) is
        # written as an escape, so one request is always one line
        what = escape_controls(f'{request.remote_addr} "{request.method} {request.path}"')
        sys.stderr.write(
            f"mailrelay[{os.getpid()}]: {what} "
            f"{response.status_code} {response.calculate_content_length() or 0} "
            f"{elapsed:.1f} ms\n"
        )
    return response


def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description or ""
    if status == 413:
        detail = (
            f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes "
            "(max_request_bytes in [serve] of the config)"
        )
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    if status in (408, 413):  # the rest of the body is not read: the connection ends
        headers["Connection"] = "close"
    return json_response(problem(status, exc.name, detail, headers=headers))


def internal_error(exc: Exception) -> Response:
    if isinstance(exc, MailrelayError):
        status = 503 if exc.exit_code in (ExitCode.CANTCREAT, ExitCode.TEMPFAIL) else 500
        return json_response(problem(status, "Service error", scrub(str(exc))))
    reason = escape_controls(f"{type(exc).__name__}: {exc}")
    sys.stderr.write(scrub(f"mailrelay: internal error: {reason}\n"))
    return json_response(problem(500, "Internal error", "internal error (see the log)"))

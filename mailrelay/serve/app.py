"""The Flask application of `mailrelay serve` (see `create_app`).

Every route is a thin front end over the library the CLI uses: msgjson parses a JSON
message exactly as `send --message` does, message.parse_eml reads a raw one as `sendmail -t`,
the engine is built as the CLI builds it (with the service's skip_cooling rule), and
mailrelay.delivery.deliver sends it as `mailrelay send` does; answer.answer_for turns the
Delivery into the HTTP answer.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from mailrelay.errors import MailrelayError, MessageError
from mailrelay.logline import escape_controls
from mailrelay.reports import jsonable
from mailrelay.secrets import scrub
from mailrelay.serve import apipage, pages
from mailrelay.serve.answer import Answer, problem, resting_answer
from mailrelay.serve.idempotency import (
    INFLIGHT_MARGIN,
    MAX_KEY_LENGTH,
    FileKeyStore,
    FileProbeGate,
    fingerprint,
)
from mailrelay.serve.metrics import CONTENT_TYPE
from mailrelay.serve.openapi import openapi_document
from mailrelay.serve.service import Service, serve_tokens
from mailrelay.telemetry import valid_traceparent

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailrelay.config import Settings
    from mailrelay.message import Message
    from mailrelay.policy import ProbeGate
    from mailrelay.serve.idempotency import KeyStore

# Routes anyone may read: liveness and readiness for orchestrators, the API's description.
PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/api"})
PAGES = frozenset({"/"})  # a browser's login: HTTP Basic, the token as password
JSON_TYPES = frozenset({"application/json"})
RAW_TYPES = frozenset({"message/rfc822"})
STATUS_PROBE_TIMEOUT = 10.0


def json_response(answer: Answer) -> Response:
    body = json.dumps(answer.body, default=jsonable, ensure_ascii=False)
    return Response(
        scrub(body), status=answer.status, headers=answer.headers, content_type=answer.content_type
    )


def log_warning(text: str) -> None:
    """The App's warnings, in the service's log (stderr), as the CLI words them."""
    sys.stderr.write(scrub(f"mailrelay: warning: {text}") + "\n")
    sys.stderr.flush()


def key_and_probe_stores(
    settings: Settings, state: str | None, warn: Callable[[str], None]
) -> tuple[KeyStore, ProbeGate]:
    """Where Idempotency-Key claims and probe claims live: in Redis when the state is a
    Redis URL (the whole fleet shares them), else in files beside the state file."""
    import os

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
    log: bool = True,
) -> Flask:
    """The service for `settings`: `tokens` are the secrets a client may present (None:
    resolve [serve] tokens; an empty list: no auth, for a loopback `--no-auth`)."""
    import os

    from mailrelay.app import App

    app = App(
        config=None,
        state=state,
        providers=(),
        debug=False,
        warn=log_warning,
        log_file=log_file,
        settings=settings,
    )
    app.providers()  # a config problem shows now, not at the first request
    if tokens is None:
        tokens = serve_tokens(settings)
    keys, probes = key_and_probe_stores(settings, state, app.warn)
    service = Service(app, tokens, keys, probes)
    # Flask's static route serves the Swagger UI files of /api (public, like /api itself)
    flask = Flask(
        "mailrelay.serve", static_folder=apipage.swagger_dist(), static_url_path=apipage.ASSETS
    )
    flask.config["MAX_CONTENT_LENGTH"] = settings.serve.max_request_bytes
    flask.extensions["mailrelay"] = service

    @flask.before_request
    def authenticate() -> Response | None:
        g.started = time.perf_counter()
        path = request.path
        if (
            path in PUBLIC
            or path.startswith(apipage.ASSETS + "/")
            or service.authorized(request.headers.get("Authorization"))
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

    @flask.after_request
    def count_and_log(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        service.metrics.count_request(rule, response.status_code)
        if log:
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

    @flask.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or ""
        if status == 413:
            detail = (
                f"the request body is larger than {settings.serve.max_request_bytes} bytes "
                "(max_request_bytes in [serve] of the config)"
            )
        headers = dict(exc.get_headers())
        headers.pop("Content-Type", None)
        if status in (408, 413):  # the rest of the body is not read: the connection ends
            headers["Connection"] = "close"
        return json_response(problem(status, exc.name, detail, headers=headers))

    @flask.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        if isinstance(exc, MailrelayError):
            status = 503 if exc.exit_code in (73, 75) else 500
            return json_response(problem(status, "Service error", scrub(str(exc))))
        reason = escape_controls(f"{type(exc).__name__}: {exc}")
        sys.stderr.write(scrub(f"mailrelay: internal error: {reason}\n"))
        return json_response(problem(500, "Internal error", "internal error (see the log)"))

    @flask.get("/healthz")
    def healthz() -> Response:
        return json_response(Answer(200, {"status": "ok"}))

    @flask.get("/readyz")
    def readyz() -> Response:
        engine = service.engine
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

    @flask.get("/metrics")
    def metrics() -> Response:
        from mailrelay.metrics import spool_stats

        state = service.engine.store.load()
        spool = spool_stats(app.spool_dir())
        names = [p.name for p in service.engine.providers]
        return Response(service.metrics.page(state, spool, names), content_type=CONTENT_TYPE)

    @flask.get("/openapi.json")
    def openapi() -> Response:
        return json_response(Answer(200, openapi_document()))

    @flask.get("/api")
    def api_page() -> Response:
        return Response(apipage.api_page(), content_type="text/html; charset=utf-8")

    @flask.get("/")
    def status_page() -> Response:
        return Response(pages.status_page(service), content_type="text/html; charset=utf-8")

    @flask.get("/v1/providers")
    def providers() -> Response:
        from mailrelay.reports import providers_document

        return json_response(Answer(200, providers_document(app)))

    @flask.get("/v1/status")
    def status() -> Response:
        from mailrelay.reports import status_document

        return json_response(Answer(200, status_document(app, STATUS_PROBE_TIMEOUT)))

    @flask.post("/v1/messages")
    def send_json() -> Response:
        return send(JSON_TYPES, parse_json)

    @flask.post("/v1/messages/raw")
    def send_raw() -> Response:
        return send(RAW_TYPES, parse_raw)

    def parse_json(body: bytes) -> Message:
        from mailrelay.message import DEFAULT_MAX_SIZE
        from mailrelay.message.msgjson import load_message

        return load_message(
            body,
            where="request body",
            base_dir=None,
            default_sender=settings.sender,
            max_size=settings.max_size or DEFAULT_MAX_SIZE,
            allow_paths=False,
        )

    def check_json(body: bytes) -> None:
        """What parse_json says of a document that is not JSON or breaks the schema."""
        from mailrelay.message.msgjson import decode_json, schema_error

        doc = decode_json(body, "request body", encoding="utf-8-sig")
        error = schema_error(doc, where="request body")
        if error is not None:
            raise error

    def parse_raw(body: bytes) -> Message:
        from mailrelay.message import DEFAULT_MAX_SIZE, parse_eml

        return parse_eml(
            body,
            where="request body",
            extract=True,
            default_sender=settings.sender,
            max_size=settings.max_size or DEFAULT_MAX_SIZE,
        )

    def send(types: frozenset[str], parse: Any) -> Response:
        if request.mimetype not in types:
            given = request.mimetype or "none"
            return json_response(
                problem(
                    415,
                    "Unsupported Media Type",
                    f"Content-Type {given} is not accepted here; send {', '.join(sorted(types))}",
                )
            )
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _valid_key(key):
            return json_response(
                problem(
                    400,
                    "Bad Idempotency-Key",
                    f"Idempotency-Key: 1 to {MAX_KEY_LENGTH} visible ASCII characters",
                )
            )
        body = read_body(settings.serve.max_request_bytes, settings.serve.body_timeout)
        if key is None:
            return json_response(deliver_body(body, parse, None))
        print_ = fingerprint(request.method.encode(), request.path.encode(), body)
        seen = service.keys.begin(key, print_)
        if seen.kind == "busy":
            return json_response(
                problem(409, "Conflict", "a request with this Idempotency-Key is still in flight")
            )
        if seen.kind == "mismatch":
            return json_response(
                problem(
                    422,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used with another request body",
                )
            )
        if seen.kind == "done":
            assert seen.answer is not None
            replay = seen.answer
            return json_response(
                Answer(
                    replay.status, replay.body, {**replay.headers, "Idempotent-Replayed": "true"}
                )
            )
        try:
            answer = deliver_body(body, parse, key)
        except BaseException:
            service.keys.release(key)
            raise
        if answer.status == 503 or answer.status < 200 or 400 <= answer.status < 422:
            service.keys.release(key)  # "try again later" or the client's own fault: not kept
        else:
            service.keys.finish(key, print_, answer)
        return json_response(answer)

    def deliver_body(body: bytes, parse: Any, key: str | None) -> Answer:
        from mailrelay.delivery import deliver
        from mailrelay.message.msgjson import SchemaError
        from mailrelay.serve.answer import answer_for

        engine = service.engine
        queue = app.queueing() if settings.on_failure == "queue" else None
        try:
            # every provider resting, none due for its probe, nothing to queue into: a send
            # now would try none, so answer before building the message (the engine's own
            # rule); a JSON body is still checked against the schema, as a 400 says at once
            wait = engine.resting(engine.store.load()) if queue is None else None
            if wait is not None:
                if parse is parse_json:
                    check_json(body)
                return resting_answer(engine, wait)
            message: Message = parse(body)
        except SchemaError as exc:
            return problem(
                400,
                "The message does not follow the schema",
                str(exc),
                errors=[{"path": exc.path, "message": exc.reason}],
            )
        except MessageError as exc:
            return problem(400, "Bad message", str(exc))
        message.idempotency = key
        message.traceparent = valid_traceparent(request.headers.get("traceparent"))
        return answer_for(engine, deliver(engine, message, queue=queue))

    return flask


def read_body(limit: int, timeout: float) -> bytes:
    """The whole request body, at most `limit` bytes. One given with Content-Length is
    refused before it is read when it says more (werkzeug); a streamed one (chunked, no
    length) is read to its end, and refused with 413 as soon as it passes the limit: never
    cut there. A client that does not send its body in `timeout` seconds gets 408 (the
    worker's socket reads end at that deadline: mailrelay/serve/worker.py)."""
    from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    environ = request.environ
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: no body (werkzeug)
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = stream.read(min(64 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge()
            if length is not None and size >= length:
                break
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive in {timeout:g} s (body_timeout in [serve])"
        ) from None
    return b"".join(chunks)


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all("!" <= c <= "~" for c in key)

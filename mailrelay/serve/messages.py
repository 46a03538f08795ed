"""The `messages` blueprint: `POST /v1/messages` (a JSON message, parsed by msgjson exactly
as `send --message` does) and `POST /v1/messages/raw` (a whole RFC 5322 message, read as
`sendmail -t` reads it), each sent through mailrelay.delivery.deliver as `mailrelay send`
sends; answer.answer_for turns the Delivery into the HTTP answer. An Idempotency-Key holds
the answer of its first request (serve/keys.py, or serve/fleet.py's Redis store)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from mailrelay.errors import MessageError
from mailrelay.serve.answer import Answer, json_response, problem, resting_answer
from mailrelay.serve.keys import MAX_KEY_LENGTH, fingerprint
from mailrelay.serve.service import current_service
from mailrelay.telemetry import valid_traceparent

if TYPE_CHECKING:
    from mailrelay.config import Settings
    from mailrelay.message import Message

JSON_TYPES = frozenset({"application/json"})
RAW_TYPES = frozenset({"message/rfc822"})

messages = Blueprint("messages", __name__)

Parse = Callable[["Settings", bytes], "Message"]


@messages.post("/v1/messages")
def send_json() -> Response:
    return send(JSON_TYPES, parse_json)


@messages.post("/v1/messages/raw")
def send_raw() -> Response:
    return send(RAW_TYPES, parse_raw)


def parse_json(settings: Settings, body: bytes) -> Message:
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


def parse_raw(settings: Settings, body: bytes) -> Message:
    from mailrelay.message import DEFAULT_MAX_SIZE, parse_eml

    return parse_eml(
        body,
        where="request body",
        extract=True,
        default_sender=settings.sender,
        max_size=settings.max_size or DEFAULT_MAX_SIZE,
    )


def send(types: frozenset[str], parse: Parse) -> Response:
    """One send: the media type and the Idempotency-Key checked, the body read, then the
    message delivered, or the answer a key already holds replayed."""
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
    service = current_service()
    conf = service.app.settings.serve
    body = read_body(conf.max_request_bytes, conf.body_timeout)
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
            Answer(replay.status, replay.body, {**replay.headers, "Idempotent-Replayed": "true"})
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


def deliver_body(body: bytes, parse: Parse, key: str | None) -> Answer:
    from mailrelay.delivery import deliver
    from mailrelay.message.msgjson import SchemaError
    from mailrelay.serve.answer import answer_for

    service = current_service()
    engine = service.engine
    settings = service.app.settings
    queue = service.app.queueing() if settings.on_failure == "queue" else None
    try:
        # every provider resting, none due for its probe, nothing to queue into: a send
        # now would try none, so answer before building the message (the engine's own
        # rule); a JSON body is still checked against the schema, as a 400 says at once
        wait = engine.resting(engine.store.load()) if queue is None else None
        if wait is not None:
            if parse is parse_json:
                check_json(body)
            return resting_answer(engine, wait)
        message: Message = parse(settings, body)
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
    suppressions = service.app.suppressions()
    return answer_for(engine, deliver(engine, message, queue=queue, suppressions=suppressions))


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

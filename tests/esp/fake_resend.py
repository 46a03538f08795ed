"""A loopback Resend API.

The send body is validated against the official OAS (resend/resend-openapi `SendEmailRequest`,
compact in schemas/resend.json); errors use the {statusCode, name, message} shape and the names and
statuses of Resend's docs (resend.com/docs/api-reference/errors). `Idempotency-Key` is
honoured the way the docs describe: a replay with the same payload returns the first id,
the same key with another payload is a 409.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from email.header import decode_header, make_header
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from mailrelay.providers.resend import TAG_VALUE
from tests.esp.fakebase import FakeESP, Scenario, json_response, schema_errors

API_KEY = "re_fakeFull_5kT9wQ2m"  # a full-access key
SENDING_KEY = "re_fakeSend_8vB3nR7c"  # a sending-only key: may not list domains
SCHEMA = "resend"  # tests/esp/schemas/resend.json
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_NAMED = re.compile(r"^(?P<name>.*?)\s*<(?P<email>[^<>]+)>$")
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_ADDRESS_HELP = (
    "The email address needs to follow the `email@example.com` or "
    "`Name <email@example.com>` format."
)
# docs (api-reference/rate-limit): on every response, in seconds; 2 requests/s by default
_RATE_HEADERS = {"ratelimit-limit": "2", "ratelimit-remaining": "1", "ratelimit-reset": "1"}


def error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"statusCode": status, "name": name, "message": message}, headers)


def _parse_address(value: str) -> tuple[str, str] | None:
    """("Name", "email") from "email" or "Name <email>" (quoted or RFC 2047 names too)."""
    value = value.strip()
    m = _NAMED.match(value)
    name, email = (m["name"].strip(), m["email"].strip()) if m else ("", value)
    if not _EMAIL.match(email):
        return None
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if "=?" in name:
        name = str(make_header(decode_header(name)))
    return name, email


def _mailbox(value: str) -> str:
    parsed = _parse_address(value)
    assert parsed is not None
    name, email = parsed
    return f"{name} <{email}>" if name else email


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class FakeResend(FakeESP):
    type = "resend"
    secrets = (API_KEY, SENDING_KEY)
    credential_keys = ("api_key",)

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            lambda: error(403, "invalid_api_key", "API key is invalid"),
            Outcome.PROVIDER,
            "API key is invalid",
        ),
        "missing_key": Scenario(
            lambda: error(401, "missing_api_key", "Missing API key in the authorization header"),
            Outcome.PROVIDER,
            "Missing API key",
        ),
        # a real 422 for a malformed recipient
        "invalid": Scenario(
            lambda: error(422, "validation_error", f"Invalid `to` field. {_ADDRESS_HELP}"),
            Outcome.PERMANENT,
            "Invalid `to` field",
        ),
        "invalid_from": Scenario(
            lambda: error(422, "invalid_from_address", f"Invalid `from` field. {_ADDRESS_HELP}"),
            Outcome.PERMANENT,
            "Invalid `from` field",
        ),
        # docs: 403 validation_error = testing-mode restriction / unverified domain
        "unverified_domain": Scenario(
            lambda: error(
                403,
                "validation_error",
                "You can only send testing emails to your own email address "
                "(owner@example.com). To send emails to other recipients, please verify a "
                "domain at resend.com/domains, and change the from address to an email "
                "using this domain.",
            ),
            Outcome.PROVIDER,
            "please verify a domain",
        ),
        # docs: 429 with ratelimit-* headers; ratelimit-reset is the wait in seconds
        "rate_limit": Scenario(
            lambda: error(
                429,
                "rate_limit_exceeded",
                "Too many requests. You can only make 2 requests per second. See rate limit "
                "response headers for more information. Or contact support to increase rate "
                "limit.",
                {"ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "1"},
            ),
            Outcome.TRANSIENT,
            "Too many requests",
            retry_after=1,
        ),
        # the same with the documented retry-after header, which wins over ratelimit-reset
        "rate_limit_retry_after": Scenario(
            lambda: error(
                429,
                "rate_limit_exceeded",
                "Too many requests. You can only make 2 requests per second.",
                {"ratelimit-reset": "1", "retry-after": "2"},
            ),
            Outcome.TRANSIENT,
            "Too many requests",
            retry_after=2,
        ),
        "daily_quota": Scenario(
            lambda: error(
                429,
                "daily_quota_exceeded",
                "You have reached your daily email sending quota.",
            ),
            Outcome.PROVIDER,
            "daily email sending quota",
            limited="quota",
        ),
        "security_error": Scenario(
            lambda: error(451, "security_error", "The email payload contain invalid characters"),
            Outcome.PROVIDER,
            "invalid characters",
        ),
        "concurrent_idempotent": Scenario(
            lambda: error(
                409,
                "concurrent_idempotent_requests",
                "Same idempotency key used while original request is still in progress.",
            ),
            Outcome.AMBIGUOUS,
            "still in progress",
        ),
        "server_error": Scenario(
            lambda: error(500, "internal_server_error", "An unexpected error occurred."),
            Outcome.TRANSIENT,
            "An unexpected error occurred",
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.idempotency: dict[str, tuple[Any, str]] = {}  # key -> (payload, id), 24 h in Resend
        self.replays = 0  # requests answered from the idempotency store (not sent again)

    def config(self, base_url: str) -> dict[str, Any]:
        return {"type": "resend", "name": "resend", "base_url": base_url, "api_key": API_KEY}

    def url(self, base_url: str) -> str:
        return f"resend://{quote(API_KEY, safe='')}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        routes = {"/emails": "POST", "/domains": "GET"}
        path = request.path.rstrip("/")
        if path not in routes:
            return error(404, "not_found", "The requested endpoint does not exist.")
        if request.method != routes[path]:
            return error(405, "method_not_allowed", "Method is not allowed for the requested path.")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return error(401, "missing_api_key", "Missing API key in the authorization header")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if token not in (API_KEY, SENDING_KEY):
            return error(403, "invalid_api_key", "API key is invalid")
        if path == "/domains":
            if token == SENDING_KEY:
                return error(
                    401, "restricted_api_key", "This API key is restricted to only send emails"
                )
            return json_response(
                200,
                {
                    "object": "list",
                    "has_more": False,
                    "data": [
                        {
                            "id": "d91cd9bd-1176-453e-8fc1-35364d380206",
                            "name": "example.com",
                            "status": "verified",
                            "created_at": "2026-04-26 20:21:26.347412+00",
                            "region": "us-east-1",
                        }
                    ],
                },
                _RATE_HEADERS,
            )
        return self._send(request)

    def _send(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            return error(400, "validation_error", "Invalid JSON body")
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 256:
            return error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        try:
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return error(400, "validation_error", "Invalid JSON body")
        problem = self._validate(payload)
        if problem is not None:
            return problem
        if key is not None and key in self.idempotency:
            first, email_id = self.idempotency[key]
            if first != payload:
                return error(
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload.",
                )
            # not sent again; recorded, so the stable key can be checked, and counted
            self.replays += 1
            self.sent.append({"body": payload, "idempotency_key": key})
            self.last_message_id = email_id
            return json_response(200, {"id": email_id}, _RATE_HEADERS)
        email_id = str(uuid.uuid4())
        if key is not None:
            self.idempotency[key] = (payload, email_id)
        self.sent.append({"body": payload, "idempotency_key": key or ""})
        self.last_message_id = email_id
        return json_response(200, {"id": email_id}, _RATE_HEADERS)

    def _validate(self, payload: Any) -> Response | None:
        if not isinstance(payload, dict):
            return error(422, "validation_error", "The request body must be a JSON object.")
        for field in ("from", "to", "subject"):
            if field not in payload:
                return error(422, "missing_required_field", f"Missing `{field}` field.")
        problems = schema_errors(SCHEMA, payload)
        if problems:
            return error(422, "validation_error", problems[0])
        # the error text a resend-ruby user logged (resend/resend-ruby PR #5)
        if "html" not in payload and "text" not in payload and "template" not in payload:
            return error(422, "missing_required_field", "Missing `html` or `text` field.")
        if _parse_address(payload["from"]) is None:
            return error(422, "invalid_from_address", f"Invalid `from` field. {_ADDRESS_HELP}")
        for field in ("to", "cc", "bcc", "reply_to"):
            for value in _as_list(payload.get(field)):
                if _parse_address(value) is None:
                    return error(
                        422, "validation_error", f"Invalid `{field}` field. {_ADDRESS_HELP}"
                    )
        for att in payload.get("attachments") or []:
            if "content" not in att and "path" not in att:
                return error(
                    422, "invalid_attachment", "Attachment must have either a `content` or `path`."
                )
            if "content" in att:
                try:
                    base64.b64decode(att["content"], validate=True)
                except (binascii.Error, ValueError):
                    return error(422, "invalid_attachment", "Attachment content must be base64.")
        for tag in payload.get("tags") or []:
            if not _TAG_TEXT.match(str(tag.get("name", ""))) or not _TAG_TEXT.match(
                str(tag.get("value", ""))
            ):
                return error(
                    422,
                    "validation_error",
                    "Tags should only contain ASCII letters (a-z, A-Z), numbers (0-9), "
                    "underscores (_), or dashes (-).",
                )
        return None

    # --- what the contract test compares -----------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        body = payload["body"]
        attachments, inline = [], []
        for att in body.get("attachments") or []:
            data = base64.b64decode(att["content"])
            ctype = att.get("content_type", "application/octet-stream")
            if att.get("content_id"):
                inline.append((att["content_id"], ctype, data))
            else:
                attachments.append((att["filename"], ctype, data))
        tags: list[str] = []
        metadata: dict[str, str] = {}
        for tag in body.get("tags") or []:
            # the adapter's encoding: a bare tag is name=<tag>, value="true"
            if tag["value"] == TAG_VALUE:
                tags.append(tag["name"])
            else:
                metadata[tag["name"]] = tag["value"]
        return {
            "from": _mailbox(body["from"]),
            **{f: [_mailbox(v) for v in _as_list(body.get(f))] for f in ("to", "cc", "bcc")},
            "reply_to": [_mailbox(v) for v in _as_list(body.get("reply_to"))],
            "subject": body.get("subject") or "",
            "text": body.get("text") or "",
            "html": body.get("html") or "",
            "headers": dict(body.get("headers") or {}),
            "attachments": attachments,
            "inline": inline,
            "tags": tags,
            "metadata": metadata,
            "idempotency_key": payload["idempotency_key"],
        }


FAKE_CLASS = FakeResend

"""A loopback Mandrill (Mailchimp Transactional) API.

Follows the official OAS 3.1 spec (mailchimp/mailchimp-client-lib-codegen; compact in
schemas/mandrill.json): the request body is validated against `MessagesSendRequest`, reading
the `allOf` + `ApiKey` `additionalProperties: false` quirk as applying to the union of the
branches' properties (see the schema's $comment). Errors use the spec's `Error` payload
{status, code, name, message}.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response, schema_errors

API_KEY = "md-fake-key-7Q2xZpL0"
SCHEMA = "mandrill"  # tests/esp/schemas/mandrill.json
# The properties of the two `allOf` branches of MessagesSendRequest (ApiKey + the rest).
SEND_PROPERTIES = frozenset({"key", "message", "async", "ip_pool", "send_at"})
# Any API version segment is tolerated by the service; `.json` is the classic suffix.
_ROUTE = re.compile(r"^/api/1\.\d+/(?P<method>[a-z0-9-]+/[a-z0-9-]+)(?:\.json)?/?$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def error(status: int, name: str, message: str, code: int = -1) -> Response:
    """The spec's Error payload."""
    return json_response(
        status, {"status": "error", "code": code, "name": name, "message": message}
    )


def _validation(detail: dict[str, Any]) -> Response:
    # ValidationError's example in the spec; HTTP 500 as older clients observed
    return error(500, "ValidationError", f"Validation error: {json.dumps(detail)}", -2)


def _mailbox(name: str | None, email: str) -> str:
    return f"{name} <{email}>" if name else email


def _decode(name: str) -> str:
    return str(make_header(decode_header(name))) if "=?" in name else name


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _results(*rows: tuple[str, str, str | None]) -> Response:
    """A 200 per-recipient result array (MessagesSendResponse)."""
    return json_response(
        200,
        [
            {"email": email, "status": status, "reject_reason": reason, "_id": uuid.uuid4().hex}
            for email, status, reason in rows
        ],
    )


class FakeMandrill(FakeESP):
    type = "mandrill"
    secrets = (API_KEY,)
    credential_keys = ("api_key",)

    scenarios: ClassVar[dict[str, Scenario]] = {
        # InvalidKeyError example; the OAS answers 401 (components/responses/Unauthorized)
        "auth": Scenario(
            lambda: error(401, "Invalid_Key", "Invalid API key", 401),
            Outcome.PROVIDER,
            "Invalid API key",
        ),
        # the same error as older clients saw it: HTTP 500 for every error
        "auth_as_500": Scenario(
            lambda: error(500, "Invalid_Key", "Invalid API key", 401),
            Outcome.PROVIDER,
            "Invalid API key",
        ),
        # ValidationError example in the spec, with the HTTP 500 older clients saw
        "invalid": Scenario(
            lambda: _validation({"email": "Not a valid email address"}),
            Outcome.PERMANENT,
            "Not a valid email address",
        ),
        # RequestLimitExceededError example (components/responses/RateLimited)
        "rate_limit": Scenario(
            lambda: error(429, "RequestLimitExceeded", "Too Many Requests attempted recently", 429),
            Outcome.TRANSIENT,
            "Too Many Requests attempted recently",
        ),
        # ServerError example
        "server_error": Scenario(
            lambda: error(
                500,
                "GeneralError",
                "An unknown error occurred processing your request. Please try again later.",
            ),
            Outcome.TRANSIENT,
            "An unknown error occurred",
        ),
        # MessageServiceUnavailableError example
        "service_unavailable": Scenario(
            lambda: error(503, "ServiceUnavailable", "Service Temporarily Unavailable", -2),
            Outcome.TRANSIENT,
            "Service Temporarily Unavailable",
        ),
        # PaymentRequiredError example (402)
        "payment_required": Scenario(
            lambda: error(
                402,
                "PaymentRequired",
                "Email scheduling is only available for accounts with a positive balance.",
                10,
            ),
            Outcome.PROVIDER,
            "positive balance",
        ),
        # MessageSubaccountNotFoundError example (404)
        "unknown_subaccount": Scenario(
            lambda: error(
                404, "Unknown_Subaccount", "No subaccount exists with the id customer-123", 12
            ),
            Outcome.PROVIDER,
            "No subaccount exists",
        ),
        # 200, but every recipient on the rejection list (MessagesSendResult.reject_reason)
        "all_rejected": Scenario(
            lambda: _results(
                ("rcpt@example.com", "rejected", "hard-bounce"),
                ("other@example.com", "rejected", "unsub"),
            ),
            Outcome.PERMANENT,
            "hard-bounce",
        ),
        # 200, every recipient rejected because the sending domain is not verified/signed
        "unsigned": Scenario(
            lambda: _results(("rcpt@example.com", "rejected", "unsigned")),
            Outcome.PROVIDER,
            "unsigned",
        ),
        # 200, every recipient address invalid
        "all_invalid": Scenario(
            lambda: _results(("not-an-address", "invalid", None)),
            Outcome.PERMANENT,
            "invalid",
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.rejects: dict[str, str] = {}  # address -> reject_reason (the rejection list)

    def config(self, base_url: str) -> dict[str, Any]:
        return {"type": "mandrill", "name": "mandrill", "base_url": base_url, "api_key": API_KEY}

    def url(self, base_url: str) -> str:
        return f"mandrill://{quote(API_KEY, safe='')}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        route = _ROUTE.match(request.path)
        if not route or route["method"] not in ("messages/send", "users/ping2"):
            return error(404, "Unknown_Method", f"Unknown method {request.path!r}")
        if request.method != "POST":  # every call is a POST with a JSON body
            return error(405, "ValidationError", "Requests must be made with POST", -2)
        if request.mimetype != "application/json":
            return _validation({"body": "expected a JSON body"})
        try:
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return _validation({"body": "Could not parse the JSON request body"})
        if not isinstance(payload, dict) or not payload.get("key"):
            return error(500, "ValidationError", "You must specify a key value", -1)
        if payload["key"] != API_KEY:
            return error(401, "Invalid_Key", "Invalid API key", 401)
        if route["method"] == "users/ping2":
            return json_response(200, {"PING": "PONG!"})
        return self._send(payload)

    def _send(self, payload: dict[str, Any]) -> Response:
        problems = [
            e
            for e in schema_errors(SCHEMA, payload)
            # ApiKey's additionalProperties:false, read over the union of the allOf branches
            if not (e.startswith("(body):") and "Additional properties" in e)
        ]
        extra = sorted(set(payload) - SEND_PROPERTIES)
        if extra:
            problems.append(f"(body): unexpected {', '.join(extra)}")
        if problems:
            return _validation({"message": problems[0]})
        msg = payload["message"]
        if not _EMAIL.match(msg.get("from_email") or ""):
            return _validation(
                {"message": {"from_email": "An email address must contain a single @"}}
            )
        if not msg.get("to"):
            return _validation({"message": {"to": "Please enter an array"}})
        for image in msg.get("images") or []:
            if not str(image.get("type", "")).startswith("image/"):
                return _validation({"message": {"images": "type must start with image/"}})
        for part in (*(msg.get("attachments") or []), *(msg.get("images") or [])):
            if _b64(part.get("content")) is None:
                return _validation({"message": {"attachments": "content must be base64"}})
        for tag in msg.get("tags") or []:
            if tag.startswith("_"):
                return _validation({"message": {"tags": f"tag {tag} is reserved"}})
        results = []
        for rcpt in msg["to"]:
            email = rcpt.get("email", "")
            entry: dict[str, Any] = {"email": email, "_id": uuid.uuid4().hex}
            if not _EMAIL.match(email):
                entry.update(status="invalid", reject_reason=None)
            elif email.lower() in self.rejects:
                entry.update(status="rejected", reject_reason=self.rejects[email.lower()])
            else:
                entry.update(status="sent", reject_reason=None)
            results.append(entry)
        accepted = [r for r in results if r["status"] == "sent"]
        if accepted:
            self.sent.append(payload)
            self.last_message_id = accepted[0]["_id"]
        return json_response(200, results)

    # --- what the contract test compares -----------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        msg = payload["message"]
        by_type: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
        for rcpt in msg.get("to") or []:
            by_type[rcpt.get("type") or "to"].append(_mailbox(rcpt.get("name"), rcpt["email"]))
        headers = dict(msg.get("headers") or {})
        reply_to = headers.pop("Reply-To", "")
        return {
            "from": _mailbox(msg.get("from_name"), msg["from_email"]),
            **by_type,
            "reply_to": [_mailbox(_decode(n), e) for n, e in getaddresses([reply_to]) if e]
            if reply_to
            else [],
            "subject": msg.get("subject") or "",
            "text": msg.get("text") or "",
            "html": msg.get("html") or "",
            "headers": headers,
            "attachments": [
                (a["name"], a["type"], base64.b64decode(a["content"]))
                for a in msg.get("attachments") or []
            ],
            "inline": [
                (i["name"], i["type"], base64.b64decode(i["content"]))
                for i in msg.get("images") or []
            ],
            "tags": list(msg.get("tags") or []),
            "metadata": dict(msg.get("metadata") or {}),
        }


FAKE_CLASS = FakeMandrill

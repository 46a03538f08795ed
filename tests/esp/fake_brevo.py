"""A loopback Brevo transactional email API (`/v3/smtp/email`, `/v3/account`).

Brevo's spec is hosted only (api.brevo.com/v3/swagger_definition_v3.yml) and not kept here, so
the checks follow Brevo's docs (developers.brevo.com): the `api-key`
header, `{code, message}` errors, 201 `{messageId}`, `x-sib-ratelimit-*` headers, the
`X-Sib-Sandbox: drop` and `idempotencyKey` entries of the JSON `headers`, and the attachment
extension list. Exact error texts are the ones commonly reported by Brevo users [3P].
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from mailrelay.providers.brevo import (
    ALLOWED_EXTENSIONS,
    IDEMPOTENCY_HEADER,
    METADATA_HEADER,
    SANDBOX_HEADER,
)
from tests.esp.fakebase import FakeESP, Scenario, json_response

API_KEY = "xkeysib-fake0c4e9b2a71d8-Qw3rTy"
PREFIX = "/v3"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
# docs "Rate limit headers": on every rate-limited endpoint; reset in seconds
_RATE_HEADERS = {
    "x-sib-ratelimit-limit": "1000",
    "x-sib-ratelimit-remaining": "999",
    "x-sib-ratelimit-reset": "1",
}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"code": code, "message": message}, headers)


def _mailbox(obj: dict[str, Any]) -> str:
    return f"{obj['name']} <{obj['email']}>" if obj.get("name") else str(obj["email"])


def _bad_mailbox(obj: Any, where: str) -> Response | None:
    if not isinstance(obj, dict) or "email" not in obj:
        return error(400, "missing_parameter", f"email is missing in {where}")
    if not isinstance(obj["email"], str) or not _EMAIL.match(obj["email"]):
        return error(400, "invalid_parameter", f"email is not valid in {where}")
    if "name" in obj and not isinstance(obj["name"], str):
        return error(400, "invalid_parameter", f"name is not valid in {where}")
    return None


class FakeBrevo(FakeESP):
    type = "brevo"
    secrets = (API_KEY,)
    credential_keys = ("api_key",)

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            lambda: error(401, "unauthorized", "Key not found"), Outcome.PROVIDER, "Key not found"
        ),
        "invalid": Scenario(
            lambda: error(400, "invalid_parameter", "email is not valid in to"),
            Outcome.PERMANENT,
            "email is not valid in to",
        ),
        "missing_parameter": Scenario(
            lambda: error(400, "missing_parameter", "subject is missing"),
            Outcome.PERMANENT,
            "subject is missing",
        ),
        # Brevo's error codes: 402 not_enough_credits = the account cannot send
        "not_enough_credits": Scenario(
            lambda: error(402, "not_enough_credits", "Not enough credits to send the email"),
            Outcome.PROVIDER,
            "Not enough credits",
        ),
        "permission_denied": Scenario(
            lambda: error(
                403,
                "permission_denied",
                "Unable to send email. Your SMTP account is not yet activated. Please contact "
                "us at contact@brevo.com to request activation",
            ),
            Outcome.PROVIDER,
            "SMTP account is not yet activated",
        ),
        "account_under_validation": Scenario(
            lambda: error(400, "account_under_validation", "Your account is under validation"),
            Outcome.PROVIDER,
            "under validation",
        ),
        # docs: 429 with x-sib-ratelimit-* headers; no Retry-After (the body is assumed)
        "rate_limit": Scenario(
            lambda: error(
                429,
                "too_many_requests",
                "Too many requests, please retry later",
                {
                    "x-sib-ratelimit-limit": "1000",
                    "x-sib-ratelimit-remaining": "0",
                    "x-sib-ratelimit-reset": "3",
                },
            ),
            Outcome.TRANSIENT,
            "Too many requests",
            retry_after=3,
        ),
        "server_error": Scenario(
            lambda: error(500, "internal_error", "Internal server error"),
            Outcome.TRANSIENT,
            "Internal server error",
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.idempotency: dict[str, str] = {}  # idempotencyKey -> messageId (TTL 15-30 min)
        self.replays = 0  # requests answered from the idempotency store (not sent again)

    def config(self, base_url: str) -> dict[str, Any]:
        return {"type": "brevo", "name": "brevo", "base_url": base_url, "api_key": API_KEY}

    def url(self, base_url: str) -> str:
        return f"brevo://{quote(API_KEY, safe='')}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        routes = {f"{PREFIX}/smtp/email": "POST", f"{PREFIX}/account": "GET"}
        path = request.path.rstrip("/")
        if path not in routes:
            return error(404, "not_found", "Invalid route")
        key = request.headers.get("api-key")
        if not key or key != API_KEY:
            return error(401, "unauthorized", "Key not found")
        if request.method != routes[path]:
            return error(405, "method_not_allowed", "Method not allowed")
        if path.endswith("/account"):
            return json_response(
                200,
                {
                    "email": "ops@example.com",
                    "firstName": "Ops",
                    "lastName": "Team",
                    "companyName": "Example",
                    "plan": [{"type": "free", "credits": 300, "creditsType": "sendLimit"}],
                    "relay": {"enabled": True, "data": {"relay": "smtp-relay.brevo.com"}},
                },
                _RATE_HEADERS,
            )
        return self._send(request)

    def _send(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            return error(400, "bad_request", "Content-Type must be application/json")
        try:
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return error(400, "bad_request", "Input must be a valid JSON object")
        problem = self._validate(payload)
        if problem is not None:
            return problem
        headers = payload.get("headers") or {}
        key = headers.get(IDEMPOTENCY_HEADER)
        if key and key in self.idempotency:
            # "processed only once": answered with the first id, nothing sent [assumed shape];
            # recorded, so the stable key can be checked, and counted
            self.replays += 1
            self.sent.append(payload)
            self.last_message_id = self.idempotency[key]
            return json_response(201, {"messageId": self.last_message_id}, _RATE_HEADERS)
        self.counter += 1
        message_id = f"<20261122091403.{self.counter:011d}@smtp-relay.mailin.fr>"
        if key:
            self.idempotency[key] = message_id
        self.sent.append(payload)  # a sandboxed send is recorded too, flagged by its header
        self.last_message_id = message_id
        return json_response(201, {"messageId": message_id}, _RATE_HEADERS)

    def _validate(self, payload: Any) -> Response | None:
        if not isinstance(payload, dict):
            return error(400, "bad_request", "Input must be a valid JSON object")
        if "sender" not in payload:
            return error(400, "missing_parameter", "sender is missing")
        bad = _bad_mailbox(payload["sender"], "sender")
        if bad:
            return bad
        if not isinstance(payload.get("to"), list) or not payload["to"]:
            return error(400, "missing_parameter", "to is missing")
        for field in ("to", "cc", "bcc"):
            value = payload.get(field, [])
            if not isinstance(value, list):
                return error(400, "invalid_parameter", f"{field} is not valid")
            for obj in value:
                bad = _bad_mailbox(obj, field)
                if bad:
                    return bad
        if "replyTo" in payload:
            bad = _bad_mailbox(payload["replyTo"], "replyTo")
            if bad:
                return bad
        if not isinstance(payload.get("subject"), str) or not payload["subject"]:
            return error(400, "missing_parameter", "subject is missing")
        if "htmlContent" not in payload and "textContent" not in payload:
            return error(400, "missing_parameter", "htmlContent or textContent is missing")
        for field in ("htmlContent", "textContent"):
            if field in payload and not isinstance(payload[field], str):
                return error(400, "invalid_parameter", f"{field} is not valid")
        for att in payload.get("attachment", []):
            name = att.get("name") if isinstance(att, dict) else None
            if not isinstance(name, str) or "content" not in att:
                return error(400, "missing_parameter", "attachment name or content is missing")
            ext = name.rpartition(".")[2].lower() if "." in name else ""
            if ext not in ALLOWED_EXTENSIONS:
                return error(400, "invalid_parameter", f"Unsupported file extension: {name}")
            try:
                base64.b64decode(att["content"], validate=True)
            except (binascii.Error, ValueError):
                return error(400, "invalid_parameter", "attachment content is not valid base64")
        tags = payload.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return error(400, "invalid_parameter", "tags is not valid")
        headers = payload.get("headers", {})
        # anymail: header values must be strings (Brevo refuses numbers since 11/2022)
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return error(400, "invalid_parameter", "headers is not valid")
        return None

    # --- what the contract test compares -----------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        headers = dict(payload.get("headers") or {})
        sandbox = headers.pop(SANDBOX_HEADER, None) == "drop"
        idempotency_key = headers.pop(IDEMPOTENCY_HEADER, "")
        custom = headers.pop(METADATA_HEADER, None)
        return {
            "from": _mailbox(payload["sender"]),
            **{f: [_mailbox(o) for o in payload.get(f) or []] for f in ("to", "cc", "bcc")},
            "reply_to": [_mailbox(payload["replyTo"])] if payload.get("replyTo") else [],
            "subject": payload.get("subject") or "",
            "text": payload.get("textContent") or "",
            "html": payload.get("htmlContent") or "",
            "headers": headers,
            # Brevo takes no content type: it guesses one from the name, as done here
            "attachments": [
                (
                    a["name"],
                    mimetypes.guess_type(a["name"])[0] or "application/octet-stream",
                    base64.b64decode(a["content"]),
                )
                for a in payload.get("attachment") or []
            ],
            "inline": [],
            "tags": list(payload.get("tags") or []),
            "metadata": json.loads(custom) if custom else {},
            "sandbox": sandbox,
            "idempotency_key": idempotency_key,
        }


FAKE_CLASS = FakeBrevo

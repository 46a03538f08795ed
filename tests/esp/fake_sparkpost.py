"""A loopback SparkPost Transmissions API (no stored OpenAPI spec: checks follow the API
Blueprint in SparkPost/developers.sparkpost.com, `content/api/{index,transmissions,account}.apib`).
"""

from __future__ import annotations

import base64
import binascii
import json
from email.utils import formataddr, getaddresses
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response

API_KEY = "sp-fake-key-3f9a0c"
PREFIX = "/api/v1"


def _errors(status: int, *errors: dict[str, str]) -> Response:
    return json_response(status, {"errors": list(errors)})


def _err(message: str, description: str = "", code: str = "") -> dict[str, str]:
    out = {"message": message}
    if description:
        out["description"] = description
    if code:
        out["code"] = code
    return out


def _render(name: str, email: str) -> str:
    return formataddr((name, email)) if name else email


def _parse_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [_render(n, e) for n, e in getaddresses([value]) if e]


def _valid_email(value: object) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in value)


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


class FakeSparkpost(FakeESP):
    type = "sparkpost"
    secrets = (API_KEY,)
    credential_keys = ("api_key",)

    scenarios: ClassVar[dict[str, Scenario]] = {
        # index.apib: 401 = bad key; body as seen by client libraries [3P]
        "auth": Scenario(
            lambda: _errors(401, _err("Unauthorized.")), Outcome.PROVIDER, "Unauthorized."
        ),
        "forbidden": Scenario(
            lambda: _errors(403, _err("Forbidden.")), Outcome.PROVIDER, "Forbidden."
        ),
        # index.apib "Example Error"
        "invalid": Scenario(
            lambda: _errors(
                422,
                _err("required field is missing", "content object or template_id required", "1400"),
            ),
            Outcome.PERMANENT,
            "content object or template_id required",
        ),
        # transmissions.apib "Send Inline Content" 400 response
        "unverified_domain": Scenario(
            lambda: _errors(
                400, _err("Invalid domain", "Unconfigured or unverified sending domain.", "7001")
            ),
            Outcome.PROVIDER,
            "Unconfigured or unverified sending domain",
        ),
        # transmissions.apib "Sending Limits": 420, nothing in the transmission is sent
        "sending_limit": Scenario(
            lambda: _errors(420, _err("Exceed Sending Limit (hourly)", code="2101")),
            Outcome.PROVIDER,
            "Exceed Sending Limit (hourly)",
            limited="quota",
        ),
        # index.apib: 429, wait 1-5 s; no body or header documented (this body is assumed)
        "rate_limit": Scenario(
            lambda: _errors(429, _err("Too many requests")), Outcome.TRANSIENT, "Too many requests"
        ),
        "too_large": Scenario(
            lambda: _errors(413, _err("Request Entity Too Large")),
            Outcome.REJECTED,
            "Request Entity Too Large",
        ),
        "server_error": Scenario(
            lambda: _errors(503, _err("Service Unavailable")),
            Outcome.TRANSIENT,
            "Service Unavailable",
        ),
        # transmissions.apib "Send a Template" 200: every recipient rejected = not sent
        "all_rejected": Scenario(
            lambda: json_response(
                200,
                {
                    "errors": [
                        {
                            "message": "transmission created, but with validation errors",
                            "code": "2000",
                        }
                    ],
                    "results": {
                        "rcpt_to_errors": [
                            _err(
                                "required field is missing",
                                "address.email is required for each recipient",
                                "1400",
                            )
                        ],
                        "total_rejected_recipients": 1,
                        "total_accepted_recipients": 0,
                        "id": "11668787484950530",
                    },
                },
            ),
            Outcome.PERMANENT,
            "address.email is required for each recipient",
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.account_status = "active"

    def config(self, base_url: str) -> dict[str, Any]:
        return {"type": "sparkpost", "name": "sparkpost", "base_url": base_url, "api_key": API_KEY}

    def url(self, base_url: str) -> str:
        return f"sparkpost://{API_KEY}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        # index.apib "Authentication": the raw key, or Basic with the key and an empty password
        value = request.headers.get("Authorization", "")
        if value == API_KEY:
            return True
        basic = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
        return value == basic

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/")  # index.apib: trailing slashes are ignored
        routes = {f"{PREFIX}/transmissions": "POST", f"{PREFIX}/account": "GET"}
        if path not in routes:
            return _errors(404, _err("resource not found", f"Resource not found: {path}", "1600"))
        if not self._authorized(request):
            return _errors(401, _err("Unauthorized."))
        if request.method != routes[path]:
            return _errors(405, _err("Method Not Allowed"))
        if path.endswith("/account"):
            return json_response(
                200,
                {"results": {"customer_id": 102938, "status": self.account_status}},
            )
        return self._transmit(request)

    def _transmit(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            return _errors(415, _err("Unsupported Media Type"))
        try:
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return _errors(400, _err("invalid data format/type", "Invalid JSON", "1300"))
        problem = self._validate(payload)
        if problem:
            return _errors(422, _err("required field is missing", problem, "1400"))
        bad = [
            str(r["address"].get("email"))
            for r in payload["recipients"]
            if not _valid_email(r["address"].get("email"))
        ]
        if bad and len(bad) == len(payload["recipients"]):
            # transmissions.apib: recipient errors come back in a 200 with rcpt_to_errors
            # (code 1300 "invalid data format/type" for a malformed address is assumed)
            return json_response(
                200,
                {
                    "errors": [
                        {
                            "message": "transmission created, but with validation errors",
                            "code": "2000",
                        }
                    ],
                    "results": {
                        "rcpt_to_errors": [
                            _err("invalid data format/type", f"Invalid email address: {b}", "1300")
                            for b in bad
                        ],
                        "total_rejected_recipients": len(bad),
                        "total_accepted_recipients": 0,
                        "id": "0",
                    },
                },
            )
        self.sent.append(payload)
        self.last_message_id = str(7000000000000000 + len(self.sent))
        accepted = len(payload["recipients"]) - len(bad)
        return json_response(
            200,
            {
                "results": {
                    "total_rejected_recipients": len(bad),
                    "total_accepted_recipients": accepted,
                    "id": self.last_message_id,
                }
            },
        )

    def _validate(self, payload: Any) -> str | None:
        """What the real service refuses with 422 code 1400 (the description is returned)."""
        if not isinstance(payload, dict):
            return "request body must be a JSON object"
        recipients = payload.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            return "recipients is required"
        for r in recipients:
            if not isinstance(r, dict) or not isinstance(r.get("address"), dict):
                return "address is required for each recipient"
            tags = r.get("tags", [])
            if not isinstance(tags, list) or len(tags) > 10:
                return "tags must be an array of at most 10 strings"
        content = payload.get("content")
        if not isinstance(content, dict):
            return "content object or template_id required"
        sender = content.get("from")
        email = sender.get("email") if isinstance(sender, dict) else sender
        if not isinstance(email, str) or not email:
            return "content.from is required"
        if not isinstance(content.get("subject"), str):
            return "content.subject is required"
        if not (content.get("text") or content.get("html")):
            return "At least one of 'text' or 'html' needs to exist in 'content'"
        headers = content.get("headers", {})
        if not isinstance(headers, dict):
            return "content.headers must be an object"
        forbidden = {
            "subject",
            "from",
            "to",
            "reply-to",
            "content-type",
            "content-transfer-encoding",
        }
        for name in headers:
            if name.lower() in forbidden:
                return f"header {name} is not allowed in content.headers"
        for key in ("attachments", "inline_images"):
            items = content.get(key, [])
            if not isinstance(items, list):
                return f"content.{key} must be an array"
            for item in items:
                if not isinstance(item, dict) or not all(
                    isinstance(item.get(f), str) and item.get(f) for f in ("name", "type", "data")
                ):
                    return f"name, type and data are required for each of content.{key}"
                if _b64(item["data"]) is None:
                    return f"content.{key} data must be base64 without line breaks"
        metadata = payload.get("metadata", {})
        if not isinstance(metadata, dict):
            return "metadata must be an object"
        options = payload.get("options", {})
        if not isinstance(options, dict) or not isinstance(options.get("sandbox", False), bool):
            return "options.sandbox must be a boolean"
        return None

    # --- for the tests -----------------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        content = payload["content"]
        sender = content["from"]
        if isinstance(sender, dict):
            sender_str = _render(sender.get("name", ""), sender["email"])
        else:
            sender_str = _parse_list(sender)[0]
        headers = dict(content.get("headers", {}))
        cc_header = None
        for name in list(headers):
            if name.lower() == "cc":
                cc_header = headers.pop(name)
        recipients = payload["recipients"]
        to = _parse_list(recipients[0]["address"].get("header_to")) if recipients else []
        cc = _parse_list(cc_header)
        shown = {getaddresses([a])[0][1].lower() for a in (*to, *cc)}
        bcc = [
            _render(r["address"].get("name", ""), r["address"]["email"])
            for r in recipients
            if r["address"]["email"].lower() not in shown
        ]
        return {
            "from": sender_str,
            "to": to,
            "cc": cc,
            "bcc": bcc,
            "reply_to": _parse_list(content.get("reply_to")),
            "subject": content.get("subject", ""),
            "text": content.get("text", ""),
            "html": content.get("html", ""),
            "headers": headers,
            "attachments": [
                (a["name"], a["type"], base64.b64decode(a["data"]))
                for a in content.get("attachments", [])
            ],
            "inline": [
                (a["name"], a["type"], base64.b64decode(a["data"]))
                for a in content.get("inline_images", [])
            ],
            "tags": list(recipients[0].get("tags", [])) if recipients else [],
            "metadata": dict(payload.get("metadata", {})),
            "sandbox": bool(payload.get("options", {}).get("sandbox", False)),
        }


FAKE_CLASS = FakeSparkpost

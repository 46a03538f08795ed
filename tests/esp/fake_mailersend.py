"""A loopback MailerSend API (no official OpenAPI spec: checks follow the Go SDK
mailersend/mailersend-go `email.go`/`api_quota.go`, developers.mailersend.com "General API
resources" and the help page "REST API response codes"; `#MS…` codes as seen in public code).
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from datetime import datetime, timedelta, timezone
from email.utils import formataddr
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response

API_TOKEN = "mlsn.fake-token-7c2e41"


def _next_midnight() -> str:
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    return f"{tomorrow.isoformat()}T00:00:00Z"


def _quota_headers(remaining: int = 99) -> dict[str, str]:
    # seen on real replies: x-apiquota-reset is the next UTC midnight in ISO 8601
    return {
        "x-apiquota-remaining": str(remaining),
        "x-apiquota-reset": _next_midnight(),
        "x-ratelimit-limit": "60",
        "x-ratelimit-remaining": "59",
    }


def _invalid(errors: dict[str, list[str]], status: int = 422) -> Response:
    """Laravel's validation reply: the first message (and how many more) plus every field."""
    messages = [m for ms in errors.values() for m in ms]
    first = messages[0]
    if len(messages) > 1:
        n = len(messages) - 1
        first += f" (and {n} more error{'s' if n > 1 else ''})"
    return json_response(status, {"message": first, "errors": errors}, _quota_headers())


def _valid_email(value: object) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in value)


def _render(person: dict[str, Any]) -> str:
    name = person.get("name") or ""
    return formataddr((name, person["email"])) if name else str(person["email"])


def _suppressed_reply(
    kind: str, message: str, emails: list[str], headers: dict[str, str]
) -> Response:
    # help page "REST API response codes": 202 with JSON warnings when recipients are suppressed
    body = {
        "message": "There are some warnings for your request.",
        "warnings": [
            {
                "type": kind,
                "message": message,
                "recipients": [
                    {"email": e, "name": None, "reasons": ["hard_bounced"]} for e in emails
                ],
            }
        ],
    }
    return json_response(202, body, headers)


class FakeMailersend(FakeESP):
    type = "mailersend"
    secrets = (API_TOKEN,)
    credential_keys = ("api_token",)

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            lambda: json_response(401, {"message": "Unauthenticated."}),
            Outcome.PROVIDER,
            "Unauthenticated.",
        ),
        "forbidden": Scenario(
            lambda: json_response(403, {"message": "This action is unauthorized."}),
            Outcome.PROVIDER,
            "This action is unauthorized.",
        ),
        "invalid": Scenario(
            lambda: _invalid({"to.0.email": ["The to.0.email must be a valid email address."]}),
            Outcome.PERMANENT,
            "The to.0.email must be a valid email address.",
        ),
        "unverified_domain": Scenario(
            lambda: _invalid(
                {
                    "from.email": [
                        "The from.email domain must be verified in your account to send emails. "
                        "#MS42207"
                    ]
                }
            ),
            Outcome.PROVIDER,
            "#MS42207",
        ),
        "trial_limit": Scenario(
            lambda: _invalid(
                {"to": ["You have reached trial account unique recipients limit. #MS42225"]}
            ),
            Outcome.PROVIDER,
            "#MS42225",
        ),
        # custom headers are gated by plan (Enterprise); the code is public, the text assumed
        "headers_plan": Scenario(
            lambda: _invalid(
                {"headers": ["Custom headers are available on Enterprise plans only. #MS42235"]}
            ),
            Outcome.REJECTED,
            "#MS42235",
        ),
        "all_suppressed": Scenario(
            lambda: _suppressed_reply(
                "ALL_SUPPRESSED",
                "All of the recipients provided have been suppressed.",
                ["to@example.com"],
                _quota_headers(),
            ),
            Outcome.PERMANENT,
            "All of the recipients provided have been suppressed.",
        ),
        "rate_limit": Scenario(
            lambda: json_response(
                429,
                {"message": "Too Many Attempts."},
                {**_quota_headers(), "x-ratelimit-remaining": "0"},
            ),
            Outcome.TRANSIENT,
            "Too Many Attempts.",
        ),
        # developers.mailersend.com "Daily request quota": the 429 of a spent daily quota
        "daily_quota": Scenario(
            lambda: json_response(
                429,
                {"message": "Your account reached its API daily quota limit. #MS42901"},
                _quota_headers(0),
            ),
            Outcome.TRANSIENT,
            "#MS42901",
            limited="quota",
        ),
        # developers.mailersend.com: 421 "Service isn't available, try again later"
        "maintenance": Scenario(
            lambda: json_response(421, {"message": "Service Unavailable"}),
            Outcome.TRANSIENT,
            "Service Unavailable",
        ),
        "server_error": Scenario(
            lambda: json_response(500, {"message": "Server Error"}),
            Outcome.TRANSIENT,
            "Server Error",
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.enterprise = True  # False: custom headers get the plan refusal (#MS42235)
        self.suppressed: set[str] = set()  # recipients on the account's suppression list
        self.quota_remaining = 99

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "type": "mailersend",
            "name": "mailersend",
            "base_url": base_url,
            "api_token": API_TOKEN,
        }

    def url(self, base_url: str) -> str:
        return f"mailersend://{API_TOKEN}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {API_TOKEN}":
            return json_response(401, {"message": "Unauthenticated."})
        path = request.path.rstrip("/")
        if path == "/v1/api-quota" and request.method == "GET":
            return json_response(
                200,
                {"quota": 100, "remaining": self.quota_remaining, "reset": _next_midnight()},
                _quota_headers(self.quota_remaining),
            )
        if path == "/v1/email" and request.method == "POST":
            return self._send(request)
        if path in ("/v1/api-quota", "/v1/email"):
            return json_response(
                405, {"message": f"The {request.method} method is not supported for this route."}
            )
        return json_response(404, {"message": "Not Found"})

    def _send(self, request: Request) -> Response:
        try:
            payload = json.loads(request.get_data(as_text=True)) if request.is_json else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _invalid({"from.email": ["The from.email field is required."]})
        errors = self._validate(payload)
        if errors:
            return _invalid(errors)
        recipients = [p["email"] for k in ("to", "cc", "bcc") for p in payload.get(k, [])]
        blocked = [e for e in recipients if e.lower() in self.suppressed]
        headers = _quota_headers(self.quota_remaining)
        if blocked and len(blocked) == len(recipients):
            # ALL_SUPPRESSED: nothing is sent, and there is no X-Message-Id
            return _suppressed_reply(
                "ALL_SUPPRESSED",
                "All of the recipients provided have been suppressed.",
                blocked,
                headers,
            )
        self.sent.append(payload)
        self.last_message_id = f"{0x6688C67CF7B7FA47ED95CB00 + len(self.sent):024x}"
        headers["X-Message-Id"] = self.last_message_id
        if blocked:
            return _suppressed_reply(
                "SOME_SUPPRESSED", "Some of the recipients have been suppressed.", blocked, headers
            )
        # a real success: 202 with an empty text/html body
        return Response("", status=202, headers=headers, content_type="text/html; charset=UTF-8")

    def _validate(self, p: dict[str, Any]) -> dict[str, list[str]]:
        """Laravel-style field errors for what the real endpoint refuses."""
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        sender = p.get("from")
        if not isinstance(sender, dict) or not sender.get("email"):
            add("from.email", "The from.email field is required.")
        elif not _valid_email(sender["email"]):
            add("from.email", "The from.email must be a valid email address.")
        if not isinstance(p.get("to"), list) or not p["to"]:
            add("to", "The to field is required.")
        for key in ("to", "cc", "bcc"):
            people = p.get(key, [])
            if not isinstance(people, list):
                add(key, f"The {key} must be an array.")
                continue
            for i, person in enumerate(people):
                if not isinstance(person, dict) or not _valid_email(person.get("email")):
                    add(f"{key}.{i}.email", f"The {key}.{i}.email must be a valid email address.")
        reply_to = p.get("reply_to")
        if reply_to is not None and (
            not isinstance(reply_to, dict) or not _valid_email(reply_to.get("email"))
        ):
            add("reply_to.email", "The reply_to.email must be a valid email address.")
        if not p.get("template_id"):
            if not isinstance(p.get("subject"), str) or not p["subject"]:
                add("subject", "The subject field is required when template id is not present.")
            if not (p.get("text") or p.get("html")):
                add(
                    "text",
                    "The text field is required when none of html / template id are present.",
                )
        tags = p.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            add("tags", "The tags must be an array.")
        elif len(tags) > 5:
            add("tags", "The tags must not have more than 5 items.")
        headers = p.get("headers")
        if headers is not None:
            if not self.enterprise:
                add("headers", "Custom headers are available on Enterprise plans only. #MS42235")
            elif not isinstance(headers, list) or not all(
                isinstance(h, dict)
                and isinstance(h.get("name"), str)
                and isinstance(h.get("value"), str)
                for h in headers
            ):
                add("headers", "The headers must be an array of name and value.")
        attachments = p.get("attachments", [])
        if not isinstance(attachments, list):
            add("attachments", "The attachments must be an array.")
            attachments = []
        for i, a in enumerate(attachments):
            if not isinstance(a, dict):
                add(f"attachments.{i}", "The attachment must be an object.")
                continue
            if not a.get("filename"):
                add(f"attachments.{i}.filename", f"The attachments.{i}.filename field is required.")
            try:
                base64.b64decode(str(a.get("content") or ""), validate=True)
            except (binascii.Error, ValueError):
                add(f"attachments.{i}.content", f"The attachments.{i}.content must be base64.")
            if not a.get("content"):
                add(f"attachments.{i}.content", f"The attachments.{i}.content field is required.")
            if a.get("disposition", "attachment") not in ("attachment", "inline"):
                add(
                    f"attachments.{i}.disposition",
                    f"The selected attachments.{i}.disposition is invalid.",
                )
            if a.get("disposition") == "inline" and not a.get("id"):
                add(
                    f"attachments.{i}.id",
                    f"The attachments.{i}.id field is required when disposition is inline.",
                )
        if "metadata" in p:  # there is no such field
            add("metadata", "The metadata field is prohibited.")
        return errors

    # --- for the tests -----------------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        def ctype(name: str) -> str:  # MailerSend decides the type from the filename
            guessed, encoding = mimetypes.guess_type(name)
            return guessed if guessed and not encoding else "application/octet-stream"

        atts = payload.get("attachments", [])
        return {
            "from": _render(payload["from"]),
            "to": [_render(x) for x in payload.get("to", [])],
            "cc": [_render(x) for x in payload.get("cc", [])],
            "bcc": [_render(x) for x in payload.get("bcc", [])],
            "reply_to": [_render(payload["reply_to"])] if payload.get("reply_to") else [],
            "subject": payload.get("subject", ""),
            "text": payload.get("text", ""),
            "html": payload.get("html", ""),
            "headers": {h["name"]: h["value"] for h in payload.get("headers", [])},
            "attachments": [
                (a["filename"], ctype(a["filename"]), base64.b64decode(a["content"]))
                for a in atts
                if a.get("disposition", "attachment") == "attachment"
            ],
            "inline": [
                (a["id"], ctype(a["filename"]), base64.b64decode(a["content"]))
                for a in atts
                if a.get("disposition") == "inline"
            ],
            "tags": list(payload.get("tags", [])),
            "metadata": {},
        }


FAKE_CLASS = FakeMailersend

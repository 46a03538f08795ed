"""A loopback Postmark: POST /email and GET /server.

Behaviour follows Postmark's Swagger (OpenAPI 3 conversion in kylecarhart/runner, compact in
schemas/postmark.json)
and developer docs: `X-Postmark-Server-Token` auth (HTTP 401 with ErrorCode 10 when wrong or
missing), JSON in and out, 422 `{"ErrorCode", "Message"}` for what it refuses, 200
`{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}`. Error texts are the ones
Postmark's SDKs and django-anymail's tests quote.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timezone
from email.utils import formataddr, getaddresses
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response, schema_errors

SCHEMA = "postmark"  # tests/esp/schemas/postmark.json
_ADDR = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_JSON_TYPES = ("application/json", "text/json", "text/x-json")
MAX_RECIPIENTS = 50


def pm_error(status: int, code: int, message: str) -> Response:
    return json_response(status, {"ErrorCode": code, "Message": message})


def _split(value: str | None) -> list[tuple[str, str]]:
    return getaddresses([value]) if value else []


def _fmt(pairs: list[tuple[str, str]]) -> list[str]:
    return [formataddr((n, e)) if n else e for n, e in pairs]


class FakePostmark(FakeESP):
    type = "postmark"
    TOKEN = "pm-fake-server-token-5d2e"
    secrets: ClassVar[tuple[str, ...]] = (TOKEN,)
    credential_keys: ClassVar[tuple[str, ...]] = ("server_token",)

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "type": "postmark",
            "name": "postmark",
            "base_url": base_url,
            "server_token": self.TOKEN,
        }

    def url(self, base_url: str) -> str:
        return f"postmark://{self.TOKEN}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path not in ("/email", "/server"):
            return Response("Not Found", 404, content_type="text/plain")  # body undocumented
        token = request.headers.get("X-Postmark-Server-Token")
        if not token:
            return pm_error(
                401,
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please add "
                "a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            )
        if token != self.TOKEN:
            return pm_error(
                401,
                10,
                "The Server Token you provided in the X-Postmark-Server-Token request header "
                "was invalid. Please verify that you are using a valid token.",
            )
        if request.path == "/server":
            if request.method != "GET":
                return Response("Method Not Allowed", 405, content_type="text/plain")
            return json_response(
                200,
                {
                    "ID": 1,
                    "Name": "Staging Testing",
                    "ApiTokens": [self.TOKEN],
                    "Color": "red",
                    "SmtpApiActivated": True,
                    "RawEmailEnabled": False,
                    "TrackOpens": False,
                    "TrackLinks": "None",
                    "InboundSpamThreshold": 0,
                },
            )
        if request.method != "POST":
            return Response("Method Not Allowed", 405, content_type="text/plain")
        return self._send(request)

    def _send(self, request: Request) -> Response:
        accept = request.headers.get("Accept", "")
        if request.mimetype not in _JSON_TYPES or not any(t in accept for t in _JSON_TYPES):
            return pm_error(
                422,
                409,
                "Content-Type and Accept headers must be set to application/json, text/json, "
                "or text/x-json.",
            )
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return pm_error(422, 402, "The request body is not valid JSON.")
        problems = schema_errors(SCHEMA, body)
        if problems:
            return pm_error(422, 403, f"Incompatible JSON: {problems[0]}")
        if not body.get("From"):
            return pm_error(422, 300, "Invalid 'From' value.")
        senders = _split(body["From"])
        if len(senders) != 1 or not _ADDR.match(senders[0][1]):
            return pm_error(422, 300, f"Invalid 'From' address: '{body['From']}'.")
        recipients = 0
        for key in ("To", "Cc", "Bcc", "ReplyTo"):
            for _name, addr in _split(body.get(key)):
                if not _ADDR.match(addr):
                    return pm_error(422, 300, f"Invalid '{key}' address: '{addr}'.")
                recipients += key != "ReplyTo"
        if not recipients:
            return pm_error(422, 300, "Zero recipients specified")
        if recipients > MAX_RECIPIENTS:
            return pm_error(
                422, 300, f"Maximum of {MAX_RECIPIENTS} recipients allowed per email message"
            )
        if not (body.get("TextBody") or body.get("HtmlBody")):
            return pm_error(422, 300, "Provide either email TextBody or HtmlBody or both.")
        metadata = body.get("Metadata", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return pm_error(422, 300, "Invalid metadata content.")
        self.sent.append(body)
        self.last_message_id = str(uuid.uuid4())
        return json_response(
            200,
            {
                "To": body.get("To", ""),
                "SubmittedAt": datetime.now(timezone.utc).isoformat(),
                "MessageID": self.last_message_id,
                "ErrorCode": 0,
                "Message": "OK",
            },
        )

    # --- what the tests compare --------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        atts = payload.get("Attachments", [])
        return {
            "from": _fmt(_split(payload.get("From")))[0],
            "to": _fmt(_split(payload.get("To"))),
            "cc": _fmt(_split(payload.get("Cc"))),
            "bcc": _fmt(_split(payload.get("Bcc"))),
            "reply_to": _fmt(_split(payload.get("ReplyTo"))),
            "subject": payload.get("Subject", ""),
            "text": payload.get("TextBody"),
            "html": payload.get("HtmlBody"),
            "headers": {h["Name"]: h["Value"] for h in payload.get("Headers", [])},
            "attachments": [
                (a["Name"], a["ContentType"], base64.b64decode(a["Content"]))
                for a in atts
                if not a.get("ContentID")
            ],
            "inline": [
                (
                    a["ContentID"].removeprefix("cid:"),
                    a["ContentType"],
                    base64.b64decode(a["Content"]),
                )
                for a in atts
                if a.get("ContentID")
            ],
            "tags": [payload["Tag"]] if payload.get("Tag") else [],
            "metadata": dict(payload.get("Metadata", {})),
        }

    # --- documented errors (developer/api/overview: HTTP statuses and ErrorCodes) ---------

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            response=lambda: pm_error(
                401,
                10,
                "The Server Token you provided in the X-Postmark-Server-Token request header "
                "was invalid. Please verify that you are using a valid token.",
            ),
            outcome=Outcome.PROVIDER,
            words="Server Token you provided",
        ),
        # code 10 also arrives inside a 422 (Postmark PHP client tests)
        "token_422": Scenario(
            response=lambda: pm_error(
                422,
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please add "
                "a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            ),
            outcome=Outcome.PROVIDER,
            words="No Account or Server API tokens",
        ),
        "invalid": Scenario(
            response=lambda: pm_error(422, 300, "Invalid 'To' address: 'bob@@example'."),
            outcome=Outcome.PERMANENT,
            words="Invalid 'To' address",
        ),
        "invalid_json": Scenario(
            response=lambda: pm_error(422, 402, "The request body is not valid JSON."),
            outcome=Outcome.PERMANENT,
            words="not valid JSON",
        ),
        "forbidden_attachment": Scenario(
            response=lambda: pm_error(
                422, 411, "Forbidden attachment type: 'setup.exe' is not an allowed file type."
            ),
            outcome=Outcome.PERMANENT,
            words="Forbidden attachment type",
        ),
        # every recipient is suppressed: permanent for that recipient, do not fail over
        "inactive_recipient": Scenario(
            response=lambda: pm_error(
                422,
                406,
                "You tried to send to recipient(s) that have been marked as inactive. Found "
                "inactive addresses: bob@example.com. Inactive recipients are ones that have "
                "generated a hard bounce, a spam complaint, or a manual suppression.",
            ),
            outcome=Outcome.PERMANENT,
            words="marked as inactive",
        ),
        "sender_not_found": Scenario(
            response=lambda: pm_error(
                422,
                400,
                "The 'From' address you supplied (ops@example.com) is not a Sender Signature "
                "on your account. Please add and confirm this address in order to be able to "
                "use it in the 'From' field of your messages.",
            ),
            outcome=Outcome.PROVIDER,
            words="is not a Sender Signature",
        ),
        "sender_not_confirmed": Scenario(
            response=lambda: pm_error(422, 401, "Sender signature not confirmed."),
            outcome=Outcome.PROVIDER,
            words="Sender signature not confirmed",
        ),
        "not_allowed": Scenario(
            response=lambda: pm_error(
                422, 405, "Not allowed to send: you have run out of credits."
            ),
            outcome=Outcome.PROVIDER,
            words="run out of credits",
        ),
        "account_pending": Scenario(
            response=lambda: pm_error(422, 412, "Account is pending approval."),
            outcome=Outcome.PROVIDER,
            words="pending",
        ),
        "may_not_send": Scenario(
            response=lambda: pm_error(422, 413, "Account may not send."),
            outcome=Outcome.PROVIDER,
            words="may not send",
        ),
        # HTTP 413: over 10 MB; other providers take more, so not permanent
        "too_large": Scenario(
            response=lambda: Response("Request Entity Too Large", 413, content_type="text/plain"),
            outcome=Outcome.REJECTED,
            words="Request Entity Too Large",
        ),
        # support article: an HTML 403 without ErrorCode comes from the network layer
        "firewall": Scenario(
            response=lambda: Response(
                "<html><head><title>403 Forbidden</title></head><body><center>"
                "<h1>403 Forbidden</h1></center></body></html>",
                403,
                content_type="text/html",
            ),
            outcome=Outcome.PROVIDER,
            words="403 Forbidden",
        ),
        "rate_limit": Scenario(
            response=lambda: pm_error(429, 429, "Rate limit exceeded."),
            outcome=Outcome.TRANSIENT,
            words="Rate limit exceeded",
        ),
        "server_error": Scenario(
            response=lambda: pm_error(500, 0, "Internal Server Error"),
            outcome=Outcome.TRANSIENT,
            words="Internal Server Error",
        ),
        "unavailable": Scenario(
            response=lambda: Response(
                "Service Unavailable: the API is offline for maintenance",
                503,
                content_type="text/plain",
            ),
            outcome=Outcome.TRANSIENT,
            words="offline for maintenance",
        ),
    }


FAKE_CLASS = FakePostmark

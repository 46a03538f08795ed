"""A loopback Mailjet Send API v3.1 (no OpenAPI spec exists: checks follow the "Send API v3.1"
guide and its error table, mailjet/api-documentation `guides/_send-api.md` and the stored
dev.mailjet.com copy).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from email.utils import formataddr
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response

API_KEY = "mj-public-5a1c77"
SECRET_KEY = "mj-private-9e7d31"

# "Send API errors": headers that have a property of their own give send-0011
_FORBIDDEN_HEADERS = frozenset(
    h.lower()
    for h in ("From", "Sender", "Subject", "To", "Cc", "Bcc", "Return-Path", "Reply-To",
              "Delivered-To", "DKIM-Signature", "DomainKey-Status", "Received-SPF",
              "Authentication-Results", "Received", "X-Mailjet-Prio", "X-Mailjet-Debug",
              "User-Agent", "X-Mailer", "X-MJ-CustomID", "X-MJ-EventPayload", "X-MJ-Vars",
              "X-MJ-TemplateErrorDeliver", "X-MJ-TemplateErrorReporting",
              "X-MJ-TemplateLanguage", "X-Mailjet-TrackOpen", "X-Mailjet-TrackClick",
              "X-MJ-TemplateID", "X-MJ-WorkflowID", "X-Feedback-Id", "X-Mailjet-Segmentation",
              "List-Id", "X-MJ-MID", "X-MJ-ErrorMessage", "Date", "X-CSA-Complaints",
              "Message-Id", "X-Mailjet-Campaign", "X-MJ-StatisticsContactsListID")
)  # fmt: skip


def _error(code: str, message: str, related: list[str], status: int = 400) -> dict[str, Any]:
    return {
        "ErrorIdentifier": str(uuid.uuid4()),
        "ErrorCode": code,
        "StatusCode": status,
        "ErrorMessage": message,
        "ErrorRelatedTo": related,
    }


def _message_errors(http_status: int, *errors: dict[str, Any]) -> Response:
    return json_response(http_status, {"Messages": [{"Status": "error", "Errors": list(errors)}]})


def _global(status: int, code: str | None, message: str) -> Response:
    body: dict[str, Any] = {"ErrorIdentifier": str(uuid.uuid4()), "StatusCode": status}
    if code:
        body["ErrorCode"] = code
    body["ErrorMessage"] = message
    return json_response(status, body)


AUTH_FAILURE = (
    "API key authentication/authorization failure. You may be unauthorized to access the API "
    "or your API key may be expired. Visit API keys management section to check your keys."
)  # the 401 body in mailjet/mailjet-apiv3-go's tests
NO_CONTENT = 'At least "HTMLPart", "TextPart" or "TemplateID" must be provided.'


def _valid_email(value: object) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in value)


def _render(person: dict[str, Any]) -> str:
    name = person.get("Name") or ""
    return formataddr((name, person["Email"])) if name else str(person["Email"])


class FakeMailjet(FakeESP):
    type = "mailjet"
    secrets = (API_KEY, SECRET_KEY)
    credential_keys = ("api_key", "secret_key")

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            lambda: json_response(
                401,
                {
                    "ErrorIdentifier": str(uuid.uuid4()),
                    "StatusCode": 401,
                    "ErrorMessage": AUTH_FAILURE,
                },
            ),
            Outcome.PROVIDER,
            "API key authentication/authorization failure",
        ),
        "suspended": Scenario(
            lambda: _global(401, "mj-0001", "API key is suspended."),  # wording assumed
            Outcome.PROVIDER,
            "mj-0001",
        ),
        # the error table's own example (send-0003)
        "invalid": Scenario(
            lambda: _message_errors(400, _error("send-0003", NO_CONTENT, ["HTMLPart", "TextPart"])),
            Outcome.PERMANENT,
            "must be provided",
        ),
        "invalid_address": Scenario(
            lambda: _message_errors(
                400, _error("mj-0013", '"bad@" is an invalid email address.', ["To[0].Email"])
            ),
            Outcome.PERMANENT,
            "is an invalid email address",
        ),
        # send-0008: the From address is not an authorized sender (a config problem). The
        # HTTP status of a per-message error is not documented; 400 here, StatusCode 403.
        "unauthorized_sender": Scenario(
            lambda: _message_errors(
                400,
                _error(
                    "send-0008",
                    '"ops@example.com" is not an authorized sender email address for your account.',
                    ["From"],
                    403,
                ),
            ),
            Outcome.PROVIDER,
            "is not an authorized sender",
        ),
        # "messages are processed independently": a 200 can carry a message in error
        "status_error_200": Scenario(
            lambda: _message_errors(200, _error("send-0003", NO_CONTENT, ["HTMLPart", "TextPart"])),
            Outcome.PERMANENT,
            "must be provided",
        ),
        "forbidden_header": Scenario(
            lambda: _message_errors(
                400,
                _error(
                    "send-0011",
                    'The header "X-MJ-CustomID" is forbidden, please use the dedicated property.',
                    ['Headers["X-MJ-CustomID"]'],
                ),
            ),
            Outcome.REJECTED,
            "send-0011",
        ),
        "too_large": Scenario(
            lambda: _global(400, "mj-0011", "Payload size exceeded."),  # wording assumed
            Outcome.REJECTED,
            "mj-0011",
        ),
        "bad_json": Scenario(
            lambda: _global(
                400, "mj-0002", "Malformed JSON, please review the syntax and properties types."
            ),
            Outcome.PERMANENT,
            "Malformed JSON",
        ),
        # mailjet-apiv3-nodejs issue #178: the 429 is an HTML page, no reset header
        "rate_limit": Scenario(
            lambda: Response(
                "<html><body><h1>429 Too Many Requests</h1>\nYou have sent too many requests "
                "in a given amount of time.\n</body></html>\n",
                status=429,
                content_type="text/html",
            ),
            Outcome.TRANSIENT,
            "429 Too Many Requests",
        ),
        # "When the HTTP status is 500, you will see ErrorIdentifier"
        "server_error": Scenario(
            lambda: _global(500, None, "Internal Server Error"),
            Outcome.TRANSIENT,
            "Internal Server Error",
        ),
    }

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "type": "mailjet",
            "name": "mailjet",
            "base_url": base_url,
            "api_key": API_KEY,
            "secret_key": SECRET_KEY,
        }

    def url(self, base_url: str) -> str:
        return f"mailjet://{API_KEY}:{SECRET_KEY}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or (auth.username, auth.password)
            != (
                API_KEY,
                SECRET_KEY,
            )
        ):
            return json_response(
                401,
                {
                    "ErrorIdentifier": str(uuid.uuid4()),
                    "StatusCode": 401,
                    "ErrorMessage": AUTH_FAILURE,
                },
            )
        path = request.path.rstrip("/")
        if path == "/v3/REST/apikey" and request.method == "GET":
            return json_response(
                200,
                {
                    "Count": 1,
                    "Data": [
                        {"APIKey": API_KEY, "IsActive": True, "IsMaster": True, "Name": "main"}
                    ],
                    "Total": 1,
                },
            )
        if path == "/v3.1/send" and request.method == "POST":
            return self._send(request)
        if path in ("/v3/REST/apikey", "/v3.1/send"):
            return _global(405, None, "Method not allowed")
        return json_response(
            404, {"ErrorInfo": "", "ErrorMessage": "Object not found", "StatusCode": 404}
        )

    def _send(self, request: Request) -> Response:
        try:
            if request.mimetype != "application/json":
                raise ValueError("not JSON")
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return _global(
                400, "mj-0002", "Malformed JSON, please review the syntax and properties types."
            )
        if not isinstance(payload, dict) or not isinstance(payload.get("Messages"), list):
            return _global(400, "mj-0003", "Messages is mandatory but missing from the input")
        if not payload["Messages"]:
            return _global(400, "mj-0007", "Messages must not be empty")
        if not isinstance(payload.get("SandboxMode", False), bool):
            return _global(400, "mj-0004", 'Type mismatch. Expected type "bool".')
        sandbox = payload.get("SandboxMode", False)
        results: list[dict[str, Any]] = []
        for msg in payload["Messages"]:
            errors = self._validate(msg)
            if errors:
                results.append({"Status": "error", "Errors": errors})
                continue
            result: dict[str, Any] = {"Status": "success", "CustomID": msg.get("CustomID", "")}
            for key in ("To", "Cc", "Bcc"):
                result[key] = []
                for person in msg.get(key, []):
                    number = 0 if sandbox else 288230376000000000 + self.counter
                    self.counter += 1
                    result[key].append(
                        {
                            "Email": person["Email"],
                            "MessageUUID": "" if sandbox else str(uuid.uuid4()),
                            "MessageID": number,
                            "MessageHref": f"https://api.mailjet.com/v3/REST/message/{number}",
                        }
                    )
            results.append(result)
        if all(r["Status"] == "error" for r in results):
            status = results[0]["Errors"][0]["StatusCode"]
            return json_response(
                status if status in (400, 401, 403) else 400, {"Messages": results}
            )
        self.sent.append(payload)
        first = next(r for r in results if r["Status"] == "success")["To"][0]
        self.last_message_id = str(first["MessageID"]) if first["MessageID"] else None
        return json_response(200, {"Messages": results})

    def _validate(self, msg: Any) -> list[dict[str, Any]]:
        """The per-message validation errors the real service reports (error table codes)."""
        if not isinstance(msg, dict):
            return [_error("mj-0004", 'Type mismatch. Expected type "object".', ["Messages"])]
        errors: list[dict[str, Any]] = []
        sender = msg.get("From")
        if not isinstance(sender, dict) or not sender.get("Email"):
            errors.append(
                _error("mj-0003", "From is mandatory but missing from the input", ["From"])
            )
        elif not _valid_email(sender["Email"]):
            errors.append(
                _error(
                    "mj-0013", f'"{sender["Email"]}" is an invalid email address.', ["From.Email"]
                )
            )
        if not isinstance(msg.get("To"), list) or not msg["To"]:
            errors.append(
                _error("mj-0003", "The To is mandatory but missing from the input", ["To"])
            )
        total = 0
        for key in ("To", "Cc", "Bcc"):
            people = msg.get(key, [])
            if not isinstance(people, list):
                errors.append(
                    _error("mj-0004", 'Type mismatch. Expected type "array of emails".', [key])
                )
                continue
            total += len(people)
            for i, person in enumerate(people):
                if not isinstance(person, dict) or not _valid_email(person.get("Email")):
                    bad = person.get("Email") if isinstance(person, dict) else person
                    errors.append(
                        _error(
                            "mj-0013",
                            f'"{bad}" is an invalid email address.',
                            [f"{key}[{i}].Email"],
                        )
                    )
        if total > 50:
            errors.append(
                _error(
                    "send-0015",
                    "Total number of recipients exceeded. Max allowed - 50.",
                    ["To", "Cc", "Bcc"],
                )
            )
        reply_to = msg.get("ReplyTo")
        if reply_to is not None and (
            not isinstance(reply_to, dict) or not _valid_email(reply_to.get("Email"))
        ):
            errors.append(_error("mj-0004", 'Type mismatch. Expected type "email".', ["ReplyTo"]))
        if not (msg.get("TextPart") or msg.get("HTMLPart") or msg.get("TemplateID")):
            errors.append(_error("send-0003", NO_CONTENT, ["HTMLPart", "TextPart", "TemplateID"]))
        subject = msg.get("Subject", "")
        if not isinstance(subject, str):
            errors.append(_error("mj-0004", 'Type mismatch. Expected type "string".', ["Subject"]))
        elif len(subject) > 255:
            errors.append(_error("mj-0006", "Subject is too long.", ["Subject"]))
        headers = msg.get("Headers", {})
        if not isinstance(headers, dict):
            errors.append(_error("mj-0004", 'Type mismatch. Expected type "object".', ["Headers"]))
        else:
            for name in headers:
                if name.lower() in _FORBIDDEN_HEADERS:
                    errors.append(
                        _error(
                            "send-0011",
                            f'The header "{name}" is forbidden, please use the dedicated property.',
                            [f'Headers["{name}"]'],
                        )
                    )
        for key, extra in (("Attachments", ()), ("InlinedAttachments", ("ContentID",))):
            items = msg.get(key, [])
            if not isinstance(items, list):
                errors.append(_error("mj-0004", 'Type mismatch. Expected type "array".', [key]))
                continue
            for i, item in enumerate(items):
                for field in ("ContentType", "Filename", "Base64Content", *extra):
                    if not isinstance(item, dict) or not item.get(field):
                        errors.append(
                            _error(
                                "mj-0012", f"{field} must not be empty.", [f"{key}[{i}].{field}"]
                            )
                        )
                if isinstance(item, dict) and isinstance(item.get("Base64Content"), str):
                    try:
                        base64.b64decode(item["Base64Content"], validate=True)
                    except (binascii.Error, ValueError):
                        errors.append(
                            _error(
                                "mj-0004",
                                "Base64Content is not valid base64.",
                                [f"{key}[{i}].Base64Content"],
                            )
                        )
        for key in ("CustomCampaign", "EventPayload", "CustomID"):
            if key in msg and not isinstance(msg[key], str):
                errors.append(_error("mj-0004", 'Type mismatch. Expected type "string".', [key]))
        return errors

    # --- for the tests -----------------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        msg = payload["Messages"][0]
        tags = [msg["CustomCampaign"]] if msg.get("CustomCampaign") else []
        return {
            "from": _render(msg["From"]),
            "to": [_render(p) for p in msg.get("To", [])],
            "cc": [_render(p) for p in msg.get("Cc", [])],
            "bcc": [_render(p) for p in msg.get("Bcc", [])],
            "reply_to": [_render(msg["ReplyTo"])] if msg.get("ReplyTo") else [],
            "subject": msg.get("Subject", ""),
            "text": msg.get("TextPart", ""),
            "html": msg.get("HTMLPart", ""),
            "headers": dict(msg.get("Headers", {})),
            "attachments": [
                (a["Filename"], a["ContentType"], base64.b64decode(a["Base64Content"]))
                for a in msg.get("Attachments", [])
            ],
            "inline": [
                (a["ContentID"], a["ContentType"], base64.b64decode(a["Base64Content"]))
                for a in msg.get("InlinedAttachments", [])
            ],
            "tags": tags,
            "metadata": json.loads(msg["EventPayload"]) if msg.get("EventPayload") else {},
            "sandbox": bool(payload.get("SandboxMode", False)),
        }


FAKE_CLASS = FakeMailjet

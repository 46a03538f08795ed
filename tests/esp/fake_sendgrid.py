"""A loopback SendGrid: POST /v3/mail/send and GET /v3/scopes.

Behaviour follows SendGrid's OpenAPI spec (twilio/sendgrid-oai; compact in schemas/sendgrid.json)
and the docs (errors, rate limits, sandbox mode): Bearer auth, JSON body validated against the spec,
`{"errors": [{"message", "field", "help"}]}` error bodies, 202 with an empty body and an
`X-Message-Id` header, 200 in sandbox mode.
"""

from __future__ import annotations

import base64
import json
import re
from email.utils import formataddr, unquote
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response, schema_errors

SCHEMA = "sendgrid"  # tests/esp/schemas/sendgrid.json
_ADDR = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SCOPES = ["mail.send", "alerts.read", "stats.read", "user.profile.read"]


def errors(status: int, *items: tuple[str | None, str], **headers: str) -> Response:
    body = {"errors": [{"field": f, "message": m, "help": None} for f, m in items]}
    return json_response(status, body, headers or None)


def _fmt(obj: dict[str, Any]) -> str:
    name = str(obj.get("name") or "")
    if len(name) >= 2 and name[0] == name[-1] == '"':  # the adapter's quoting workaround
        name = unquote(name)
    return formataddr((name, obj["email"])) if name else str(obj["email"])


class FakeSendgrid(FakeESP):
    type = "sendgrid"
    API_KEY = "SG.fakesendgrid.K3y9xQ"
    secrets: ClassVar[tuple[str, ...]] = (API_KEY,)
    credential_keys: ClassVar[tuple[str, ...]] = ("api_key",)

    def __init__(self) -> None:
        super().__init__()
        self.scopes = list(SCOPES)  # what GET /v3/scopes answers

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "type": "sendgrid",
            "name": "sendgrid",
            "base_url": base_url,
            "api_key": self.API_KEY,
        }

    def url(self, base_url: str) -> str:
        return f"sendgrid://{self.API_KEY}@?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path not in ("/v3/mail/send", "/v3/scopes"):
            return errors(404, (None, "not found"))
        auth = request.headers.get("Authorization")
        if not auth:
            return errors(401, (None, "authorization required"))
        if auth != f"Bearer {self.API_KEY}":
            return errors(
                401, (None, "The provided authorization grant is invalid, expired, or revoked")
            )
        if request.path == "/v3/scopes":
            if request.method != "GET":
                return errors(405, (None, "method not allowed"))
            return json_response(200, {"scopes": self.scopes})
        if request.method != "POST":
            return errors(405, (None, "method not allowed"))
        return self._send(request)

    def _send(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            return errors(400, (None, "Content-Type should be application/json."))
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return errors(400, (None, "Bad Request"))
        problems = schema_errors(SCHEMA, body)
        if problems:
            fields = [p.partition(": ") for p in problems]
            return errors(400, *[(f.replace("/", "."), m) for f, _, m in fields])
        # what the spec cannot say but the service checks (docs, mail-send errors)
        for where, obj in self._addresses(body):
            if not _ADDR.match(str(obj.get("email", ""))):
                return errors(400, (where, "Does not contain a valid address."))
        if "reply_to" in body and "reply_to_list" in body:
            return errors(
                400, ("reply_to", "You can either use 'reply_to' or 'reply_to_list', not both.")
            )
        if "template_id" not in body:
            if not body.get("content"):
                return errors(
                    400,
                    (
                        "content",
                        "Unless a valid template_id is provided, the content parameter is "
                        "required. There must be at least one defined content block.",
                    ),
                )
            types = [c["type"] for c in body["content"]]
            ranks = [{"text/plain": 0, "text/html": 1}.get(t, 2) for t in types]
            if ranks != sorted(ranks) or ranks.count(0) > 1 or ranks.count(1) > 1:
                return errors(
                    400,
                    (
                        "content",
                        "If present, text/plain must be first, followed by text/html, followed "
                        "by any other content.",
                    ),
                )
            if "subject" not in body and not all("subject" in p for p in body["personalizations"]):
                return errors(
                    400,
                    (
                        "subject",
                        "The subject is required. You can get around this requirement if you "
                        "use a template with a subject defined or if every personalization has "
                        "a subject defined.",
                    ),
                )
        self.sent.append(body)
        sandbox = bool(body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"))
        if sandbox:  # validated, not sent: 200 instead of 202 (docs "Sandbox Mode")
            self.last_message_id = None
            return Response(b"", 200)
        self.last_message_id = self.next_id()
        return Response(b"", 202, headers={"X-Message-Id": self.last_message_id})

    @staticmethod
    def _addresses(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        found = [("from.email", body["from"])]
        for i, p in enumerate(body["personalizations"]):
            for kind in ("to", "cc", "bcc"):
                for j, obj in enumerate(p.get(kind, [])):
                    found.append((f"personalizations.{i}.{kind}.{j}.email", obj))
        if "reply_to" in body:
            found.append(("reply_to.email", body["reply_to"]))
        for j, obj in enumerate(body.get("reply_to_list", [])):
            found.append((f"reply_to_list.{j}.email", obj))
        return found

    # --- what the tests compare --------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        people = payload["personalizations"]
        content = {c["type"]: c["value"] for c in payload.get("content", [])}
        reply_to = [payload["reply_to"]] if "reply_to" in payload else []
        reply_to += payload.get("reply_to_list", [])
        metadata: dict[str, Any] = {}
        if isinstance(payload.get("custom_args"), dict):
            metadata.update(payload["custom_args"])
        for p in people:
            metadata.update(p.get("custom_args", {}))
        atts = payload.get("attachments", [])
        return {
            "from": _fmt(payload["from"]),
            "to": [_fmt(a) for p in people for a in p.get("to", [])],
            "cc": [_fmt(a) for p in people for a in p.get("cc", [])],
            "bcc": [_fmt(a) for p in people for a in p.get("bcc", [])],
            "reply_to": [_fmt(a) for a in reply_to],
            "subject": payload.get("subject", ""),
            "text": content.get("text/plain"),
            "html": content.get("text/html"),
            "headers": dict(payload.get("headers", {})),
            "attachments": [
                (a["filename"], a.get("type", ""), base64.b64decode(a["content"]))
                for a in atts
                if a.get("disposition", "attachment") != "inline"
            ],
            "inline": [
                (a.get("content_id", ""), a.get("type", ""), base64.b64decode(a["content"]))
                for a in atts
                if a.get("disposition") == "inline"
            ],
            "tags": list(payload.get("categories", [])),
            "metadata": metadata,
            "sandbox": bool(payload.get("mail_settings", {}).get("sandbox_mode", {}).get("enable")),
        }

    # --- documented errors -------------------------------------------------------------

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            response=lambda: errors(
                401, (None, "The provided authorization grant is invalid, expired, or revoked")
            ),
            outcome=Outcome.PROVIDER,
            words="authorization grant is invalid",
        ),
        # spec PostMailSend403; docs: also "too many bad requests, temporary block"
        "forbidden": Scenario(
            response=lambda: errors(403, (None, "access forbidden")),
            outcome=Outcome.PROVIDER,
            words="access forbidden",
        ),
        # third-party reports: an unverified sender is a 403 on field "from"
        "unverified_sender": Scenario(
            response=lambda: errors(
                403,
                (
                    "from",
                    "The from address does not match a verified Sender Identity. Mail cannot "
                    "be sent until this error is resolved.",
                ),
            ),
            outcome=Outcome.PROVIDER,
            words="verified Sender Identity",
        ),
        "no_credits": Scenario(
            response=lambda: errors(401, (None, "Maximum credits exceeded")),
            outcome=Outcome.PROVIDER,
            words="Maximum credits exceeded",
        ),
        "invalid": Scenario(
            response=lambda: errors(
                400, ("personalizations.0.to.0.email", "Does not contain a valid address.")
            ),
            outcome=Outcome.PERMANENT,
            words="Does not contain a valid address",
        ),
        # spec PostMailSend413; limits differ between providers (30 MB here), so not permanent
        "too_large": Scenario(
            response=lambda: errors(413, (None, "content too large")),
            outcome=Outcome.REJECTED,
            words="content too large",
        ),
        # docs "Rate Limits": the 429 body and its X-RateLimit-* headers. X-RateLimit-Reset
        # is a wall-clock time, so it is tested on its own in test_sendgrid.py.
        "rate_limit": Scenario(
            response=lambda: errors(
                429,
                (None, "too many requests"),
                **{"X-RateLimit-Limit": "150", "X-RateLimit-Remaining": "0"},
            ),
            outcome=Outcome.TRANSIENT,
            words="too many requests",
        ),
        "server_error": Scenario(
            response=lambda: errors(500, (None, "internal server error")),
            outcome=Outcome.TRANSIENT,
            words="internal server error",
        ),
    }


FAKE_CLASS = FakeSendgrid

"""A loopback Mailgun: POST /v3/{domain}/messages (multipart form) and GET /v4/domains/{name}.

Behaviour follows Mailgun's OpenAPI spec (mailgun/mailgun-mcp-server; compact in
schemas/mailgun.json): Basic auth with user "api", 401 with the plain body "Forbidden", 400
`{"message": ...}` for a bad form, 200 `{"id": "<...>", "message": "Queued. Thank you."}`.
"""

from __future__ import annotations

import re
from email.utils import formataddr, getaddresses
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response
from werkzeug.datastructures import FileStorage, MultiDict

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario, json_response, schema_errors

SCHEMA = "mailgun"  # tests/esp/schemas/mailgun.json
SEND_PATH = re.compile(r"/v3/([^/]+)/messages")
DOMAIN_PATH = re.compile(r"/v4/domains/([^/]+)")
ARRAY_FIELDS = frozenset({"to", "cc", "bcc", "o:tag", "attachment", "inline"})
_ADDR = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _fmt(name: str, email: str) -> str:
    return formataddr((name, email)) if name else email


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    return getaddresses(values)


class FakeMailgun(FakeESP):
    type = "mailgun"
    API_KEY = "key-fakemailgun-7c1e9a"
    DOMAIN = "mg.example.com"
    secrets: ClassVar[tuple[str, ...]] = (API_KEY,)
    credential_keys: ClassVar[tuple[str, ...]] = ("api_key",)

    def __init__(self) -> None:
        super().__init__()
        self.domain_state = "active"  # what GET /v4/domains answers
        self.domain_type = "custom"

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "type": "mailgun",
            "name": "mailgun",
            "base_url": base_url,
            "api_key": self.API_KEY,
            "domain": self.DOMAIN,
        }

    def url(self, base_url: str) -> str:
        return f"mailgun://{self.API_KEY}@{self.DOMAIN}?base_url={quote(base_url, safe='')}"

    # --- the service -------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        send = SEND_PATH.fullmatch(request.path)
        domain = DOMAIN_PATH.fullmatch(request.path)
        if not send and not domain:
            # docs: a 404 without JSON means a non-existing endpoint
            return Response("404 page not found\n", 404, content_type="text/plain")
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or auth.username != "api"
            or auth.password != self.API_KEY
        ):
            if domain:
                return json_response(401, {"message": "Invalid private key"})  # spec, v4
            return Response("Forbidden", 401, content_type="text/plain")  # spec, v3 send
        if send:
            if request.method != "POST":
                return Response("405 method not allowed\n", 405, content_type="text/plain")
            if send.group(1) != self.DOMAIN:
                return json_response(404, {"message": f"Domain not found: {send.group(1)}"})
            return self._send(request)
        assert domain is not None
        if request.method != "GET":
            return Response("405 method not allowed\n", 405, content_type="text/plain")
        if domain.group(1) != self.DOMAIN:
            return json_response(404, {"message": "Domain not found"})
        return json_response(
            200,
            {
                "domain": {
                    "created_at": "Thu, 13 Oct 2011 18:02:00 GMT",
                    "id": "123456789012345678901234",
                    "name": self.DOMAIN,
                    "state": self.domain_state,
                    "type": self.domain_type,
                    "require_tls": True,
                    "smtp_login": f"postmaster@{self.DOMAIN}",
                    "spam_action": "disabled",
                    "web_prefix": "email",
                    "web_scheme": "https",
                },
                "receiving_dns_records": [],
                "sending_dns_records": [],
            },
        )

    def _send(self, request: Request) -> Response:
        form: MultiDict[str, str] = MultiDict()
        files: MultiDict[str, FileStorage] = MultiDict()
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form, files = request.form, request.files  # anything else reads as an empty form
        doc: dict[str, Any] = {}
        for key in form:
            values = form.getlist(key)
            doc[key] = values if key in ARRAY_FIELDS or len(values) > 1 else values[0]
        for key in files:
            doc[key] = [f.filename or "" for f in files.getlist(key)]
        errors = schema_errors(SCHEMA, doc)
        if errors:
            text = errors[0]
            missing = re.search(r"'([^']+)' is a required property", text)
            if missing:
                text = f"{missing.group(1)} parameter is missing"
            return json_response(400, {"message": text})
        for key in ("from", "to", "cc", "bcc", "h:Reply-To"):
            values = form.getlist(key)
            for _name, addr in _addresses(values):
                if not _ADDR.match(addr):
                    return json_response(
                        400,
                        {
                            "message": f"{key} parameter is not a valid address. please check "
                            "documentation"
                        },
                    )
            if key == "from" and len(_addresses(values)) != 1:
                return json_response(400, {"message": "from parameter is not a valid address"})
        if not any(form.get(k) for k in ("text", "html", "amp-html", "template")):
            return json_response(
                400,
                {
                    "message": "Need at least one of 'text', 'html', 'amp-html' or 'template' "
                    "parameters specified"
                },
            )
        self.sent.append(
            {
                "content_type": request.mimetype,
                "fields": list(form.items(multi=True)),
                "files": [
                    (key, fs.filename or "", fs.content_type or "", fs.read())
                    for key in files
                    for fs in files.getlist(key)
                ],
            }
        )
        self.last_message_id = f"<{self.next_id()}@{self.DOMAIN}>"
        return json_response(200, {"id": self.last_message_id, "message": "Queued. Thank you."})

    # --- what the tests compare --------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        fields: list[tuple[str, str]] = payload["fields"]

        def values(key: str) -> list[str]:
            return [v for k, v in fields if k == key]

        def addrs(key: str) -> list[str]:
            return [_fmt(n, e) for n, e in _addresses(values(key))]

        def first(key: str) -> str | None:
            found = values(key)
            return found[0] if found else None

        return {
            "from": (addrs("from") or [""])[0],
            "to": addrs("to"),
            "cc": addrs("cc"),
            "bcc": addrs("bcc"),
            "reply_to": addrs("h:Reply-To"),
            "subject": first("subject") or "",
            "text": first("text"),
            "html": first("html"),
            "headers": {
                k[2:]: v for k, v in fields if k.startswith("h:") and k.lower() != "h:reply-to"
            },
            "attachments": [(n, t, d) for f, n, t, d in payload["files"] if f == "attachment"],
            "inline": [(n, t, d) for f, n, t, d in payload["files"] if f == "inline"],
            "tags": values("o:tag"),
            "metadata": {k[2:]: v for k, v in fields if k.startswith("v:")},
            "sandbox": first("o:testmode") in ("yes", "true"),
        }

    # --- documented errors -------------------------------------------------------------

    scenarios: ClassVar[dict[str, Scenario]] = {
        # openapi.yaml: 401 with the plain body "Forbidden"
        "auth": Scenario(
            response=lambda: Response("Forbidden", 401, content_type="text/plain"),
            outcome=Outcome.PROVIDER,
            words="Forbidden",
        ),
        # docs "API Response Codes": 403 = auth error or access denied
        "access_denied": Scenario(
            response=lambda: json_response(403, {"message": "Invalid private key"}),
            outcome=Outcome.PROVIDER,
            words="Invalid private key",
        ),
        # openapi.yaml 400 examples
        "invalid": Scenario(
            response=lambda: json_response(
                400, {"message": "to parameter is not a valid address. please check documentation"}
            ),
            outcome=Outcome.PERMANENT,
            words="to parameter is not a valid address",
        ),
        "no_body": Scenario(
            response=lambda: json_response(
                400,
                {
                    "message": "Need at least one of 'text', 'html', 'amp-html' or 'template' "
                    "parameters specified"
                },
            ),
            outcome=Outcome.PERMANENT,
            words="Need at least one of",
        ),
        "options_too_big": Scenario(
            response=lambda: json_response(
                400,
                {
                    "message": "Send options (parameters starting with o:, h:, or v:) are "
                    "limited to 16KB total"
                },
            ),
            outcome=Outcome.PERMANENT,
            words="limited to 16KB",
        ),
        # sandbox domain, recipient not authorized (observed: mailgun/wordpress-plugin#68,
        # theoomoregbee/US-visa-appointment-notifier#5); the domain's fault, not the message's
        "sandbox_recipient": Scenario(
            response=lambda: json_response(
                403,
                {
                    "message": "Domain sandbox123.mailgun.org is not allowed to send: Sandbox "
                    "subdomains are for test purposes only. Please add your own domain or add "
                    "the address to authorized recipients in Account Settings."
                },
            ),
            outcome=Outcome.PROVIDER,
            words="authorized recipients",
        ),
        "free_account": Scenario(
            response=lambda: json_response(
                400,
                {
                    "message": "Domain mg.example.com is not allowed to send: Free accounts are "
                    "for test purposes only. Please upgrade or add the address to authorized "
                    "recipients in Account Settings."
                },
            ),
            outcome=Outcome.PROVIDER,
            words="Free accounts are for test purposes only",
        ),
        "unknown_domain": Scenario(
            response=lambda: json_response(404, {"message": "Domain not found: mg.example.com"}),
            outcome=Outcome.PROVIDER,
            words="Domain not found",
        ),
        # openapi.yaml 429; the wait is only in the text (no Retry-After documented)
        "rate_limit": Scenario(
            response=lambda: json_response(
                429,
                {
                    "message": "Domain mg.example.com is not allowed to send: "
                    "account-requests-per-sec limit exceeded, try again after 120 seconds"
                },
            ),
            outcome=Outcome.TRANSIENT,
            words="limit exceeded",
            retry_after=120.0,
        ),
        "server_error": Scenario(
            response=lambda: json_response(500, {"message": "Internal Server Error"}),
            outcome=Outcome.TRANSIENT,
            words="Internal Server Error",
        ),
    }


FAKE_CLASS = FakeMailgun

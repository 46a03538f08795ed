"""Postmark `/email`.

Sources: Postmark's Swagger (postmarkapp.com/swagger/server.yml; OpenAPI 3 conversion in
github.com/kylecarhart/runner packages/postmark/src/server.yml), postmarkapp.com/developer
(API overview: auth, HTTP statuses, error codes; email API: MessageStream, Metadata),
Postmark support articles (error 300, 50 recipients, HTML 403). Postmark has no sandbox
flag (only the POSTMARK_API_TEST token and sandbox servers), so `sandbox` is not offered.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mailrelay.providers.base import LABELS, MIME_PARTS, Capability, Health, Outcome, Receipt
from mailrelay.providers.httpapi import ApiKeyProvider, HttpRequest, json_body

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.httpapi import HttpResponse
    from mailrelay.providers.options import ProviderConfig

MAX_RECIPIENTS = 50  # To+Cc+Bcc together (support article "What does Error Code 300 mean")

# ErrorCode → outcome (developer/api/overview#error-codes; reference sections 3 and 12)
ERROR_CODES: dict[int, Outcome] = {
    10: Outcome.PROVIDER,  # bad or missing API token
    100: Outcome.TRANSIENT,  # maintenance
    300: Outcome.PERMANENT,  # invalid email request
    400: Outcome.PROVIDER,  # sender signature not found
    401: Outcome.PROVIDER,  # sender signature not confirmed
    402: Outcome.PERMANENT,  # invalid JSON
    403: Outcome.PERMANENT,  # incompatible JSON
    405: Outcome.PROVIDER,  # not allowed to send (credits, suspended)
    # inactive recipient: suppressed after a bounce or complaint; failing over would bypass a
    # suppression that exists for a reason, so it is permanent for that recipient
    406: Outcome.PERMANENT,
    409: Outcome.PERMANENT,  # JSON required
    410: Outcome.PERMANENT,  # too many batch messages
    411: Outcome.PERMANENT,  # forbidden attachment type
    412: Outcome.PROVIDER,  # account is pending
    413: Outcome.PROVIDER,  # account may not send
    429: Outcome.TRANSIENT,  # rate limit exceeded
}


def _error_code(resp: HttpResponse) -> int | None:
    body = json_body(resp)
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


class PostmarkProvider(ApiKeyProvider):
    type: ClassVar[str] = "postmark"
    success_body: ClassVar[Literal["", "json", "json-if-any"]] = "json"
    url_schemes: ClassVar[tuple[str, ...]] = ("postmark",)
    default_base_url: ClassVar[str] = "https://api.postmarkapp.com"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    max_tags: ClassVar[int | None] = 1  # `Tag` is one string
    max_recipients: ClassVar[int | None] = MAX_RECIPIENTS
    # "Provide either email TextBody or HtmlBody or both." (ErrorCode 300)
    needs_body: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /server"

    credential_key: ClassVar[str] = "server_token"

    def __init__(self, name: str, *, message_stream: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self.message_stream = message_stream

    @classmethod
    def options_from_config(cls, cfg: ProviderConfig) -> dict[str, Any]:
        return {"message_stream": cfg.get_str("message_stream")}

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["message_stream"] = self.message_stream or "outbound (server default)"
        return info

    def _headers(self) -> dict[str, str]:
        return {
            "X-Postmark-Server-Token": self.credential.reveal(),
            # "Content-Type and Accept headers must be set to application/json" (ErrorCode 409)
            "Accept": "application/json",
        }

    # --- send ------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        headers = self._headers()
        body: dict[str, Any] = {"From": str(message.sender), "Subject": message.subject}
        for key, addrs in (("To", message.to), ("Cc", message.cc), ("Bcc", message.bcc)):
            if addrs:
                body[key] = ", ".join(str(a) for a in addrs)
        if message.reply_to:
            body["ReplyTo"] = ", ".join(str(a) for a in message.reply_to)
        if message.text:
            body["TextBody"] = message.text
        if message.html:
            body["HtmlBody"] = message.html
        if message.headers:
            body["Headers"] = [{"Name": n, "Value": v} for n, v in message.headers]
        attachments = []
        for att in message.attachments:
            item = {
                "Name": att.filename,
                "Content": base64.b64encode(att.data).decode("ascii"),
                "ContentType": att.content_type,
            }
            if att.inline:
                item["ContentID"] = f"cid:{att.content_id or att.filename}"
            attachments.append(item)
        if attachments:
            body["Attachments"] = attachments
        if message.tags:
            body["Tag"] = message.tags[0]  # the base refused more than max_tags
        if message.metadata:
            body["Metadata"] = dict(message.metadata)
        if self.message_stream:
            body["MessageStream"] = self.message_stream
        return HttpRequest("POST", "/email", json=body, headers=headers)

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        if not isinstance(body, dict):
            return Receipt(provider=self.name, detail=f"HTTP {resp.status_code}, no JSON body")
        if _error_code(resp):  # a 200 that carries an error code did not send
            raise self.classify_error(resp)
        text = str(body.get("Message") or "")
        # "Message OK, but will not deliver to these inactive addresses: ..." (partial)
        detail = text if text and text != "OK" else ""
        message_id = body.get("MessageID")
        return Receipt(
            provider=self.name,
            message_id=str(message_id) if message_id else None,
            detail=detail,
        )

    # --- errors ------------------------------------------------------------------------

    def error_words(self, resp: HttpResponse) -> str | None:
        code = _error_code(resp)
        if not code:
            return None
        body = json_body(resp)
        words = body.get("Message") if isinstance(body, dict) else None
        return f"ErrorCode {code}: {words or 'no message'}"

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        status = resp.status_code
        if status == 429 or status >= 500:
            return None  # transient whatever the body says
        code = _error_code(resp)
        return None if code is None else ERROR_CODES.get(code)

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest("GET", "/server", headers=self._headers())

    def check_response(self, resp: HttpResponse) -> Health:
        if not 200 <= resp.status_code < 300:
            return super().check_response(resp)
        body = json_body(resp)
        name = body.get("Name") if isinstance(body, dict) else None
        return Health(True, f"server {name!r}" if name else f"HTTP {resp.status_code}")

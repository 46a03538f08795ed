"""Twilio SendGrid v3 Mail Send.

Sources: SendGrid's OpenAPI spec (github.com/twilio/sendgrid-oai spec/yaml/tsg_mail_v3.yaml at
commit dbe0e0d2), twilio.com/docs/sendgrid (errors, rate limits, scopes, sandbox mode).
EU regional subusers use
`base_url = "https://api.eu.sendgrid.com"` (spec `servers`).
"""

from __future__ import annotations

import base64
import math
import time
from email.utils import quote as rfc822_quote
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    ProviderError,
    Receipt,
)
from mailrelay.providers.httpapi import ApiKeyProvider, HttpRequest, json_body

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse

MAX_CATEGORIES = 10  # spec: categories maxItems 10
MAX_RECIPIENTS = 1000  # docs: to+cc+bcc summed across personalizations
SEND_SCOPE = "mail.send"


def _email_object(addr: Address, *, quote_name: bool = False) -> dict[str, str]:
    obj = {"email": addr.email}
    if addr.name:
        # SendGrid does not quote display names with "," or ";" in personalizations, which
        # breaks the header (sendgrid/sendgrid-python#291, followed by django-anymail)
        if quote_name and any(c in addr.name for c in ",;"):
            obj["name"] = f'"{rfc822_quote(addr.name)}"'
        else:
            obj["name"] = addr.name
    return obj


def _errors_text(resp: HttpResponse) -> str | None:
    """The `errors[]` of SendGrid's error body as "field: message; ..." (spec ErrorResponse)."""
    body = json_body(resp)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return None
    parts = []
    for item in errors:
        if not isinstance(item, dict) or not item.get("message"):
            continue
        field = item.get("field")
        message = str(item["message"])
        parts.append(f"{field}: {message}" if field and field != "null" else message)
    return "; ".join(parts) or None


def _error_fields(resp: HttpResponse) -> set[str]:
    body = json_body(resp)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("field")) for e in errors if isinstance(e, dict) and e.get("field")}


class SendgridProvider(ApiKeyProvider):
    type: ClassVar[str] = "sendgrid"
    success_body: ClassVar[Literal["", "json", "json-if-any"]] = "json-if-any"
    url_schemes: ClassVar[tuple[str, ...]] = ("sendgrid",)
    default_base_url: ClassVar[str] = "https://api.sendgrid.com"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS | {Capability.SANDBOX}
    max_tags: ClassVar[int | None] = MAX_CATEGORIES
    max_recipients: ClassVar[int | None] = MAX_RECIPIENTS
    needs_to: ClassVar[bool] = True  # every personalization needs `to` (spec: required ["to"])
    needs_body: ClassVar[bool] = True  # content values may not be empty (spec, docs)
    health_check: ClassVar[str] = "GET /v3/scopes (mail.send must be granted)"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential.reveal()}"}

    # --- send ------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        content = []
        # text/plain first, then text/html; values may not be empty (spec, docs)
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        headers: dict[str, str] = {}
        for hname, hvalue in message.headers:
            if hname in headers:
                raise ProviderError(
                    Outcome.REJECTED, f"sendgrid cannot carry the {hname} header twice"
                )
            headers[hname] = hvalue
        auth_headers = self._headers()

        personalization: dict[str, Any] = {
            "to": [_email_object(a, quote_name=True) for a in message.to]
        }
        if message.cc:
            personalization["cc"] = [_email_object(a, quote_name=True) for a in message.cc]
        if message.bcc:
            personalization["bcc"] = [_email_object(a, quote_name=True) for a in message.bcc]
        if message.metadata:
            # the spec types top-level custom_args as a string; the personalization's is an
            # object, the form the docs describe (twilio.com/docs/sendgrid/api-reference/mail-send)
            personalization["custom_args"] = dict(message.metadata)
        body: dict[str, Any] = {
            "personalizations": [personalization],
            "from": _email_object(message.sender),
            "content": content,
        }
        if message.subject:  # minLength 1
            body["subject"] = message.subject
        if len(message.reply_to) == 1:
            body["reply_to"] = _email_object(message.reply_to[0])
        elif message.reply_to:
            body["reply_to_list"] = [_email_object(a) for a in message.reply_to]
        if headers:
            body["headers"] = headers
        if message.tags:
            body["categories"] = list(dict.fromkeys(message.tags))  # uniqueItems
        attachments = []
        for att in message.attachments:
            item = {
                "content": base64.b64encode(att.data).decode("ascii"),
                "filename": att.filename,
                "type": att.content_type,
                "disposition": "inline" if att.inline else "attachment",
            }
            if att.inline:
                item["content_id"] = att.content_id or att.filename
            attachments.append(item)
        if attachments:
            body["attachments"] = attachments
        if self.sandbox:
            # validated, not delivered, answered 200 instead of 202 (docs "Sandbox Mode")
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return HttpRequest("POST", "/v3/mail/send", json=body, headers=auth_headers)

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        # 202 with an empty body; the id is the X-Message-Id header (third-party reports, seen in
        # sendgrid/sendgrid-csharp#274); sandbox mode answers 200
        message_id = resp.headers.get("X-Message-Id") or None
        detail = "sandbox mode: validated, not delivered" if self.sandbox else ""
        return Receipt(provider=self.name, message_id=message_id, detail=detail)

    # --- errors ------------------------------------------------------------------------

    def error_words(self, resp: HttpResponse) -> str | None:
        return _errors_text(resp)

    def retry_after(self, resp: HttpResponse) -> float | None:
        """Retry-After when sent, else X-RateLimit-Reset (a Unix time) of a 429 (docs)."""
        header = super().retry_after(resp)
        if header is not None or resp.status_code != 429:
            return header
        reset = resp.headers.get("X-RateLimit-Reset")
        try:
            seconds = float(reset) - time.time() if reset else None
        except ValueError:
            seconds = None
        if seconds is None or seconds != seconds:
            return None
        return float(min(max(math.ceil(seconds), 0), 24 * 3600))

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        # an unverified sender comes back as 403 on field "from" (third-party reports); whatever
        # the status, a refused sender identity is the account's problem, not the message's
        if "from" in _error_fields(resp) and "sender identity" in self.error_message(resp).lower():
            return Outcome.PROVIDER
        return None

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest("GET", "/v3/scopes", headers=self._headers())

    def check_response(self, resp: HttpResponse) -> Health:
        if not 200 <= resp.status_code < 300:
            return super().check_response(resp)
        body = json_body(resp)
        scopes = body.get("scopes") if isinstance(body, dict) else None
        if not isinstance(scopes, list):
            return Health(
                False, f"HTTP {resp.status_code} from {self.host}: no scopes list", Outcome.PROVIDER
            )
        if SEND_SCOPE not in scopes:
            return Health(
                False,
                f"the API key works but lacks the {SEND_SCOPE} scope "
                f"({len(scopes)} scopes granted)",
                Outcome.PROVIDER,
            )
        return Health(True, f"API key has {SEND_SCOPE}")

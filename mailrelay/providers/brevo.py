"""Brevo (ex-Sendinblue) `POST /v3/smtp/email`.

Brevo's OpenAPI spec is hosted only (api.brevo.com/v3/swagger_definition_v3.yml), so this
follows Brevo's docs: developers.brevo.com "Key concepts" (api-key header, `{code, message}`
errors), "Rate limit headers" (`x-sib-ratelimit-reset` in seconds), the idempotency changelog
and batch page (`idempotencyKey` in the JSON `headers`, a UUID), the sandbox header
`X-Sib-Sandbox: drop`, and the attachment extension list; anymail's Brevo backend for the
single reply-to, metadata as JSON in `X-Mailin-custom`, no inline images and raw 8-bit headers.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    ProviderError,
    Receipt,
    parse_retry_after,
)
from mailrelay.providers.httpapi import (
    ApiKeyProvider,
    HttpRequest,
    coded_words,
    json_body,
)

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse

# Error `code` → outcome where the code says more than the status (developers.brevo.com).
_ERROR_OUTCOMES: dict[str, Outcome] = {
    "unauthorized": Outcome.PROVIDER,
    "permission_denied": Outcome.PROVIDER,  # e.g. the key's IP allow-list
    "account_under_validation": Outcome.PROVIDER,
    "not_enough_credits": Outcome.PROVIDER,  # 402: the account cannot send now
}

# Special names in the JSON `headers` object; a custom header must not take one of them.
SANDBOX_HEADER = "X-Sib-Sandbox"  # "drop": validated, answered 201, never sent (docs)
METADATA_HEADER = "X-Mailin-custom"  # custom data, returned in webhooks
IDEMPOTENCY_HEADER = "idempotencyKey"
_RESERVED_HEADERS = frozenset(
    h.lower() for h in (SANDBOX_HEADER, METADATA_HEADER, IDEMPOTENCY_HEADER, "sender.ip")
)

# The attachment extensions Brevo accepts (API reference, sendTransacEmail `attachment`;
# audio/video added per the 2019-05-15 changelog). Anything else is refused by Brevo.
# fmt: off
ALLOWED_EXTENSIONS = frozenset({
    "xlsx", "xls", "ods", "docx", "docm", "doc", "csv", "pdf", "txt", "gif", "jpg", "jpeg",
    "png", "tif", "tiff", "rtf", "bmp", "cgm", "css", "shtml", "html", "htm", "zip", "xml",
    "ppt", "pptx", "tar", "ez", "ics", "mobi", "msg", "pub", "eps", "odt", "mp3", "m4a", "m4v",
    "wma", "ogg", "flac", "wav", "aif", "aifc", "aiff", "mp4", "mov", "avi", "mkv", "mpeg",
    "mpg", "wmv", "pkpass", "xlsm",
})
# fmt: on


def idempotency_uuid(message: Message) -> str:
    """The message's idempotency key in the UUID form Brevo asks for (same for every retry)."""
    return str(uuid.UUID(hex=message.idempotency_key()[:32], version=4))


class BrevoProvider(ApiKeyProvider):
    type: ClassVar[str] = "brevo"
    url_schemes: ClassVar[tuple[str, ...]] = ("brevo",)
    default_base_url: ClassVar[str] = "https://api.brevo.com/v3"
    # no "inline": Brevo has no Content-ID images (anymail: unsupported feature)
    capabilities: ClassVar[frozenset[Capability]] = (
        (MIME_PARTS - {Capability.INLINE}) | LABELS | {Capability.SANDBOX, Capability.IDEMPOTENCY}
    )
    single_reply_to: ClassVar[bool] = True  # `replyTo` is one object
    needs_body: ClassVar[bool] = True
    needs_subject: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /v3/account"
    # POST /v3/smtp/email: 1,000 requests/s on the General plan (developers.brevo.com,
    # "Rate limits"); higher plans allow more, so it is a floor, never a surprise
    default_rate_limit: ClassVar[tuple[str, ...]] = ("1000/s",)

    def _auth(self) -> dict[str, str]:
        return {"api-key": self.credential.reveal(), "Accept": "application/json"}

    # --- send ----------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        body: dict[str, Any] = {
            "sender": _mailbox(message.sender),
            "to": [_mailbox(a) for a in message.to],
            "subject": message.subject,
        }
        for key, addrs in (("cc", message.cc), ("bcc", message.bcc)):
            if addrs:
                body[key] = [_mailbox(a) for a in addrs]
        if message.reply_to:
            body["replyTo"] = _mailbox(message.reply_to[0])
        if message.html is not None:
            body["htmlContent"] = message.html
        if message.text is not None:
            body["textContent"] = message.text
        attachments = [a for a in message.attachments if not a.inline]
        if attachments:
            body["attachment"] = [_attachment(a.filename, a.data) for a in attachments]
        if message.tags:
            body["tags"] = list(message.tags)
        headers = _header_object(message.headers)
        if message.metadata:
            # one JSON string; header values go out verbatim, so keep it ASCII
            headers[METADATA_HEADER] = json.dumps(message.metadata, separators=(",", ":"))
        if self.sandbox:
            headers[SANDBOX_HEADER] = "drop"
        # the TTL is short (15-30 min per the docs), enough for the engine's retries
        headers[IDEMPOTENCY_HEADER] = idempotency_uuid(message)
        body["headers"] = headers
        return HttpRequest("POST", "/smtp/email", json=body, headers=self._auth())

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        message_id: str | None = None
        if isinstance(body, dict):
            if isinstance(body.get("messageId"), str):
                message_id = body["messageId"]
            elif isinstance(body.get("messageIds"), list) and body["messageIds"]:
                message_id = str(body["messageIds"][0])  # the batch form
        if not message_id:
            raise ProviderError(
                Outcome.AMBIGUOUS,
                self.error_message(resp, "accepted without a messageId"),
                status=resp.status_code,
            )
        return Receipt(
            provider=self.name,
            message_id=message_id,
            detail="sandbox: validated, not sent" if self.sandbox else "",
        )

    def retry_after(self, resp: HttpResponse) -> float | None:
        # Retry-After wins; Brevo documents only x-sib-ratelimit-reset (seconds to reset)
        wait = super().retry_after(resp)
        if wait is None and resp.status_code == 429:
            wait = parse_retry_after(resp.headers.get("x-sib-ratelimit-reset"))
        return wait

    def error_words(self, resp: HttpResponse) -> str | None:
        return coded_words(json_body(resp), "code")

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        if resp.status_code == 429 or resp.status_code >= 500:
            return None  # the status decides, whatever the code
        body = json_body(resp)
        code = body.get("code") if isinstance(body, dict) else None
        return _ERROR_OUTCOMES.get(code) if isinstance(code, str) else None

    # --- health --------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        # "all other endpoints" share 100 requests/hour (docs rate-limit table): poll sparingly
        return HttpRequest("GET", "/account", headers=self._auth())

    def check_response(self, resp: HttpResponse) -> Health:
        health = super().check_response(resp)
        if health.ok:
            body = json_body(resp)
            email = body.get("email") if isinstance(body, dict) else None
            if isinstance(email, str) and email:
                return Health(True, f"account {email} on {self.host}")
        return health


def _mailbox(addr: Address) -> dict[str, str]:
    return {"email": addr.email, "name": addr.name} if addr.name else {"email": addr.email}


def _attachment(filename: str, data: bytes) -> dict[str, str]:
    """Brevo guesses the type from the name and refuses extensions outside its list."""
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    if ext not in ALLOWED_EXTENSIONS:
        raise ProviderError(
            Outcome.REJECTED,
            f"brevo does not accept attachments named {filename!r} "
            "(Brevo allows only listed extensions such as pdf, txt, csv, png, zip)",
        )
    return {"name": filename, "content": base64.b64encode(data).decode("ascii")}


def _header_object(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Custom headers as the JSON object; refuses what Brevo would mangle or misread."""
    out: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in _RESERVED_HEADERS:
            raise ProviderError(
                Outcome.REJECTED, f"brevo reserves the {name} header for its own use"
            )
        if any(name.lower() == seen.lower() for seen in out):
            raise ProviderError(
                Outcome.REJECTED, f"brevo cannot carry the {name} header more than once"
            )
        if not value.isascii():
            # anymail: Brevo sends non-ASCII header values as raw 8-bit, unencoded
            raise ProviderError(
                Outcome.REJECTED, f"brevo cannot carry non-ASCII text in the {name} header"
            )
        out[name] = value
    return out

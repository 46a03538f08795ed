"""Resend `POST /emails`.

Sources: the official OAS (resend/resend-openapi `resend.yaml`: SendEmailRequest, Attachment,
Tag, the `Idempotency-Key` header, `GET /domains`), Resend's docs (api-reference/errors for
the error names and statuses, api-reference/rate-limit for `retry-after`/`ratelimit-reset`,
dashboard/emails/tags for the tag character set) and anymail's Resend backend for the
display-name quirks.
"""

from __future__ import annotations

import base64
import re
from email.header import Header
from email.utils import formataddr
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
from mailrelay.ratelimit.quota import to_midnight, to_month_end
from mailrelay.ratelimit.spec import Unit

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse

# the 429s of a spent email quota (api-reference/errors, api-reference/rate-limit "Email
# Quotas"): the provider rests until the quota is back, not the second a rate limit takes
_QUOTAS = {"daily_quota_exceeded": to_midnight, "monthly_quota_exceeded": to_month_end}


def _error_name(resp: HttpResponse) -> str | None:
    body = json_body(resp) if resp.status_code == 429 else None
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


# Error `name` → outcome where the name says more than the status (docs: api-reference/errors).
_ERROR_OUTCOMES: dict[str, Outcome] = {
    "rate_limit_exceeded": Outcome.TRANSIENT,  # per-second limit: clears in seconds
    # the daily/monthly sending quota does not clear soon: treat like an account limit
    "daily_quota_exceeded": Outcome.PROVIDER,
    "monthly_quota_exceeded": Outcome.PROVIDER,
    "missing_api_key": Outcome.PROVIDER,
    "invalid_api_key": Outcome.PROVIDER,
    "restricted_api_key": Outcome.PROVIDER,
    "invalid_from_address": Outcome.PERMANENT,  # a format problem in `from`
    "invalid_attachment": Outcome.PERMANENT,
    "missing_required_field": Outcome.PERMANENT,
    "invalid_parameter": Outcome.PERMANENT,
    # our key is always 64 hex characters; a refusal of it is not the message's fault
    "invalid_idempotency_key": Outcome.REJECTED,
    "invalid_idempotent_request": Outcome.REJECTED,
    # the first request with this key is still being processed: it may well be delivered
    "concurrent_idempotent_requests": Outcome.AMBIGUOUS,
    "security_error": Outcome.PROVIDER,  # 451: Resend refuses to carry it
    "application_error": Outcome.TRANSIENT,
    "internal_server_error": Outcome.TRANSIENT,
}

# Tag names and values: "ASCII letters, numbers, underscores, or dashes", at most 256 chars.
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# A bare message tag becomes a Resend tag with this value (Resend tags are name/value pairs).
TAG_VALUE = "true"


class ResendProvider(ApiKeyProvider):
    type: ClassVar[str] = "resend"
    url_schemes: ClassVar[tuple[str, ...]] = ("resend",)
    default_base_url: ClassVar[str] = "https://api.resend.com"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS | {Capability.IDEMPOTENCY}
    # Resend answers "Missing `html` or `text` field" (resend-ruby PR #5 error log)
    needs_body: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /domains"
    # "2 requests per second per team" (api-reference/introduction, changelog "API Rate
    # Limit"); a newer copy of api-reference/rate-limit says 5: the lower one until it is
    # settled. Quotas count each To, Cc and Bcc recipient (knowledge-base, account quotas).
    default_rate_limit: ClassVar[tuple[str, ...]] = ("2/s",)
    default_rate_unit: ClassVar[Unit] = "recipients"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential.reveal()}"}

    # --- send ----------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        body: dict[str, Any] = {
            "from": _sender(message.sender),
            "to": [_recipient(a) for a in message.to],
            "subject": message.subject,
        }
        for key, addrs in (("cc", message.cc), ("bcc", message.bcc)):
            if addrs:
                body[key] = [_recipient(a) for a in addrs]
        if message.reply_to:
            body["reply_to"] = [_recipient(a) for a in message.reply_to]
        if message.text is not None:
            body["text"] = message.text
        if message.html is not None:
            body["html"] = message.html
        headers = _header_object(message.headers)
        if headers:
            body["headers"] = headers
        if message.attachments:
            body["attachments"] = [
                {
                    "filename": att.filename,
                    "content": base64.b64encode(att.data).decode("ascii"),
                    "content_type": att.content_type,
                    **({"content_id": att.content_id} if att.inline and att.content_id else {}),
                }
                for att in message.attachments
            ]
        tags = _tags(message)
        if tags:
            body["tags"] = tags
        return HttpRequest(
            "POST",
            "/emails",
            json=body,
            # remembered 24 h: a retry of this message to Resend returns the first id (docs:
            # dashboard/emails/idempotency-keys; OAS: header, maxLength 256)
            headers={**self._auth(), "Idempotency-Key": message.idempotency_key()},
        )

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise ProviderError(
                Outcome.AMBIGUOUS,
                self.error_message(resp, "accepted without an email id"),
                status=resp.status_code,
            )
        return Receipt(provider=self.name, message_id=body["id"])

    def limit_kind(self, resp: HttpResponse) -> str | None:
        name = _error_name(resp)
        if name in _QUOTAS:
            return "quota"
        return super().limit_kind(resp)

    def retry_after(self, resp: HttpResponse) -> float | None:
        name = _error_name(resp)
        if name in _QUOTAS:  # the sending quota is back at the next day or month (UTC)
            return _QUOTAS[name]()
        # Retry-After wins; on a 429 without it, `ratelimit-reset` is the seconds until reset
        wait = super().retry_after(resp)
        if wait is None and resp.status_code == 429:
            wait = parse_retry_after(resp.headers.get("ratelimit-reset"))
        return wait

    def error_words(self, resp: HttpResponse) -> str | None:
        return coded_words(json_body(resp), "name")

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        body = json_body(resp)
        name = body.get("name") if isinstance(body, dict) else None
        if name == "validation_error":
            # 403 validation_error = testing-mode restriction or unverified domain: the
            # account's setup; elsewhere (400/422) the message's fields are wrong
            return Outcome.PROVIDER if resp.status_code == 403 else Outcome.PERMANENT
        return _ERROR_OUTCOMES.get(name) if isinstance(name, str) else None

    # --- health --------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest("GET", "/domains", headers=self._auth())

    def check_response(self, resp: HttpResponse) -> Health:
        body = json_body(resp)
        restricted = isinstance(body, dict) and body.get("name") == "restricted_api_key"
        if resp.status_code == 401 and restricted:
            # a sending-only key may not list domains, but Resend knew the key (docs)
            return Health(True, f"sending-only key accepted by {self.host}")
        return super().check_response(resp)


_QUOTED_NAME = re.compile(r'^".*"\s*<')


def _sender(addr: Address) -> str:
    """`from` as "Name <email>": Resend's documented form, not RFC 5322 quoting.

    anymail found Resend refuses an RFC 2047 encoded `from` (451 security_error) and quoted
    names; an unquoted UTF-8 name goes through.
    """
    return f"{addr.name} <{addr.email}>" if addr.name else addr.email


def _recipient(addr: Address) -> str:
    """A recipient; a name that needs RFC 5322 quotes is sent RFC 2047 encoded instead
    (anymail: Resend rejects properly quoted display names in these fields)."""
    formatted = formataddr((addr.name, addr.email)) if addr.name else addr.email
    if _QUOTED_NAME.match(formatted):
        encoded = Header(addr.name, "utf-8").encode()
        formatted = f"{encoded} <{addr.email}>"
    return formatted


def _tags(message: Message) -> list[dict[str, str]]:
    """Metadata as name/value tags, each message tag as a name with the value "true"."""
    pairs = [*message.metadata.items(), *((t, TAG_VALUE) for t in message.tags)]
    names: set[str] = set()
    for name, value in pairs:
        if not _TAG_TEXT.match(name) or not _TAG_TEXT.match(value):
            raise ProviderError(
                Outcome.REJECTED,
                "resend tags and metadata take only ASCII letters, digits, '_' and '-' "
                f"(at most 256): {name}={value!r}",
            )
        if name in names:
            raise ProviderError(Outcome.REJECTED, f"resend: tag {name!r} is also a metadata key")
        names.add(name)
    return [{"name": n, "value": v} for n, v in pairs]


def _header_object(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Custom headers as the JSON object the API takes; a repeated name cannot be carried."""
    out: dict[str, str] = {}
    for name, value in headers:
        if any(name.lower() == seen.lower() for seen in out):
            raise ProviderError(
                Outcome.REJECTED, f"resend cannot carry the {name} header more than once"
            )
        out[name] = value
    return out

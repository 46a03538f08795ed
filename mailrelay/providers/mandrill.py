"""Mandrill (Mailchimp Transactional) `messages/send`.

Sources: the official OAS 3.1 spec (mailchimp/mailchimp-client-lib-codegen,
`spec/transactional.openapi.json`: request body, per-recipient result array, error payload
and names, `users/ping2`), cross-checked with anymail's Mandrill backend for the `/api/1.0`
root, the `.json` path form and Reply-To as a header. The API key travels in the JSON body.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    ProviderError,
    Receipt,
)
from mailrelay.providers.httpapi import (
    ApiKeyProvider,
    HttpRequest,
    coded_words,
    json_body,
)

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.httpapi import HttpResponse

# Error `name` → outcome. The HTTP status is disputed (the OAS maps names to 401/402/404/429/
# 500, older clients saw HTTP 500 for every error), so the name decides (Mailchimp
# Transactional API docs).
_ERROR_OUTCOMES: dict[str, Outcome] = {
    "ValidationError": Outcome.PERMANENT,
    "Invalid_Key": Outcome.PROVIDER,
    "PaymentRequired": Outcome.PROVIDER,
    "Unknown_Subaccount": Outcome.PROVIDER,
    "GeneralError": Outcome.TRANSIENT,
    "RequestLimitExceeded": Outcome.TRANSIENT,
    "ServiceUnavailable": Outcome.TRANSIENT,
}

# Per-recipient statuses the OAS lists (MessagesSendResult.status); only these two are refusals.
_REFUSED = frozenset({"rejected", "invalid"})
# reject_reason values that are the sending account's or domain's problem, not the recipient's:
# unverified/unsigned sending domain, a test key's daily limit (Mandrill's reject_reason list).
_ACCOUNT_REASONS = frozenset({"invalid-sender", "unsigned", "test-mode-limit"})

# MessagesRequestComponent.tags: "50 characters or less"; a leading underscore is reserved.
_MAX_TAG_LENGTH = 50


class MandrillProvider(ApiKeyProvider):
    type: ClassVar[str] = "mandrill"
    url_schemes: ClassVar[tuple[str, ...]] = ("mandrill",)
    # anymail's default root; the OAS server says /api/1.4, the Swagger /api/1.3, and the
    # version segment is tolerated by the service.
    default_base_url: ClassVar[str] = "https://mandrillapp.com/api/1.0"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    health_check: ClassVar[str] = "POST /users/ping2"

    def build_send(self, message: Message) -> HttpRequest:
        msg: dict[str, Any] = {
            "from_email": message.sender.email,
            "subject": message.subject,
            "to": [
                {"email": a.email, **({"name": a.name} if a.name else {}), "type": kind}
                for kind, addrs in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc))
                for a in addrs
            ],
        }
        if message.sender.name:
            msg["from_name"] = message.sender.name
        if len(message.to) + len(message.cc) > 1:
            # Without this Mandrill sends each recipient a copy naming only them in To/Cc.
            msg["preserve_recipients"] = True
        if message.text is not None:
            msg["text"] = message.text
        if message.html is not None:
            msg["html"] = message.html
        headers = _header_object(self.type, message.headers)
        if message.reply_to:
            # Mandrill has no reply-to field: it goes in as a header (anymail's Mandrill backend).
            headers["Reply-To"] = ", ".join(str(a) for a in message.reply_to)
        if headers:
            msg["headers"] = headers
        attachments, images = [], []
        for att in message.attachments:
            content = base64.b64encode(att.data).decode("ascii")
            if att.inline:
                if att.maintype != "image" or not att.content_id:
                    # `images[].type` "must start with image/" and `name` is the Content-ID
                    raise ProviderError(
                        Outcome.REJECTED,
                        f"mandrill carries only images with a Content-ID inline, not "
                        f"{att.filename} ({att.content_type})",
                    )
                images.append(
                    {"type": att.content_type, "name": att.content_id, "content": content}
                )
            else:
                attachments.append(
                    {"type": att.content_type, "name": att.filename, "content": content}
                )
        if attachments:
            msg["attachments"] = attachments
        if images:
            msg["images"] = images
        if message.tags:
            for tag in message.tags:
                if tag.startswith("_") or len(tag) > _MAX_TAG_LENGTH:
                    raise ProviderError(
                        Outcome.REJECTED,
                        f"mandrill tags must be at most {_MAX_TAG_LENGTH} characters and not "
                        f"start with '_': {tag!r}",
                    )
            msg["tags"] = list(message.tags)
        if message.metadata:
            msg["metadata"] = dict(message.metadata)
        return HttpRequest(
            "POST", "/messages/send.json", json={"key": self.credential.reveal(), "message": msg}
        )

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        results = json_body(resp)
        if isinstance(results, dict) and results.get("status") == "error":
            raise self.classify_error(resp)  # an error payload, whatever the status says
        if (
            not isinstance(results, list)
            or not results
            or not all(isinstance(r, dict) for r in results)
        ):
            raise ProviderError(
                Outcome.AMBIGUOUS,
                self.error_message(resp, "unexpected reply to messages/send (not a result list)"),
                status=resp.status_code,
            )
        accepted = [r for r in results if r.get("status") not in _REFUSED]
        refused = [r for r in results if r.get("status") in _REFUSED]
        if not accepted:
            raise self._all_refused(resp, refused)
        message_id = next((str(r["_id"]) for r in accepted if r.get("_id")), None)
        detail = ""
        if refused:
            detail = "refused: " + "; ".join(_describe(r) for r in refused)
        queued = sorted({str(r["queued_reason"]) for r in accepted if r.get("queued_reason")})
        if queued:
            detail = "; ".join(filter(None, [detail, "queued: " + ", ".join(queued)]))
        refusals = tuple((str(r.get("email", "?")).lower(), _describe(r)) for r in refused)
        return Receipt(self.name, message_id=message_id, detail=detail, refused=refusals)

    def _all_refused(self, resp: HttpResponse, refused: list[dict[str, Any]]) -> ProviderError:
        """Every recipient rejected or invalid: the sender's setup, or the recipients' fault."""
        reasons = {str(r.get("reject_reason") or "") for r in refused}
        # a sending-domain/account reason fails over; suppression lists (hard-bounce, spam,
        # unsub, custom, rule...) and invalid addresses are permanent for these recipients
        outcome = Outcome.PROVIDER if reasons & _ACCOUNT_REASONS else Outcome.PERMANENT
        text = "every recipient refused: " + "; ".join(_describe(r) for r in refused)
        return ProviderError(outcome, self.error_message(resp, text), status=resp.status_code)

    def error_words(self, resp: HttpResponse) -> str | None:
        return coded_words(json_body(resp), "name")

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        body = json_body(resp)
        name = body.get("name") if isinstance(body, dict) else None
        return _ERROR_OUTCOMES.get(name) if isinstance(name, str) else None

    # --- health --------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        # users/ping2: "Validate an API key and respond to a ping", x-readonly in the OAS
        return HttpRequest("POST", "/users/ping2.json", json={"key": self.credential.reveal()})

    def check_response(self, resp: HttpResponse) -> Health:
        if 200 <= resp.status_code < 300:
            body = json_body(resp)
            if isinstance(body, dict) and body.get("PING") == "PONG!":
                return Health(True, f"key accepted by {self.host} (PONG!)")
            if isinstance(body, dict) and body.get("status") == "error":
                err = self.classify_error(resp)
                return Health(False, err.message, err.outcome)
            return Health(
                False,
                self.error_message(resp, "unexpected reply to users/ping2"),
                Outcome.PROVIDER,
            )
        return super().check_response(resp)


def _describe(result: dict[str, Any]) -> str:
    reason = result.get("reject_reason")
    status = str(result.get("status") or "?")
    return f"{result.get('email', '?')} {status}" + (f" ({reason})" if reason else "")


def _header_object(provider: str, headers: list[tuple[str, str]]) -> dict[str, str]:
    """Custom headers as the JSON object the API takes; a repeated name cannot be carried."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers:
        if name.lower() in seen:
            raise ProviderError(
                Outcome.REJECTED, f"{provider} cannot carry the {name} header more than once"
            )
        seen.add(name.lower())
        out[name] = value
    return out

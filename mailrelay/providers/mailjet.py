"""Mailjet Send API v3.1.

Sources: Mailjet's "Send API v3.1" guide (mailjet/api-documentation `guides/_send-api.md` and
the stored dev.mailjet.com copy: body, SandboxMode, the per-message Status/Errors reply and
the error-code table); the 401 body from mailjet/mailjet-apiv3-go's tests; the 429 answer
(an HTML page, no reset header) from mailjet/mailjet-apiv3-nodejs issue #178 [3P].
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import LABELS, MIME_PARTS, Capability, Outcome, Receipt
from mailrelay.providers.httpapi import HttpProvider, HttpRequest, json_body, status_outcome

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

# The v3.1 error table: these say the key or the sender is not allowed, not the message.
_PROVIDER_CODES = frozenset(
    {
        "mj-0001",  # 401 API key suspended
        "mj-0015",  # 401 bad credentials
        "send-0006",  # 403 key may not use a Sender header
        "send-0007",  # 403 SenderID not validated
        "send-0008",  # 403 From is not an authorized sender
        "send-0010",  # the key cannot use the template
    }
)
# Limits or rules of Mailjet's own that another provider may not share: fail over.
_REJECTED_CODES = frozenset(
    {
        "mj-0008",  # more than 50 items in an array (attachments, headers)
        "mj-0011",  # payload over Mailjet's size limit (15 MB)
        "send-0011",  # a header Mailjet forbids in Headers
        "send-0015",  # more than 50 recipients
    }
)
_RANK = {Outcome.PROVIDER: 0, Outcome.TRANSIENT: 1, Outcome.REJECTED: 2, Outcome.PERMANENT: 3}


def _person(addr: Address) -> dict[str, str]:
    out = {"Email": addr.email}
    if addr.name:
        out["Name"] = addr.name
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _collect_errors(body: Any) -> list[dict[str, Any]]:
    """The error objects of a reply: a global error, or every failed message's Errors."""
    if not isinstance(body, dict):
        return []
    messages = body.get("Messages")
    if isinstance(messages, list):
        out: list[dict[str, Any]] = []
        for m in messages:
            if isinstance(m, dict) and m.get("Status") == "error":
                errs = m.get("Errors")
                if isinstance(errs, list) and errs:
                    out.extend(e for e in errs if isinstance(e, dict))
                else:
                    out.append({"ErrorMessage": "message refused"})
        return out
    if "ErrorMessage" in body or "ErrorCode" in body:
        return [body]
    return []


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        text = str(e.get("ErrorMessage") or "").strip()
        code = e.get("ErrorCode")
        related = e.get("ErrorRelatedTo")
        if code:
            text = f"{code} {text}".strip()
        if isinstance(related, list) and related:
            text += f" [{', '.join(str(r) for r in related)}]"
        if text:
            parts.append(text)
    return "; ".join(parts)


def _outcome(error: dict[str, Any], http_status: int) -> Outcome:
    code = str(error.get("ErrorCode") or "")
    status = error.get("StatusCode")
    status = status if isinstance(status, int) else http_status
    if code in _PROVIDER_CODES or status in (401, 403):
        return Outcome.PROVIDER
    if status == 429 or status >= 500:
        return Outcome.TRANSIENT
    if code in _REJECTED_CODES or status == 413:
        return Outcome.REJECTED
    if status in (400, 422) or code.startswith(("mj-", "send-")):
        return Outcome.PERMANENT
    return status_outcome(status)


class MailjetProvider(HttpProvider):
    type: ClassVar[str] = "mailjet"
    url_schemes: ClassVar[tuple[str, ...]] = ("mailjet",)
    default_base_url: ClassVar[str] = "https://api.mailjet.com"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS | {Capability.SANDBOX}
    max_tags: ClassVar[int | None] = 1  # tags map to CustomCampaign: one campaign per message
    # ReplyTo is a single object in v3.1; joining several would be a silent change
    single_reply_to: ClassVar[bool] = True
    # "To" is mandatory in v3.1 (mj-0003); cc/bcc-only mail needs another provider
    needs_to: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /v3/REST/apikey"

    def __init__(self, name: str, *, api_key: Secret, secret_key: Secret, **options: Any) -> None:
        super().__init__(name, **options)
        self.api_key = api_key
        self.secret_key = secret_key

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> MailjetProvider:
        return cls(
            cfg.name,
            api_key=cfg.get_required_secret("api_key"),
            secret_key=cfg.get_required_secret("secret_key"),
            **cls.common_options(cfg, sandbox=True),
        )

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """`mailjet://API_KEY:SECRET_KEY@`."""
        if not url.username or not url.password:
            raise url.error("the API key and secret key are needed: mailjet://KEY:SECRET@")
        if url.host or url.path.strip("/"):
            raise url.error("a mailjet URL takes no host or path (use ?base_url=)")
        return {"api_key": url.username, "secret_key": url.password}

    def _auth(self) -> tuple[str, str]:
        # Basic auth: username = API key, password = secret key
        return (self.api_key.reveal(), self.secret_key.reveal())

    # --- send --------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        msg: dict[str, Any] = {"From": _person(message.sender)}
        msg["To"] = [_person(a) for a in message.to]
        if message.cc:
            msg["Cc"] = [_person(a) for a in message.cc]
        if message.bcc:
            msg["Bcc"] = [_person(a) for a in message.bcc]
        if message.reply_to:
            msg["ReplyTo"] = _person(message.reply_to[0])
        if message.subject:
            msg["Subject"] = message.subject
        if message.text is not None:
            msg["TextPart"] = message.text
        if message.html is not None:
            msg["HTMLPart"] = message.html
        if message.headers:
            msg["Headers"] = {name: value for name, value in message.headers}
        attachments = [a for a in message.attachments if not a.inline]
        if attachments:
            msg["Attachments"] = [
                {
                    "ContentType": a.content_type,
                    "Filename": a.filename,
                    "Base64Content": _b64(a.data),
                }
                for a in attachments
            ]
        inline = [a for a in message.attachments if a.inline]
        if inline:
            msg["InlinedAttachments"] = [
                {
                    "ContentType": a.content_type,
                    "Filename": a.filename,
                    "ContentID": a.content_id or a.filename,
                    "Base64Content": _b64(a.data),
                }
                for a in inline
            ]
        if message.tags:
            msg["CustomCampaign"] = message.tags[0]
        if message.metadata:
            # EventPayload is a string echoed in events; JSON keeps the key/value pairs
            msg["EventPayload"] = json.dumps(message.metadata, separators=(",", ":"))
        body: dict[str, Any] = {"Messages": [msg]}
        if self.sandbox:
            body["SandboxMode"] = True  # a root property, not per message
        return HttpRequest(
            "POST",
            "/v3.1/send",
            json=body,
            auth=self._auth(),
            headers={"Accept": "application/json"},
        )

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        if _collect_errors(body):
            # messages are processed independently: a 2xx can still carry Status "error"
            raise self.classify_error(resp)
        messages = body.get("Messages") if isinstance(body, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else {}
        recipients: list[dict[str, Any]] = []
        if isinstance(first, dict):
            for key in ("To", "Cc", "Bcc"):
                items = first.get(key)
                if isinstance(items, list):
                    recipients.extend(r for r in items if isinstance(r, dict))
        message_id: str | None = None
        if recipients:
            # MessageID is the one GET /v3/REST/message/{id} takes; 0 in SandboxMode
            mid = recipients[0].get("MessageID") or recipients[0].get("MessageUUID")
            message_id = str(mid) if mid else None
        detail = f"{len(recipients)} recipient(s)" if len(recipients) > 1 else ""
        if self.sandbox:
            detail = "sandbox: validated, not delivered"
        return Receipt(self.name, message_id, detail)

    def error_words(self, resp: HttpResponse) -> str | None:
        return _describe(_collect_errors(json_body(resp))) or None

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        """The most hopeful class among the reply's errors (provider before transient...)."""
        outcomes = [_outcome(e, resp.status_code) for e in _collect_errors(json_body(resp))]
        return min(outcomes, key=_RANK.__getitem__) if outcomes else None

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest(
            "GET", "/v3/REST/apikey", auth=self._auth(), headers={"Accept": "application/json"}
        )

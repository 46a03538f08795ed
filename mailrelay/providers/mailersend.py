"""MailerSend email API (`POST /v1/email`).

Sources: the official Go SDK mailersend/mailersend-go (`email.go` for the body, `api_quota.go`
for the health check); developers.mailersend.com "General API resources" and the help page
"REST API response codes" (202 + `X-Message-Id`, the suppression warnings, 421/408 meaning
"try again later"); anymail's MailerSend backend (no metadata; the filename decides the
attachment type; ALL_SUPPRESSED has no message id) [3P]; `#MS…` codes inside 422 messages
as seen in public code [3P]: 42207 unverified from-domain, 42212 recipient outside the trial
domain, 42222 trial quota, 42225 trial unique-recipient limit, 42235 a plan-gated header.

Custom headers are an Enterprise-plan feature at MailerSend. We declare them (an Enterprise
account carries them) and treat MailerSend's plan refusal (#MS42235, or a 422 on `headers`)
as `rejected`: the engine then fails over to a provider that carries headers, without
cooldown, instead of stopping as if the message were bad everywhere.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import MIME_PARTS, Capability, Health, Outcome, ProviderError, Receipt
from mailrelay.providers.httpapi import ApiKeyProvider, HttpRequest, json_body

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse

# Account/domain problems reported as 422 validation errors.
_PROVIDER_CODES = ("#MS42207", "#MS42212", "#MS42222", "#MS42225")
_PLAN_CODES = ("#MS42235",)  # the plan does not allow this (custom) header


def _person(addr: Address) -> dict[str, str]:
    out = {"email": addr.email}
    if addr.name:
        out["name"] = addr.name
    return out


def _field_errors(body: Any) -> dict[str, list[str]]:
    """The `errors` object of a 422: {"field.path": ["message", ...]}."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, value in errors.items():
        msgs = value if isinstance(value, list) else [value]
        out[str(key)] = [str(m) for m in msgs if m]
    return out


def _describe(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    message = str(body.get("message") or "").strip()
    details = [f"{k}: {m[0]}" for k, m in _field_errors(body).items() if m and m[0] not in message]
    if details:
        return f"{message} ({'; '.join(details)})" if message else "; ".join(details)
    return message or None


def _seconds_until(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), 26 * 3600.0)


class MailersendProvider(ApiKeyProvider):
    type: ClassVar[str] = "mailersend"
    url_schemes: ClassVar[tuple[str, ...]] = ("mailersend",)
    default_base_url: ClassVar[str] = "https://api.mailersend.com/v1"
    # No metadata field at all [anymail]; no sandbox flag and no idempotency key found.
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | {Capability.TAGS}
    max_tags: ClassVar[int | None] = (
        5  # the commonly cited limit [U]; over it fails over rather than stopping
    )
    # reply_to is a single object; joining several would be a silent change
    single_reply_to: ClassVar[bool] = True
    # "to" is required (at least one); cc/bcc-only mail needs another provider
    needs_to: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /v1/api-quota"
    # POST /v1/email: 120 requests a minute (developers.mailersend.com/general, "Rate limits")
    default_rate_limit: ClassVar[tuple[str, ...]] = ("120/min",)

    credential_key: ClassVar[str] = "api_token"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential.reveal()}", "Accept": "application/json"}

    # --- send --------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        body: dict[str, Any] = {
            "from": _person(message.sender),
            "to": [_person(a) for a in message.to],
        }
        if message.cc:
            body["cc"] = [_person(a) for a in message.cc]
        if message.bcc:
            body["bcc"] = [_person(a) for a in message.bcc]
        if message.reply_to:
            body["reply_to"] = _person(message.reply_to[0])
        body["subject"] = message.subject
        if message.text is not None:
            body["text"] = message.text
        if message.html is not None:
            body["html"] = message.html
        if message.headers:
            body["headers"] = [{"name": n, "value": v} for n, v in message.headers]
        if message.attachments:
            # MailerSend takes the type from the filename; there is no content-type field
            body["attachments"] = []
            for a in message.attachments:
                item = {
                    "content": base64.b64encode(a.data).decode("ascii"),
                    "filename": a.filename,
                    "disposition": "inline" if a.inline else "attachment",
                }
                if a.inline:
                    item["id"] = a.content_id or a.filename  # referenced as cid:<id>
                body["attachments"].append(item)
        if message.tags:
            body["tags"] = list(message.tags)
        return HttpRequest("POST", "/email", json=body, headers=self._headers())

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        warnings = body.get("warnings") if isinstance(body, dict) else None
        warnings = (
            [w for w in warnings if isinstance(w, dict)] if isinstance(warnings, list) else []
        )
        for w in warnings:
            if w.get("type") == "ALL_SUPPRESSED":
                # 202, but nothing goes out: every recipient is on a suppression list
                # (bounce, complaint, unsubscribe). Permanent for these recipients: failing
                # over would bypass a suppression that exists for a reason.
                text = str(w.get("message") or "all recipients are suppressed")
                who = _suppressed(w)
                raise ProviderError(
                    Outcome.PERMANENT,
                    self.error_message(resp, f"{text} ({who})" if who else text),
                    status=resp.status_code,
                )
        some = [w for w in warnings if w.get("type") == "SOME_SUPPRESSED"]
        detail = "; ".join(f"{w.get('message') or w.get('type')} ({_suppressed(w)})" for w in some)
        refused = tuple(
            (
                str(r["email"]).lower(),
                f"{r['email']} suppressed by MailerSend ({_suppressed_why(r)})",
            )
            for w in some
            for r in w.get("recipients") or []
            if isinstance(r, dict) and r.get("email")
        )
        message_id = resp.headers.get("X-Message-Id") or None
        return Receipt(self.name, message_id, detail, refused=refused)

    def error_words(self, resp: HttpResponse) -> str | None:
        return _describe(json_body(resp))

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        status = resp.status_code
        if status == 422:
            words = self.error_message(resp)
            fields = _field_errors(json_body(resp))
            if any(code in words for code in _PLAN_CODES) or any(
                k == "headers" or k.startswith("headers.") for k in fields
            ):
                return Outcome.REJECTED
            if any(code in words for code in _PROVIDER_CODES):
                return Outcome.PROVIDER
            return Outcome.PERMANENT
        if status in (408, 421):  # "error on our system" / maintenance: try again later
            return Outcome.TRANSIENT
        return None

    def limit_kind(self, resp: HttpResponse) -> str | None:
        # #MS42901: the daily request quota is spent (#MS42903 is the per-minute rate)
        if resp.status_code == 429 and (
            "MS42901" in self.error_message(resp)
            or resp.headers.get("x-apiquota-remaining", "").strip() == "0"
        ):
            return "quota"
        return super().limit_kind(resp)

    def retry_after(self, resp: HttpResponse) -> float | None:
        """Retry-After wins; else, with the daily API quota used up, wait for its reset."""
        wait = super().retry_after(resp)
        if wait is None and resp.headers.get("x-apiquota-remaining", "").strip() == "0":
            # the daily request quota resets at the next UTC midnight (ISO 8601 header)
            wait = _seconds_until(resp.headers.get("x-apiquota-reset"))
        return wait

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        # Every call (this one too) spends one request of the daily API quota.
        return HttpRequest("GET", "/api-quota", headers=self._headers())

    def check_response(self, resp: HttpResponse) -> Health:
        if 200 <= resp.status_code < 300:
            body = json_body(resp)
            if isinstance(body, dict) and body.get("remaining") == 0:
                return Health(
                    False,
                    f"{self.host}: the daily API quota is used up until {body.get('reset')}",
                    Outcome.TRANSIENT,
                )
            if isinstance(body, dict) and "remaining" in body:
                return Health(
                    True,
                    f"HTTP {resp.status_code} from {self.host}: "
                    f"{body.get('remaining')}/{body.get('quota')} API requests left today",
                )
        return super().check_response(resp)


def _suppressed(warning: dict[str, Any]) -> str:
    parts = []
    for r in warning.get("recipients") or []:
        if not isinstance(r, dict):
            continue
        why = _suppressed_why(r)
        parts.append(f"{r.get('email')}: {why}" if why else str(r.get("email")))
    return "; ".join(parts)


def _suppressed_why(recipient: dict[str, Any]) -> str:
    # the docs' example says "reasons", anymail reads "reason": accept both
    reasons = recipient.get("reasons") or recipient.get("reason") or []
    return ", ".join(str(x) for x in reasons) if isinstance(reasons, list) else str(reasons)

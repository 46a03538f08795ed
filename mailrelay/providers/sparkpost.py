"""SparkPost Transmissions API (US and EU accounts).

Sources: the API Blueprint in SparkPost/developers.sparkpost.com (`content/api/index.apib`
for auth, hosts and the error table; `transmissions.apib` for the body and the 200-with-
rejections reply; `account.apib` for the health check), cross-checked with anymail's
SparkPost backend for the cc/bcc recipe (SparkPost's "CC and BCC with the REST API" FAQ).
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
from mailrelay.providers.httpapi import HttpProvider, HttpRequest, json_body

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

# index.apib "Endpoints": the two regions are separate accounts with their own keys.
REGION_HOSTS = {
    "us": "https://api.sparkpost.com/api/v1",
    "eu": "https://api.eu.sparkpost.com/api/v1",
}

# index.apib error table and transmissions.apib: 420 = daily/monthly/sandbox sending limit
# exceeded (nothing in the transmission is sent); 7001 = unconfigured/unverified sending domain.
_ACCOUNT_CODES = frozenset({"7001"})
_SPECIALS = set('()<>[]:;@\\,."')


def _mailbox(addr: Address) -> str:
    """ "Name <email>" in UTF-8: SparkPost wants header values without RFC 2047 encoding."""
    if not addr.name:
        return addr.email
    name = addr.name
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr.email}>"


def _errors(resp: HttpResponse) -> list[dict[str, Any]]:
    body = json_body(resp)
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(errors: list[dict[str, Any]]) -> str:
    """ "message: description (code N)" for each error, in SparkPost's own words."""
    parts = []
    for e in errors:
        text = str(e.get("message") or "").strip()
        desc = str(e.get("description") or "").strip()
        if desc and desc != text:
            text = f"{text}: {desc}" if text else desc
        if e.get("code"):
            text = f"{text} (code {e['code']})"
        if text:
            parts.append(text)
    return "; ".join(parts)


class SparkpostProvider(HttpProvider):
    type: ClassVar[str] = "sparkpost"
    url_schemes: ClassVar[tuple[str, ...]] = ("sparkpost",)
    default_base_url: ClassVar[str] = REGION_HOSTS["us"]
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS | {Capability.SANDBOX}
    max_tags: ClassVar[int | None] = (
        10  # recipient tags: at most 10 per recipient (recipient-lists.apib)
    )
    health_check: ClassVar[str] = "GET /api/v1/account"

    def __init__(self, name: str, *, api_key: Secret, region: str = "us", **options: Any) -> None:
        if options.get("base_url") is None:
            options["base_url"] = REGION_HOSTS[region]
        super().__init__(name, **options)
        self.api_key = api_key
        self.region = region

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> SparkpostProvider:
        return cls(
            cfg.name,
            api_key=cfg.get_required_secret("api_key"),
            region=cfg.get_choice("region", tuple(REGION_HOSTS), "us"),
            **cls.common_options(cfg, sandbox=True),
        )

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """`sparkpost://KEY@` or `sparkpost://KEY@eu` (the host, if any, is the region)."""
        key = url.username or url.password
        if not key:
            raise url.error("the API key is missing: sparkpost://API_KEY@")
        values: dict[str, Any] = {"api_key": key}
        if url.host:
            if url.host not in REGION_HOSTS:
                raise url.error(f"the host is the region ({', '.join(REGION_HOSTS)}) or empty")
            values["region"] = url.host
        if url.path.strip("/"):
            raise url.error("a sparkpost URL takes no path")
        return values

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "region": self.region}

    def _headers(self) -> dict[str, str]:
        # index.apib "Authentication": the raw key, no scheme.
        return {"Authorization": self.api_key.reveal(), "Accept": "application/json"}

    # --- send --------------------------------------------------------------------------

    def build_send(self, message: Message) -> HttpRequest:
        content: dict[str, Any] = {"from": {"email": message.sender.email}}
        if message.sender.name:
            content["from"]["name"] = message.sender.name
        content["subject"] = message.subject
        if message.text is not None:
            content["text"] = message.text
        if message.html is not None:
            content["html"] = message.html
        if message.reply_to:
            content["reply_to"] = ", ".join(_mailbox(a) for a in message.reply_to)
        headers = {name: value for name, value in message.headers}
        if message.cc:  # Cc is a visible header; the cc addresses are extra recipients
            headers["CC"] = ", ".join(_mailbox(a) for a in message.cc)
        if headers:
            content["headers"] = headers
        attachments = [a for a in message.attachments if not a.inline]
        if attachments:
            content["attachments"] = [
                {"name": a.filename, "type": a.content_type, "data": _b64(a.data)}
                for a in attachments
            ]
        inline = [a for a in message.attachments if a.inline]
        if inline:
            # transmissions.apib "Inline Image Object": name is the Content-ID (cid:NAME)
            content["inline_images"] = [
                {"name": a.content_id or a.filename, "type": a.content_type, "data": _b64(a.data)}
                for a in inline
            ]

        # Every recipient shows the same To header; cc/bcc recipients are told apart only by
        # not being in it (cc also by the CC header). SparkPost FAQ "CC and BCC with REST".
        to_header = ", ".join(_mailbox(a) for a in message.to) or None
        recipients = []
        seen: set[str] = set()
        for addr in (*message.to, *message.cc, *message.bcc):
            if addr.email.lower() in seen:
                continue
            seen.add(addr.email.lower())
            address: dict[str, Any] = {"email": addr.email}
            if addr.name:
                address["name"] = addr.name
            if to_header:
                address["header_to"] = to_header
            recipient: dict[str, Any] = {"address": address}
            if message.tags:
                recipient["tags"] = list(message.tags)
            recipients.append(recipient)

        body: dict[str, Any] = {"recipients": recipients, "content": content}
        if message.metadata:
            body["metadata"] = dict(message.metadata)
        if self.sandbox:
            body["options"] = {"sandbox": True}
        return HttpRequest("POST", "/transmissions", json=body, headers=self._headers())

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, dict):
            return Receipt(self.name, None, f"HTTP {resp.status_code} without results")
        accepted = results.get("total_accepted_recipients")
        rejected = results.get("total_rejected_recipients")
        # transmissions.apib: a 200 can carry rcpt_to_errors; with nobody accepted, nothing
        # goes out, and the reasons are recipient validation ("required field is missing").
        if accepted == 0 and isinstance(rejected, int) and rejected > 0:
            rcpt_errors = results.get("rcpt_to_errors")
            words = _describe(rcpt_errors if isinstance(rcpt_errors, list) else [])
            text = f"all {rejected} recipient(s) rejected" + (f": {words}" if words else "")
            raise ProviderError(
                Outcome.PERMANENT, self.error_message(resp, text), status=resp.status_code
            )
        detail = f"{rejected} recipient(s) rejected" if rejected else ""
        tid = results.get("id")
        return Receipt(self.name, str(tid) if tid not in (None, "") else None, detail)

    def error_words(self, resp: HttpResponse) -> str | None:
        return _describe(_errors(resp)) or None

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        codes = {str(e.get("code")) for e in _errors(resp)}
        if resp.status_code == 420 or codes & _ACCOUNT_CODES:
            return Outcome.PROVIDER
        return None

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest("GET", "/account", headers=self._headers())

    def check_response(self, resp: HttpResponse) -> Health:
        if 200 <= resp.status_code < 300:
            body = json_body(resp)
            results = body.get("results") if isinstance(body, dict) else None
            status = results.get("status") if isinstance(results, dict) else None
            # account.apib: status defaults to "active"; anything else cannot send
            if isinstance(status, str) and status and status != "active":
                return Health(False, f"{self.host}: account status is {status!r}", Outcome.PROVIDER)
            return Health(True, f"HTTP {resp.status_code} from {self.host}: account {status}")
        if resp.status_code == 403:
            # index.apib: 403 = the key lacks the permission (401 = bad key); a key limited
            # to Transmissions cannot read the account, which still proves it authenticates.
            return Health(
                True,
                f"{self.host}: key accepted (HTTP 403: it may not read the account, "
                "so its sending permission is unverified)",
            )
        return super().check_response(resp)


def _b64(data: bytes) -> str:
    # transmissions.apib: base64 without CRLF line breaks
    return base64.b64encode(data).decode("ascii")

"""Mailgun Messages API (v3), US and EU regions.

Sources: Mailgun's OpenAPI spec (github.com/mailgun/mailgun-mcp-server src/openapi.yaml at
commit 78d610f7), documentation.mailgun.com (sending, tagging, API response codes,
API keys).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

from mailrelay.providers.base import LABELS, MIME_PARTS, Capability, Health, Outcome, Receipt
from mailrelay.providers.httpapi import HttpProvider, HttpRequest, error_text, json_body

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.httpapi import HttpResponse
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

# The domain's own region decides the host (openapi.yaml `servers`; docs "send-http").
REGION_HOSTS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
# Mailgun docs, "Tags": a single message may be marked with up to 3 tags.
MAX_TAGS = 3
# openapi.yaml / reference: 1,000 recipients per message.
MAX_RECIPIENTS = 1000

# The 429 body names the wait: "... limit exceeded, try again after 120 seconds" (openapi.yaml)
_TRY_AGAIN = re.compile(r"try again (?:after|in) (\d+(?:\.\d+)?) ?s", re.IGNORECASE)
# 400/403 bodies that blame the domain or account, not the message. The reference marks the
# 400 case [U]; observed bodies (mailgun/wordpress-plugin#68, "Sandbox subdomains are for test
# purposes only ... authorized recipients") and the docs' 403 "access denied" agree.
_ACCOUNT_PROBLEM = re.compile(
    r"not allowed to send|authorized recipients|sandbox subdomains|free accounts are for test"
    r"|not verified|unverified|disabled|suspended|domain not found",
    re.IGNORECASE,
)
_RATE_PROBLEM = re.compile(r"limit exceeded|try again", re.IGNORECASE)


class MailgunProvider(HttpProvider):
    type: ClassVar[str] = "mailgun"
    success_body: ClassVar[Literal["", "json", "json-if-any"]] = "json"
    url_schemes: ClassVar[tuple[str, ...]] = ("mailgun",)
    default_base_url: ClassVar[str] = REGION_HOSTS["us"]
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS | {Capability.SANDBOX}
    max_tags: ClassVar[int | None] = MAX_TAGS
    max_recipients: ClassVar[int | None] = MAX_RECIPIENTS
    # `to` is required by the send form (openapi.yaml); another provider may take it
    needs_to: ClassVar[bool] = True
    # "Need at least one of 'text', 'html', 'amp-html' or 'template'" (openapi.yaml)
    needs_body: ClassVar[bool] = True
    health_check: ClassVar[str] = "GET /v4/domains/{domain}"

    def __init__(
        self,
        name: str,
        *,
        api_key: Secret,
        domain: str,
        region: str = "us",
        timeout: float | None = None,
        base_url: str | None = None,
        sandbox: bool = False,
    ) -> None:
        super().__init__(
            name, timeout=timeout, base_url=base_url or REGION_HOSTS[region], sandbox=sandbox
        )
        self.api_key = api_key
        self.domain = domain
        self.region = region

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> MailgunProvider:
        return cls(
            cfg.name,
            api_key=cfg.get_required_secret("api_key"),
            domain=cfg.get_required_str("domain"),
            region=cfg.get_choice("region", tuple(REGION_HOSTS), "us"),
            **cls.common_options(cfg, sandbox=True),
        )

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """`mailgun://KEY@DOMAIN` (or `mailgun://api:KEY@DOMAIN`); region etc. in the query."""
        if url.username == "api" and url.password:
            key = url.password
        elif url.username and url.password is None:
            key = url.username
        else:
            raise url.error("expected mailgun://API_KEY@SENDING_DOMAIN")
        if not url.host:
            raise url.error("the sending domain is missing: mailgun://API_KEY@SENDING_DOMAIN")
        if url.port or url.path.strip("/"):
            raise url.error("expected mailgun://API_KEY@SENDING_DOMAIN, without port or path")
        return {"api_key": key, "domain": url.host}

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["domain"] = self.domain
        info["region"] = self.region
        return info

    # --- send ------------------------------------------------------------------------

    def _auth(self) -> tuple[str, str]:
        return ("api", self.api_key.reveal())  # Basic auth, user "api" (openapi.yaml basicAuth)

    def build_send(self, message: Message) -> HttpRequest:
        auth = self._auth()
        # (name, (filename, data[, type])) parts; filename None makes a plain form field, so
        # the body is always multipart/form-data, the encoding attachments require.
        parts: list[tuple[str, tuple[Any, ...]]] = []

        def field(name: str, value: str) -> None:
            parts.append((name, (None, value)))

        field("from", str(message.sender))
        for kind, addrs in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc)):
            for addr in addrs:
                field(kind, str(addr))
        field("subject", message.subject)
        if message.text:
            field("text", message.text)
        if message.html:
            field("html", message.html)
        if message.reply_to:
            field("h:Reply-To", ", ".join(str(a) for a in message.reply_to))
        for hname, hvalue in message.headers:
            field(f"h:{hname}", hvalue)
        for tag in message.tags:
            field("o:tag", tag)
        for key, value in message.metadata.items():
            field(f"v:{key}", value)
        if self.sandbox:
            field("o:testmode", "yes")  # accepted, not delivered, still billed (docs)
        for att in message.attachments:
            if att.inline:
                # inline parts are referenced as cid:<filename> (openapi.yaml `inline`)
                cid = att.content_id or att.filename
                parts.append(("inline", (cid, att.data, att.content_type)))
            else:
                parts.append(("attachment", (att.filename, att.data, att.content_type)))
        return HttpRequest(
            "POST", f"/v3/{quote(self.domain, safe='')}/messages", files=parts, auth=auth
        )

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        message_id = body.get("id") if isinstance(body, dict) else None
        detail = "test mode: accepted, not delivered" if self.sandbox else ""
        return Receipt(
            provider=self.name,
            message_id=str(message_id) if message_id else None,
            detail=detail,
        )

    # --- errors ------------------------------------------------------------------------

    def retry_after(self, resp: HttpResponse) -> float | None:
        """Retry-After when sent; else the wait the 429 text names (no header documented)."""
        header = super().retry_after(resp)
        if header is not None or resp.status_code != 429:
            return header
        found = _TRY_AGAIN.search(error_text(resp))
        return float(found.group(1)) if found else None

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        if resp.status_code in (400, 403):
            text = error_text(resp)
            if _RATE_PROBLEM.search(text):
                return Outcome.TRANSIENT
            if _ACCOUNT_PROBLEM.search(text):
                return Outcome.PROVIDER
        return None

    # --- health ------------------------------------------------------------------------

    def build_check(self) -> HttpRequest:
        return HttpRequest("GET", f"/v4/domains/{quote(self.domain, safe='')}", auth=self._auth())

    def check_response(self, resp: HttpResponse) -> Health:
        if resp.status_code in (401, 403):
            err = self.classify_error(resp)
            # docs "API keys": a domain sending key may only POST messages
            return Health(
                False,
                f"{err.message} (a domain sending key can send but cannot read the domain; "
                "`status` needs an account API key)",
                err.outcome,
            )
        if not 200 <= resp.status_code < 300:
            return super().check_response(resp)
        body = json_body(resp)
        domain = body.get("domain") if isinstance(body, dict) else None
        if not isinstance(domain, dict):
            return Health(True, f"HTTP {resp.status_code} from {self.host}")
        state = str(domain.get("state") or "unknown")
        kind = str(domain.get("type") or "")
        if state != "active":
            return Health(
                False, f"domain {self.domain} is {state} at {self.host}", Outcome.PROVIDER
            )
        detail = f"domain {self.domain} is active"
        if kind == "sandbox":
            detail += " (sandbox domain: authorized recipients only)"
        return Health(True, detail)

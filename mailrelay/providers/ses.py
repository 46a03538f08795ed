"""Amazon SES v2 (`SendEmail`), signed with AWS SigV4.

The message travels as `Content.Raw`: the MIME from `Message.to_mime()`, base64, so cc,
reply-to, custom headers, attachments and inline images all arrive as written, and
`Destination` lists every envelope recipient (Bcc only appears there).

Tags and metadata: SES "message tags" (`EmailTags`) are name/value pairs whose names and
values may hold only ASCII letters, digits, `_` and `-` (at most 256 each). Our metadata is
name/value, so each metadata item becomes one `EmailTag` (usable in configuration-set event
publishing and CloudWatch dimensions); metadata outside that alphabet is refused as
`rejected` rather than altered. Our tags are plain labels with no name, so, like
django-anymail's default, each tag travels as an `X-Tag` header in the raw message (any
characters, visible in SES notifications that include headers).

Sources: botocore `sesv2/2019-09-27/service-2.json` (endpoint, shapes, error shapes,
signing name `ses`); docs.aws.amazon.com/ses (quotas, SendEmail); anymail docs/esps/amazon_ses.rst.
"""

from __future__ import annotations

import base64
import json
import re
from email import policy as email_policy
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
from mailrelay.providers.httpapi import HttpProvider, HttpRequest, error_text, json_body
from mailrelay.providers.seserrors import (
    PERMANENT_TYPES,
    PROVIDER_TYPES,
    THROTTLES,
    TRANSIENT_TYPES,
    UNVERIFIED,
    error_type,
)
from mailrelay.ratelimit.spec import Unit

if TYPE_CHECKING:
    from mailrelay.message import Address, Message
    from mailrelay.providers.httpapi import HttpResponse
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

# Regions with an SES endpoint `email.{region}.amazonaws.com` (botocore endpoints.json,
# service "email", partitions aws and aws-us-gov; FIPS hosts differ and are left to base_url).
REGIONS = (
    "af-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
)
SIGNING_NAME = "ses"  # botocore sesv2 metadata.signingName (not "sesv2")
SEND_PATH = "/v2/email/outbound-emails"  # SendEmail: POST, rest-json
ACCOUNT_PATH = "/v2/email/account"  # GetAccount: GET, read-only
MAX_RECIPIENTS = 50  # To + Cc + Bcc per message (SES developer guide, quotas)
MAX_RAW_BASE64 = 40 * 1024 * 1024  # v2 API limit, counted after base64 (SES v2 quotas)
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # MessageTag Name/Value (botocore docs)


class _Unsigned:
    """What AWS4Auth reads and writes of a request (a requests PreparedRequest's shape)."""

    def __init__(self, method: str, url: str, body: bytes | None) -> None:
        from requests.structures import CaseInsensitiveDict

        self.method = method
        self.url = url
        self.body = body
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()


def _envelope(addr: Address, role: str) -> str:
    """The bare address SES takes in the envelope: ASCII local part, Punycode domain."""
    local, _, domain = addr.email.rpartition("@")
    # Destination docs (botocore): no SMTPUTF8, so the local part must be 7-bit ASCII
    if not local.isascii():
        raise ProviderError(
            Outcome.REJECTED,
            f"ses cannot carry the {role} address {addr.email!r}: SES takes only ASCII "
            "before the @ (no SMTPUTF8)",
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise ProviderError(
            Outcome.REJECTED, f"ses cannot carry the {role} address {addr.email!r}"
        ) from None
    return f"{local}@{ascii_domain}"


def _display(addr: Address) -> str:
    from email.utils import formataddr

    bare = _envelope(addr, "sender")
    return formataddr((addr.name, bare), charset="utf-8") if addr.name else bare


class SesProvider(HttpProvider):
    type: ClassVar[str] = "ses"
    url_schemes: ClassVar[tuple[str, ...]] = ("ses",)
    default_base_url: ClassVar[str] = "https://email.us-east-1.amazonaws.com"
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    max_recipients: ClassVar[int | None] = MAX_RECIPIENTS
    health_check: ClassVar[str] = "GET /v2/email/account"
    # The sending rate and 24-hour quota count recipients ("Sending quotas", SES developer
    # guide); the rate itself is the account's own (1/s in the sandbox): no default number.
    default_rate_unit: ClassVar[Unit] = "recipients"

    def __init__(
        self,
        name: str,
        *,
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Secret | None = None,
        region: str = "us-east-1",
        configuration_set: str | None = None,
        timeout: float | None = None,
        base_url: str | None = None,
    ) -> None:
        super().__init__(
            name,
            timeout=timeout,
            base_url=base_url or f"https://email.{region}.amazonaws.com",
        )
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.region = region
        self.configuration_set = configuration_set

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> SesProvider:
        if not cfg.has("region"):
            # identities live in one region: guessing one would only yield "not verified"
            raise cfg.error("region", "is required (the AWS region of your SES identities)")
        return cls(
            cfg.name,
            access_key_id=cfg.get_required_secret("access_key_id"),
            secret_access_key=cfg.get_required_secret("secret_access_key"),
            session_token=cfg.get_secret("session_token"),
            region=cfg.get_choice("region", REGIONS, "us-east-1"),
            configuration_set=cfg.get_str("configuration_set"),
            **cls.common_options(cfg, sandbox=False),
        )

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """`ses://ACCESS_KEY_ID:SECRET_ACCESS_KEY@REGION` (percent-encode `/` and `+`)."""
        if not url.username or not url.password:
            raise url.error(
                "give the access key id and secret key: ses://ACCESS_KEY_ID:SECRET@REGION"
            )
        if not url.host:
            raise url.error("give the region as the host: ses://ACCESS_KEY_ID:SECRET@eu-west-1")
        if url.port or url.path.strip("/"):
            raise url.error(
                "the URL takes only the region as host (use ?configuration_set=NAME "
                "for a configuration set)"
            )
        return {
            "access_key_id": url.username,
            "secret_access_key": url.password,
            "region": url.host,
        }

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["region"] = self.region
        if self.configuration_set:
            info["configuration_set"] = self.configuration_set
        if self.session_token is not None:
            info["credentials"] = "temporary (session token)"
        return info

    # --- request ---------------------------------------------------------------------------

    def _signed(self, method: str, path: str, body: Any = None) -> HttpRequest:
        """The request with its SigV4 headers, sent by the same client as every provider.

        requests_aws4auth signs any object with `method`, `url`, `headers` and `body`; it
        is handed the exact bytes and headers that leave (the Host it signs is the one
        http.client sends: the port only when not the scheme's default)."""
        from requests_aws4auth import AWS4Auth  # only SES sends pay for it

        token = self.session_token.reveal() if self.session_token is not None else None
        auth = AWS4Auth(
            self.access_key_id.reveal(),
            self.secret_access_key.reveal(),
            self.region,
            SIGNING_NAME,
            session_token=token,
        )
        data = json.dumps(body).encode("utf-8") if body is not None else None
        unsigned = _Unsigned(method, self.base_url + path, data)
        if data is not None:
            unsigned.headers["Content-Type"] = "application/json"
        auth(unsigned)
        # the client serialises `json` with the same json.dumps: the signed bytes leave
        return HttpRequest(method, path, json=body, headers=dict(unsigned.headers))

    def build_send(self, message: Message) -> HttpRequest:
        email_tags = self._email_tags(message)
        mime = message.to_mime()
        for tag in message.tags:
            mime["X-Tag"] = tag
        data = base64.b64encode(mime.as_bytes(policy=email_policy.SMTP)).decode("ascii")
        if len(data) > MAX_RAW_BASE64:
            raise ProviderError(
                Outcome.REJECTED,
                f"message too large for ses: {len(data)} bytes after base64, limit "
                f"{MAX_RAW_BASE64}",
            )
        # Each envelope recipient once, in the first list that names it (as recipients()).
        seen: set[str] = set()
        destination: dict[str, list[str]] = {}
        for key, addrs in (
            ("ToAddresses", message.to),
            ("CcAddresses", message.cc),
            ("BccAddresses", message.bcc),
        ):
            for addr in addrs:
                if addr.email.lower() not in seen:
                    seen.add(addr.email.lower())
                    destination.setdefault(key, []).append(_envelope(addr, "recipient"))
        body: dict[str, Any] = {
            # the identity SES checks; SES shows it as the From, so it keeps the display
            # name ("Name <addr>", RFC 2047 when not ASCII: SES v2 SendEmail reference)
            "FromEmailAddress": _display(message.sender),
            "Destination": destination,
            "Content": {"Raw": {"Data": data}},
        }
        if email_tags:
            body["EmailTags"] = email_tags
        if self.configuration_set:
            body["ConfigurationSetName"] = self.configuration_set
        return self._signed("POST", SEND_PATH, body)

    def _email_tags(self, message: Message) -> list[dict[str, str]]:
        tags: list[dict[str, str]] = []
        for key, value in message.metadata.items():
            for what, text in (("key", key), ("value", value)):
                if not _TAG_TEXT.match(text):
                    raise ProviderError(
                        Outcome.REJECTED,
                        f"ses carries metadata as message tags, which allow only ASCII "
                        f"letters, digits, '_' and '-' (1-256 characters); metadata {key!r} "
                        f"has a {what} outside that",
                    )
            tags.append({"Name": key, "Value": value})
        return tags

    def build_check(self) -> HttpRequest:
        return self._signed("GET", ACCOUNT_PATH)

    # --- response --------------------------------------------------------------------------

    def parse_success(self, resp: HttpResponse, message: Message) -> Receipt:
        body = json_body(resp)
        message_id = body.get("MessageId") if isinstance(body, dict) else None
        if not isinstance(message_id, str) or not message_id:
            # a 200 without a MessageId is not SES's documented answer; the mail may be queued
            raise ProviderError(
                Outcome.AMBIGUOUS,
                self.error_message(resp, "HTTP 2xx without a MessageId (it may have been sent)"),
                status=resp.status_code,
            )
        return Receipt(provider=self.name, message_id=message_id)

    def error_words(self, resp: HttpResponse) -> str | None:
        code = error_type(resp)
        words = error_text(resp)
        return f"{code}: {words}" if code and code not in words else words

    def limit_kind(self, resp: HttpResponse) -> str | None:
        code = error_type(resp)
        # "Daily message quota exceeded" vs "Maximum sending rate exceeded" (both codes)
        if code == "LimitExceededException" or (
            code in THROTTLES and "quota" in error_text(resp).lower()
        ):
            return "quota"
        return "rate" if code in THROTTLES else super().limit_kind(resp)

    def outcome_for(self, resp: HttpResponse) -> Outcome | None:
        code = error_type(resp)
        if code in TRANSIENT_TYPES:
            return Outcome.TRANSIENT
        if code in PROVIDER_TYPES or (
            code == "MessageRejected" and UNVERIFIED.search(error_text(resp)) is not None
        ):
            return Outcome.PROVIDER
        if code in PERMANENT_TYPES:
            return Outcome.PERMANENT
        return None

    def check_response(self, resp: HttpResponse) -> Health:
        if not 200 <= resp.status_code < 300:
            return super().check_response(resp)
        body = json_body(resp)
        if not isinstance(body, dict):
            return Health(True, f"HTTP {resp.status_code} from {self.host}")
        parts: list[str] = []
        enforcement = body.get("EnforcementStatus")
        if body.get("SendingEnabled") is False:
            detail = f"{self.region}: sending is disabled for this account"
            if isinstance(enforcement, str):
                detail += f" (enforcement status {enforcement})"
            return Health(False, detail, Outcome.PROVIDER)
        parts.append("sending enabled")
        if body.get("ProductionAccessEnabled") is False:
            parts.append("sandbox: only verified recipients")
        elif body.get("ProductionAccessEnabled") is True:
            parts.append("production access")
        if isinstance(enforcement, str) and enforcement != "HEALTHY":
            parts.append(f"enforcement status {enforcement}")
        quota = body.get("SendQuota")
        if isinstance(quota, dict):
            sent, limit, rate = (
                quota.get("SentLast24Hours"),
                quota.get("Max24HourSend"),
                quota.get("MaxSendRate"),
            )
            if isinstance(sent, (int, float)) and isinstance(limit, (int, float)):
                unlimited = limit < 0  # -1 means no daily quota (GetAccount docs)
                parts.append(f"{sent:g}/{'unlimited' if unlimited else f'{limit:g}'} in 24 h")
                if not unlimited and sent >= limit:
                    return Health(
                        False,
                        f"{self.region}: daily sending quota used up ({sent:g}/{limit:g})",
                        Outcome.PROVIDER,
                    )
            if isinstance(rate, (int, float)):
                parts.append(f"max {rate:g}/s")
        return Health(True, f"{self.region}: {', '.join(parts)}")

"""The Provider contract: what every adapter implements and what it returns.

An adapter turns a `Message` into one attempt at one provider and reports exactly one
outcome: a `Receipt` when the provider accepted the message, or a `ProviderError` carrying
the outcome class (docs/architecture.md) and the provider's own words. The engine decides
what to do with the class; adapters never retry and never know about other providers.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from mailrelay.datarecord import record

if TYPE_CHECKING:
    from mailrelay.config import ProviderConfig, ProviderURL
    from mailrelay.message import Message
    from mailrelay.secrets import Secret


class Outcome(str, Enum):
    """How one attempt ended (docs/architecture.md, "Outcome classes")."""

    ACCEPTED = "accepted"  # the provider took the message: stop
    TRANSIENT = "transient"  # down, overloaded, rate limited: next provider, cooldown
    PROVIDER = "provider"  # credentials, unverified domain, suspended: next, longer cooldown
    REJECTED = "rejected"  # a 4xx not attributable to message or provider: next, no cooldown
    PERMANENT = "permanent"  # the message itself is bad: stop at once
    AMBIGUOUS = "ambiguous"  # the request went out and the answer was lost: may be delivered

    def __str__(self) -> str:
        return self.value


# What a provider can carry; the docs matrix (docs/providers.md) is kept in step with these.
CAPABILITIES = (
    "cc",
    "bcc",
    "reply_to",
    "headers",
    "attachments",
    "inline",
    "tags",
    "metadata",
    "sandbox",
    "idempotency",
)


@record(frozen=True)
class Receipt:
    """A provider accepted the message."""

    provider: str
    message_id: str | None = None
    detail: str = ""


@record(frozen=True)
class Health:
    """The result of a probe that sends nothing."""

    ok: bool
    detail: str = ""
    outcome: Outcome | None = None  # the class a failure would have had when sending


class ProviderError(Exception):
    """One attempt failed; `outcome` says how, `message` says why in the provider's words."""

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.outcome}: {self.message}"


class CapabilityError(ProviderError):
    """This provider cannot carry something the message uses: `rejected`, the engine moves
    on, and it is no failure of the provider (no count, no last_error, no cooldown)."""

    def __init__(self, message: str) -> None:
        super().__init__(Outcome.REJECTED, message)


TAG_HEADER = "X-Mailrelay-Tag"
METADATA_HEADER = "X-Mailrelay-Metadata"


def tag_header_lines(message: Message) -> bytes:
    """Tags and metadata as header lines, for the providers that carry mail whole (SMTP,
    sendmail, outbox): one `X-Mailrelay-Tag: TAG` per tag and one
    `X-Mailrelay-Metadata: KEY=VALUE` per metadata item, folded and RFC 2047-encoded as the
    message's own headers are (CRLF ends); b"" when the message has neither."""
    fields = [(TAG_HEADER, tag) for tag in message.tags]
    fields += [(METADATA_HEADER, f"{k}={v}") for k, v in message.metadata.items()]
    return header_lines(fields)


def header_lines(fields: list[tuple[str, str]]) -> bytes:
    """Header fields folded and RFC 2047-encoded as the message's own are (CRLF ends)."""
    if not fields:
        return b""
    from email import policy as email_policy

    policy = email_policy.SMTP
    out = []
    for name, value in fields:
        if "\r" in value or "\n" in value:
            raise ProviderError(
                Outcome.PERMANENT, f"{name}: line breaks (CR/LF) are not allowed in a header"
            )
        out.append(policy.header_factory(name, value).fold(policy=policy).encode("ascii"))
    return b"".join(out)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return min(seconds, 24 * 3600.0)


def features_used(message: Message) -> list[str]:
    """Which optional parts of CAPABILITIES a message uses (sandbox/idempotency excluded)."""
    checks = {
        "cc": bool(message.cc),
        "bcc": bool(message.bcc),
        "reply_to": bool(message.reply_to),
        "headers": bool(message.headers),
        "attachments": any(not a.inline for a in message.attachments),
        "inline": any(a.inline for a in message.attachments),
        "tags": bool(message.tags),
        "metadata": bool(message.metadata),
    }
    return [name for name, used in checks.items() if used]


class Provider(ABC):
    """One configured provider. Subclasses are registered in `registry.py`."""

    type: ClassVar[str]
    """The config `type` and the default name, e.g. "smtp"."""
    url_schemes: ClassVar[tuple[str, ...]] = ()
    """URL schemes this provider accepts in `--provider URL`."""
    secrets: tuple[Secret, ...] = ()
    """The secrets its config names (set when built from a config), for the config checks."""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """Which of CAPABILITIES this provider carries."""
    max_tags: ClassVar[int | None] = None
    """How many tags one message may carry, where the provider limits it."""
    default_timeout: ClassVar[float] = 30.0
    health_check: ClassVar[str] = ""
    """What `check()` does, for the docs, e.g. "GET /server"."""

    def __init__(self, name: str, *, timeout: float | None = None) -> None:
        self.name = name
        self.timeout = self.default_timeout if timeout is None else timeout

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ProviderConfig) -> Provider:
        """Build the provider from its config table; unknown keys are the caller's check."""

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        """Turn `--provider URL` into the same keys as a config table."""
        raise url.error(f"{cls.type} cannot be given as a URL")

    @abstractmethod
    def send(self, message: Message, *, timeout: float) -> Receipt:
        """Hand the message over. Returns a Receipt or raises ProviderError."""

    @abstractmethod
    def check(self, *, timeout: float) -> Health:
        """Probe the provider without sending anything."""

    def describe(self) -> dict[str, str]:
        """Non-secret settings for `providers` and `--dry-run`."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections; called once when the command ends."""

    def hold_connections(self) -> None:  # noqa: B027 - optional hook
        """Many messages are coming (a batch, a queue flush): keep connections open between
        them where the protocol allows it; `close()` releases them."""

    def check_capabilities(self, message: Message) -> None:
        """Refuse, as `rejected`, a message using something this provider cannot carry.

        Dropping data silently is worse than failing over to a provider that can carry it.
        """
        missing = [f for f in features_used(message) if f not in self.capabilities]
        if missing:
            raise CapabilityError(
                f"{self.type} cannot carry {', '.join(m.replace('_', '-') for m in missing)}",
            )
        if self.max_tags is not None and len(message.tags) > self.max_tags:
            raise CapabilityError(
                f"{self.type} takes at most {self.max_tags} tag(s), the message has "
                f"{len(message.tags)}",
            )

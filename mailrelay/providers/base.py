"""The Provider contract: what every adapter declares, implements and returns.

An adapter turns a `Message` into one attempt at one provider and reports exactly one
outcome: a `Receipt` when the provider accepted the message, or a `ProviderError` carrying
the outcome class (docs/architecture.md) and the provider's own words. The engine decides
what to do with the class; adapters never retry and never know about other providers.

`Provider.send` is a template method: it refuses, as `rejected` and before anything goes
out, a message the adapter's declared capabilities and limits (class attributes) say it
cannot carry, then calls the adapter's `_deliver` hook.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, final

from mailrelay.datarecord import record
from mailrelay.ratelimit.spec import Budget, Unit

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.ratelimit.learn import Observed
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


class Capability(str, Enum):
    """What a provider can carry; the docs matrix (docs/providers.md) follows these.

    A member equals its value ("cc" == Capability.CC), so a declaration is checked by the
    type checker while the docs and tests may still name capabilities as text.
    """

    CC = "cc"
    BCC = "bcc"
    REPLY_TO = "reply_to"
    HEADERS = "headers"
    ATTACHMENTS = "attachments"
    INLINE = "inline"
    TAGS = "tags"
    METADATA = "metadata"
    SANDBOX = "sandbox"  # a provider-side test mode (config `sandbox = true`)
    IDEMPOTENCY = "idempotency"  # the provider drops a repeat of the same message

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        """The name in messages and docs, e.g. "reply-to"."""
        return self.value.replace("_", "-")


MIME_PARTS: frozenset[Capability] = frozenset(
    {
        Capability.CC,
        Capability.BCC,
        Capability.REPLY_TO,
        Capability.HEADERS,
        Capability.ATTACHMENTS,
        Capability.INLINE,
    }
)
"""What a MIME message itself carries: every provider that sends one whole has these."""
LABELS: frozenset[Capability] = frozenset({Capability.TAGS, Capability.METADATA})
"""Tags and metadata: APIs carry them beside the message; SMTP, sendmail and the outbox as
X-Mailrelay-Tag / X-Mailrelay-Metadata header fields (`tag_header_lines`)."""


@record(frozen=True)
class Receipt:
    """A provider accepted the message."""

    provider: str
    message_id: str | None = None
    detail: str = ""
    # recipients the provider refused while taking the message for the others: address ->
    # its words (Mandrill answers per recipient)
    refused: tuple[tuple[str, str], ...] = ()
    rate: Observed | None = None  # the limit the answer's header fields told (ratelimit/)


@record(frozen=True)
class Health:
    """The result of a probe that sends nothing."""

    ok: bool
    detail: str = ""
    outcome: Outcome | None = None  # the class a failure would have had when sending


class ProviderError(Exception):
    """One attempt failed; `outcome` says how, `message` says why in the provider's words.

    `local`: the failure is this host's, not the provider's (a command missing here, ...):
    it is reported, but never recorded as the provider's health in a state other hosts share.
    """

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        local: bool = False,
        limited: str | None = None,
        rate: Observed | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.local = local
        # "rate" (a 429 of the pace: not a failure of the provider) or "quota" (a spent
        # daily/monthly quota: the provider rests until it resets); the outcome class stays
        self.limited = limited
        self.rate = rate

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


def features_used(message: Message) -> list[Capability]:
    """Which capabilities a message needs (sandbox and idempotency are the provider's)."""
    checks = {
        Capability.CC: bool(message.cc),
        Capability.BCC: bool(message.bcc),
        Capability.REPLY_TO: bool(message.reply_to),
        Capability.HEADERS: bool(message.headers),
        Capability.ATTACHMENTS: any(not a.inline for a in message.attachments),
        Capability.INLINE: any(a.inline for a in message.attachments),
        Capability.TAGS: bool(message.tags),
        Capability.METADATA: bool(message.metadata),
    }
    return [capability for capability, used in checks.items() if used]


def has_body(message: Message) -> bool:
    """Whether the message has a body an API can send: a non-empty text or HTML part.

    The one definition for every provider that `needs_body` (APIs refuse empty content
    values as well as missing ones, e.g. SendGrid's `content[].value`).
    """
    return bool(message.text) or bool(message.html)


class Provider(ABC):
    """One configured provider. Subclasses are registered in `registry.py`.

    A subclass declares what it can carry in the class attributes below and implements
    `from_config`, `_deliver` and `check`; `send` is not overridden.
    """

    type: ClassVar[str]
    """The config `type` and the default name, e.g. "smtp"."""
    url_schemes: ClassVar[tuple[str, ...]] = ()
    """URL schemes this provider accepts in `--provider URL`."""
    secrets: tuple[Secret, ...] = ()
    """The secrets its config names (set when built from a config), for the config checks."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    """What this provider carries; a message needing anything else is refused."""
    max_tags: ClassVar[int | None] = None
    """How many tags one message may carry, where the provider limits it."""
    max_recipients: ClassVar[int | None] = None
    """How many envelope recipients (To, Cc and Bcc together) one message may have."""
    single_reply_to: ClassVar[bool] = False
    """The API has one reply-to field: a message with several reply-to is refused."""
    needs_to: ClassVar[bool] = False
    """The API needs at least one To recipient (Cc/Bcc-only mail goes elsewhere)."""
    needs_body: ClassVar[bool] = False
    """The API needs a text or HTML body (`has_body`)."""
    needs_subject: ClassVar[bool] = False
    """The API refuses an empty subject."""
    reaches_local_addresses: ClassVar[bool] = True
    """It can deliver to and from local or internal addresses (root@localhost, a dotless or
    .internal domain, an IP literal: `message.is_local_address`); the HTTP APIs cannot."""
    default_timeout: ClassVar[float] = 30.0
    default_rate_limit: ClassVar[tuple[str, ...]] = ()
    """The provider's published limit(s), e.g. ("2/s",): the budget when none is configured."""
    default_rate_unit: ClassVar[Unit] = "requests"
    """What the budget counts: "requests", or "recipients" (To, Cc and Bcc) where they count."""
    rate_headers: ClassVar[bool] = False
    """Its answers may tell its limit in header fields (the HTTP APIs): the pace is learned."""
    budget: Budget = Budget()
    """The budget this provider is paced by (`rate_limit`, `unit`; set by the registry)."""
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

    @final
    def send(self, message: Message, *, timeout: float) -> Receipt:
        """Hand the message over. Returns a Receipt or raises ProviderError.

        What the declarations say this provider cannot carry is refused here, once for every
        adapter, before anything goes out; then `_deliver` makes the one attempt.
        """
        self.check_capabilities(message)
        return self._deliver(message, timeout=timeout)

    @abstractmethod
    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        """Make the one attempt (the message fits the declarations): a Receipt or a
        ProviderError. `timeout` is the seconds this attempt may take."""

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
        """Refuse with a CapabilityError (`rejected`, and no failure of this provider) a
        message it cannot carry as it is: it uses a capability not declared, or breaks a
        declared limit.

        Dropping data silently is worse than failing over to a provider that can carry it.
        """
        missing = [f for f in features_used(message) if f not in self.capabilities]
        if missing:
            raise self._cannot(f"cannot carry {', '.join(m.label for m in missing)}")
        if self.max_tags is not None and len(message.tags) > self.max_tags:
            raise self._cannot(
                f"takes at most {self.max_tags} tag(s), the message has {len(message.tags)}"
            )
        if self.single_reply_to and len(message.reply_to) > 1:
            raise self._cannot(
                "takes one reply-to address (its API has a single reply-to field), the "
                f"message has {len(message.reply_to)}"
            )
        if self.needs_to and not message.to:
            raise self._cannot("needs at least one To recipient")
        if self.max_recipients is not None:
            count = len(message.recipients())
            if count > self.max_recipients:
                raise self._cannot(
                    f"takes at most {self.max_recipients} recipients per message (To, Cc and "
                    f"Bcc together), the message has {count}"
                )
        if self.needs_body and not has_body(message):
            raise self._cannot("needs a text or HTML body")
        if self.needs_subject and not message.subject:
            raise self._cannot("needs a subject")
        if not self.reaches_local_addresses:
            from mailrelay.message import is_local_address

            for addr in (message.sender, *message.recipients()):
                if is_local_address(addr.email):
                    # refused, not a failure of this provider: SMTP or sendmail may take it
                    raise self._cannot(f"cannot deliver to or from the local address {addr.email}")

    def _cannot(self, what: str) -> CapabilityError:
        return CapabilityError(f"{self.type} {what}")

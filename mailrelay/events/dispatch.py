"""One webhook request → the provider's scheme checked → its events. `read_events` is all
a front end (serve's webhooks blueprint) calls; it never acts on a request it refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from mailrelay.events import parse_a, parse_b, signed, sns
from mailrelay.events.model import Event, WebhookError, WebhookRequest
from mailrelay.events.ses import parse_ses
from mailrelay.events.settings import WebhookSettings, check_basic_auth

Parser = Callable[[WebhookRequest, tuple[str, str]], list[Event]]

PARSERS: dict[str, Parser] = {
    "mailgun": parse_a.parse_mailgun,
    "sendgrid": parse_a.parse_sendgrid,
    "postmark": parse_a.parse_postmark,
    "brevo": parse_a.parse_brevo,
    "mailjet": parse_a.parse_mailjet,
    "mailersend": parse_b.parse_mailersend,
    "resend": parse_b.parse_resend,
    "sparkpost": parse_b.parse_sparkpost,
    "mandrill": parse_b.parse_mandrill,
}
SIGNED = ("mailgun", "sendgrid", "mandrill", "mailersend", "resend")
BASIC_ONLY = ("postmark", "brevo", "mailjet", "sparkpost")
WEBHOOK_TYPES = (*PARSERS, "ses")


class Reading:
    """What a request held: its events, or an SNS subscription it confirmed."""

    def __init__(self, events: list[Event], *, confirmed: bool = False) -> None:
        self.events = events
        self.confirmed = confirmed


def _verify_signed(request: WebhookRequest, settings: WebhookSettings, now: datetime) -> None:
    key = settings.key()
    kind = settings.type
    if kind == "mailgun":
        signed.mailgun(request, key, now)
    elif kind == "sendgrid":
        signed.sendgrid(request, key, now)
    elif kind == "mandrill":
        signed.mandrill(request, key, settings.url or request.url)
    elif kind == "mailersend":
        signed.mailersend(request, key)
    else:
        signed.svix(request, key, now)


def read_events(request: WebhookRequest, settings: WebhookSettings, now: datetime) -> Reading:
    """Authenticate the request by the provider's scheme, then parse it. Raises
    WebhookError (forged, stale or malformed) and nothing else for a bad request."""
    kind = settings.type
    source = (settings.provider, kind)
    if kind == "ses":
        envelope = sns.envelope_of(request.json())
        sns.verify(envelope, settings, now)
        if settings.basic_auth:
            check_basic_auth(request, settings)
        if envelope.get("Type") == "SubscriptionConfirmation":
            sns.confirm(envelope)
            return Reading([], confirmed=True)
        if envelope.get("Type") != "Notification":
            return Reading([])
        return Reading(parse_ses(envelope, source))
    if kind == "mandrill":
        request.form = signed.form_fields(request.body)
    if kind in SIGNED:
        _verify_signed(request, settings, now)
    if settings.basic_auth or kind in BASIC_ONLY:
        check_basic_auth(request, settings)
    try:
        return Reading(PARSERS[kind](request, source))
    except WebhookError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        from mailrelay.events.model import malformed

        raise malformed(f"not a {kind} event payload: {type(exc).__name__}") from None

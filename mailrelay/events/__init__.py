"""Provider events: what becomes of a message after a provider accepted it.

`model` (the normalised `Event`, `WebhookRequest`, the refusals), `settings` (a provider's
webhook keys, HTTP Basic), `signed` (the ESPs' signature schemes), `sns` (Amazon SNS
signatures and the pinned certificate host), `parse_a`/`parse_b`/`ses` (each ESP's payload
→ events), `dispatch` (`read_events`: one request checked and parsed), `records` (the
dedupe, suppression and message-status records in the state store). No web framework here:
serve's webhooks blueprint is the front end.
"""

from mailrelay.events.dispatch import WEBHOOK_TYPES, Reading, read_events
from mailrelay.events.model import EVENT_TYPES, REJECT_REASONS, Event, WebhookError, WebhookRequest
from mailrelay.events.settings import WEBHOOK_KEYS, WebhookSettings, webhook_settings

__all__ = [
    "EVENT_TYPES",
    "REJECT_REASONS",
    "WEBHOOK_KEYS",
    "WEBHOOK_TYPES",
    "Event",
    "Reading",
    "WebhookError",
    "WebhookRequest",
    "WebhookSettings",
    "read_events",
    "webhook_settings",
]

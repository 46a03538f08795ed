"""A provider's webhook settings, read from its table in the config: `webhook_signing_key`
(the key the ESP signs with), `webhook_basic_auth` (a list of "user:password" secrets, so
that one can be rotated in before the other is removed), `sns_topic_arns` (Amazon SES: the
SNS topics allowed to post) and `webhook_url` (Mandrill signs the URL it calls: give it when
a proxy in front of serve changes the URL). Every value is a secret in the usual forms
(a string, { env = ... }, { command = ... }, { file = ... }) and is scrubbed from output.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from mailrelay.datarecord import field, record
from mailrelay.events.model import WebhookRequest, forged
from mailrelay.providers.options import WEBHOOK_KEYS, ProviderConfig, ProviderSpec
from mailrelay.secrets import Secret, remember, remember_auth

__all__ = ["WEBHOOK_KEYS", "WebhookSettings", "check_basic_auth", "webhook_settings"]


@record
class WebhookSettings:
    provider: str
    type: str
    signing_key: Secret | None = None
    basic_auth: list[Secret] = field(default_factory=list)
    topic_arns: list[str] = field(default_factory=list)
    url: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.signing_key or self.basic_auth or self.topic_arns)

    def key(self) -> str:
        """The signing key, revealed (a provider without one was refused before)."""
        if self.signing_key is None:
            raise forged(f"provider {self.provider!r} has no webhook_signing_key")
        return self.signing_key.reveal()


def webhook_settings(spec: ProviderSpec) -> WebhookSettings:
    """The webhook settings of one configured provider (a ConfigError names a bad key)."""
    config = ProviderConfig.of(spec)
    settings = WebhookSettings(spec.name, spec.type)
    settings.signing_key = config.get_secret("webhook_signing_key")
    settings.basic_auth = _secret_list(config, "webhook_basic_auth")
    settings.topic_arns = config.get_str_list("sns_topic_arns")
    settings.url = config.get_str("webhook_url")
    return settings


def _secret_list(config: ProviderConfig, key: str) -> list[Secret]:
    value: Any = config._get(key)  # a list of secrets, read item by item
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    secrets = []
    for item in items:
        secret = Secret(item, source=config.source, provider=config.name, key=key)
        secrets.append(secret)
    if not secrets:
        raise config.error(key, "must name at least one user:password")
    return secrets


def check_basic_auth(request: WebhookRequest, settings: WebhookSettings) -> None:
    """Refuse a request whose HTTP Basic credentials are none of the configured ones."""
    given = request.header("Authorization") or ""
    scheme, _, encoded = given.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise forged("no HTTP Basic credentials (give the ESP https://user:password@host/...)")
    try:
        presented = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        raise forged("the HTTP Basic credentials are not base64") from None
    matched = False
    for secret in settings.basic_auth:
        expected = secret.reveal()
        user, _, password = expected.partition(":")
        remember_auth(user, password)
        remember(expected)
        matched |= hmac.compare_digest(presented, expected.encode("utf-8"))
    if not matched:
        raise forged("the HTTP Basic credentials are not one of webhook_basic_auth")

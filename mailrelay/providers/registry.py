"""Provider type name → class, and building a provider from its spec.

Built-in providers are listed the way a third-party package would declare them in the
`mailrelay.providers` entry-point group ("module:Class"), and imported only when used, so a
send through SMTP never pays for `requests`.
"""

from __future__ import annotations

import importlib

from mailrelay.errors import ConfigError, did_you_mean
from mailrelay.providers.base import Provider
from mailrelay.providers.options import ProviderConfig, ProviderSpec
from mailrelay.ratelimit.spec import budget_from_config

ENTRY_POINT_GROUP = "mailrelay.providers"

BUILTIN: dict[str, str] = {
    "smtp": "mailrelay.providers.smtp:SmtpProvider",
    "outbox": "mailrelay.providers.outbox:OutboxProvider",
    "sendmail": "mailrelay.providers.sendmail:SendmailProvider",
    "mailgun": "mailrelay.providers.mailgun:MailgunProvider",
    "sendgrid": "mailrelay.providers.sendgrid:SendgridProvider",
    "postmark": "mailrelay.providers.postmark:PostmarkProvider",
    "mandrill": "mailrelay.providers.mandrill:MandrillProvider",
    "ses": "mailrelay.providers.ses:SesProvider",
    "sparkpost": "mailrelay.providers.sparkpost:SparkpostProvider",
    "resend": "mailrelay.providers.resend:ResendProvider",
    "brevo": "mailrelay.providers.brevo:BrevoProvider",
    "mailjet": "mailrelay.providers.mailjet:MailjetProvider",
    "mailersend": "mailrelay.providers.mailersend:MailersendProvider",
}

# URL scheme → type; a scheme not listed here is taken to be the type's own name.
SCHEMES: dict[str, str] = {"smtps": "smtp"}


def _load(target: str) -> type[Provider]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{target} is not a Provider class")
    return cls


def _plugins() -> dict[str, str]:
    from importlib.metadata import entry_points  # only when a type is not built in

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def types() -> list[str]:
    """Every known provider type: built-ins first, then plug-ins."""
    return list(BUILTIN) + sorted(set(_plugins()) - set(BUILTIN))


def url_schemes() -> list[str]:
    return sorted({*BUILTIN, *SCHEMES})


def type_for_scheme(scheme: str) -> str | None:
    type_ = SCHEMES.get(scheme, scheme)
    if type_ in BUILTIN or type_ in _plugins():
        return type_
    return None


def get(type_: str, *, source: str | None = None, provider: str | None = None) -> type[Provider]:
    """The class for a provider type; an unknown type is a configuration error."""
    target = BUILTIN.get(type_) or _plugins().get(type_)
    if target is None:
        known = types()
        raise ConfigError(
            f"unknown provider type {type_!r}{did_you_mean(type_, known)}; known: "
            + ", ".join(known),
            source=source,
            provider=provider,
            key="type",
        )
    return _load(target)


def _build(spec: ProviderSpec) -> tuple[Provider, ProviderConfig]:
    cls = get(spec.type, source=spec.source, provider=spec.name)
    cfg = ProviderConfig.of(spec)
    provider = cls.from_config(cfg)
    provider.secrets = tuple(cfg.secrets)
    # every type takes `rate_limit` and `unit` (mailrelay.ratelimit); the class names defaults
    provider.budget = budget_from_config(cfg, cls.default_rate_limit, cls.default_rate_unit)
    return provider, cfg


def build(spec: ProviderSpec) -> Provider:
    """The provider a spec configures; a bad or unknown key is a ConfigError."""
    provider, cfg = _build(spec)
    cfg.finish()
    return provider


# stands in for a missing required key while `problems` reads on (a literal secret, too)
PLACEHOLDER = "mailrelay-config-check-stand-in"


def problems(spec: ProviderSpec) -> list[ConfigError]:
    """Everything wrong with a spec, each secret resolved (`config check`).

    A provider's from_config stops at its first bad key; to name every problem, the spec is
    read again without that key (a bad value) or with a stand-in (a missing key), once per
    key, so the keys after it are read too, and the unknown keys (with the one likely meant,
    `hots` for `host`) are named along with the missing one."""
    found: list[ConfigError] = []
    values = dict(spec.values)
    tried: set[str] = set()
    while True:
        try:
            _, cfg = _build(ProviderSpec(spec.name, spec.type, values, spec.source))
            break
        except ConfigError as exc:
            key = exc.key
            if key is None or key == "type" or key in tried:
                return found if key in tried else [*found, exc]
            found.append(exc)
            tried.add(key)
            if key in values:
                del values[key]  # a bad value: read on as if it were not given
            else:
                values[key] = PLACEHOLDER  # missing: read on as if it were given
    found += cfg.unknown_keys()
    for secret in cfg.secrets:
        try:
            secret.reveal()
        except ConfigError as exc:
            found.append(exc)
    return found

"""The providers of a configuration as `ProviderSpec`s: from the `[[providers]]` tables of
the file or from `--provider` URLs (each named, the names unique); and which of their keys
hold secrets.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailrelay.errors import ConfigError
from mailrelay.providers.options import ProviderSpec, ProviderURL


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def specs_from_tables(tables: object, source: str) -> list[ProviderSpec]:
    if not isinstance(tables, list):
        raise ConfigError("providers must be an array of tables: [[providers]]", source=source)
    specs: list[ProviderSpec] = []
    taken: set[str] = set()
    for i, table in enumerate(tables, 1):
        label = f"#{i}"
        if not isinstance(table, dict):
            raise ConfigError("must be a table", source=source, provider=label)
        type_ = table.get("type")
        name = table.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(
                "must be a non-empty string", source=source, provider=label, key="name"
            )
        if not isinstance(type_, str) or not type_:
            raise ConfigError(
                "is required (smtp, outbox, sendmail, mailgun, ...)",
                source=source,
                provider=name or label,
                key="type",
            )
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(
                "must be true or false", source=source, provider=name or label, key="enabled"
            )
        if not enabled:
            continue
        if name is not None and name in taken:
            raise ConfigError(
                "two providers have this name", source=source, provider=name, key="name"
            )
        name = name or _unique_name(type_, taken)
        taken.add(name)
        specs.append(ProviderSpec(name, type_, table, source))
    return specs


def specs_from_urls(urls: Sequence[str], source: str) -> list[ProviderSpec]:
    from mailrelay.providers import registry

    specs: list[ProviderSpec] = []
    taken: set[str] = set()
    for raw in urls:
        url = ProviderURL.parse(raw, source)
        type_ = registry.type_for_scheme(url.scheme)
        if type_ is None:
            raise url.error(
                f"unknown scheme {url.scheme!r}; known: {', '.join(registry.url_schemes())}"
            )
        cls = registry.get(type_, source=source, provider=url.safe)
        values = dict(url.query)
        name = values.pop("name", None) or _unique_name(type_, taken)
        if name in taken:
            raise url.error(f"two providers are named {name!r}")
        taken.add(name)
        values.update(cls.config_from_url(url))
        values["type"] = type_
        values["name"] = name
        specs.append(ProviderSpec(name, type_, values, source, from_url=True))
    return specs


def holds_literal_secret(value: object) -> bool:
    # A literal secret is any string under a secret-ish key; only used for the permission warning.
    if isinstance(value, dict):
        return any(
            (isinstance(v, str) and k in SECRET_KEYS) or holds_literal_secret(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(holds_literal_secret(v) for v in value)
    return False


SECRET_KEYS = frozenset(
    {
        "password",
        "api_key",
        "api_token",
        "server_token",
        "secret_key",
        "secret_access_key",
        "session_token",
        "token",
    }
)

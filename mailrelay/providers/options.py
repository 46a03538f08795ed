"""A provider as configured, before it is built: its table (`ProviderSpec`), typed access to
its keys (`ProviderConfig`) and the `--provider URL` form (`ProviderURL`).

This is data on the providers' side of the package: it imports nothing of the providers and
nothing of `config.py`, so the config reader, the registry and every adapter can use it
without importing each other. `registry.build(spec)` turns a spec into a provider.

Every error names where it is: the file (or `--provider`), the provider and the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from mailrelay.datarecord import record
from mailrelay.errors import ConfigError, did_you_mean
from mailrelay.secrets import Secret

# read by serve's webhooks (mailrelay.events.settings), not by the adapters
WEBHOOK_KEYS = ("webhook_signing_key", "webhook_basic_auth", "sns_topic_arns", "webhook_url")
COMMON_PROVIDER_KEYS = ("name", "type", "enabled", *WEBHOOK_KEYS)

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

C = TypeVar("C", bound=str)


@record
class ProviderSpec:
    """One provider as configured (a `[[providers]]` table or a `--provider` URL)."""

    name: str
    type: str
    values: dict[str, Any]
    source: str
    from_url: bool = False  # a `--provider` URL: every value came as text


class ProviderConfig:
    """The keys of one table, read with typed getters that name file/provider/key.

    Every getter marks its key as used; `finish()` refuses keys nobody asked for, so a
    misspelt key is an error and not a silent default. A TOML table is `typed`: a number,
    a boolean or a list must be written as one (`port = 25`, not `port = "25"`); a URL's
    values are text, and the getters read numbers and booleans from it.
    """

    def __init__(
        self,
        name: str,
        type_: str,
        values: Mapping[str, Any],
        source: str,
        *,
        typed: bool = True,
    ) -> None:
        self.name = name
        self.type = type_
        self.source = source
        self.typed = typed
        self._values = dict(values)
        self._used: set[str] = set(COMMON_PROVIDER_KEYS)
        self.secrets: list[Secret] = []  # every secret asked for, for `config check`

    @classmethod
    def of(cls, spec: ProviderSpec) -> ProviderConfig:
        return cls(spec.name, spec.type, spec.values, spec.source, typed=not spec.from_url)

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, provider=self.name, key=key)

    def has(self, key: str) -> bool:
        return key in self._values

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._values.get(key)

    def _text_in_typed(self, key: str, value: object, what: str, readable: bool) -> None:
        """Refuse a quoted value where TOML's own type says what the key is (`port = "25"`);
        `readable`: the text would read as one, so say to drop the quotes."""
        if self.typed and isinstance(value, str):
            fix = ": write it without quotes" if readable else ""
            raise self.error(key, f"must be {what}, not the string {value!r}{fix}")

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string")
        return value

    def get_required_str(self, key: str) -> str:
        value = self.get_str(key)
        if value is None:
            raise self.error(key, "is required")
        return value

    def get_int(self, key: str, default: int, *, least: int = 0, most: int | None = None) -> int:
        value = self._get(key)
        if value is None:
            return default
        self._text_in_typed(key, value, "an integer", _reads_as(int, value))
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise self.error(key, f"must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if value < least or (most is not None and value > most):
            bound = f"between {least} and {most}" if most is not None else f"at least {least}"
            raise self.error(key, f"must be {bound}, got {value}")
        return value

    def get_float(
        self, key: str, default: float, *, positive: bool = True, most: float | None = None
    ) -> float:
        value = self._get(key)
        if value is None:
            return default
        self._text_in_typed(key, value, "a number", _reads_as(float, value))
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.error(key, f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, "must be a number")
        if positive and not value > 0:
            raise self.error(key, f"must be greater than 0, got {value}")
        if most is not None and not value <= most:  # also refuses inf and nan
            raise self.error(key, f"must be at most {most:g} seconds, got {value}")
        return float(value)

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            self._text_in_typed(key, value, "true or false", value.lower() in ("true", "false"))
            return value.lower() in _TRUE
        raise self.error(key, "must be true or false")

    def get_choice(self, key: str, choices: Sequence[C], default: C) -> C:
        """One of `choices` (typed as they are, e.g. a tuple of a Literal's values)."""
        value = self.get_str(key, default)
        for choice in choices:
            if value == choice:
                return choice
        raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")

    def get_secret(self, key: str) -> Secret | None:
        """The secret under `key` (a string or { env | command | file = ... }), or None."""
        value = self._get(key)
        if value is None:
            return None
        secret = Secret(value, source=self.source, provider=self.name, key=key)
        self.secrets.append(secret)
        return secret

    def get_required_secret(self, key: str) -> Secret:
        secret = self.get_secret(key)
        if secret is None:
            raise self.error(key, "is required (a string or { env | command | file = ... })")
        return secret

    def get_str_list(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        if isinstance(value, str):  # one item (sendmail's `command` as a path)
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a list of non-empty strings")
        return list(value)

    def get_timeout(self, default: float) -> float:
        return self.get_float("timeout", default)

    def unknown_keys(self) -> list[ConfigError]:
        """A problem for every key nobody asked for, with the likely meant key."""
        known = sorted(self._used)
        return [
            self.error(key, f"unknown key for a {self.type} provider{did_you_mean(key, known)}")
            for key in sorted(set(self._values) - self._used)
        ]

    def finish(self) -> None:
        unknown = self.unknown_keys()
        if unknown:
            raise unknown[0]


def _reads_as(kind: type[float], value: object) -> bool:
    try:
        kind(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


@record
class ProviderURL:
    """A provider given as a URL, percent-decoded, for a provider's `config_from_url`."""

    raw: str
    scheme: str
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    path: str
    query: dict[str, str]
    source: str

    @property
    def safe(self) -> str:
        """The URL without credentials, for messages."""
        host = self.host or ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{host}{port}{self.path}"

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, provider=self.safe)

    @classmethod
    def parse(cls, raw: str, source: str) -> ProviderURL:
        try:
            parts = urlsplit(raw.strip())
            port = parts.port
        except ValueError:
            # never echo the raw URL or the parser's words: they can hold a password
            scheme = raw.split(":", 1)[0] if ":" in raw else "?"
            raise ConfigError(
                "not a valid URL (check the port and the percent-encoding of user and password)",
                source=source,
                provider=f"{scheme}://…",
            ) from None
        if not parts.scheme:
            raise ConfigError(
                "a provider URL needs a scheme, e.g. smtp://host:587",
                source=source,
                provider="?",
            )
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in query:
                raise ConfigError(
                    "given twice in the URL", source=source, provider=parts.scheme, key=key
                )
            query[key] = value
        return cls(
            raw=raw,
            scheme=parts.scheme.lower(),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=unquote(parts.path),
            query=query,
            source=source,
        )

"""Configuration: the TOML file and providers given as URLs, read into `Settings` (data).

A provider's table stays a `ProviderSpec` (providers/options.py); `registry.build(spec)`
makes the provider. Every error names where it is: the file (or `--provider`), the provider
and the key.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from mailrelay.configpaths import config_candidates
from mailrelay.datarecord import field, record
from mailrelay.errors import ConfigError, did_you_mean
from mailrelay.fsutil import read_regular_file
from mailrelay.providers.options import ProviderConfig, ProviderSpec, ProviderURL
from mailrelay.providerspecs import (
    SECRET_KEYS,
    holds_literal_secret,
    specs_from_tables,
    specs_from_urls,
)
from mailrelay.secrets import Secret
from mailrelay.state import is_state_url

if TYPE_CHECKING:
    from mailrelay.alerts import AlertSettings
    from mailrelay.providers.base import Provider
    from mailrelay.telemetry import TelemetrySettings

# ProviderConfig, ProviderSpec and ProviderURL are read here, and live with the providers
__all__ = [
    "SECRET_KEYS",
    "ProviderConfig",
    "ProviderSpec",
    "ProviderURL",
    "Settings",
    "load_settings",
    "specs_from_urls",
]

PolicyName = Literal["sticky", "priority", "round-robin"]
OnAmbiguous = Literal["failover", "stop"]
OnFailure = Literal["fail", "queue"]
POLICIES: tuple[PolicyName, ...] = get_args(PolicyName)
ON_AMBIGUOUS: tuple[OnAmbiguous, ...] = get_args(OnAmbiguous)
ON_FAILURE: tuple[OnFailure, ...] = get_args(OnFailure)
DEFAULT_TIMEOUT = 60.0  # total deadline of one send, across all attempts
DEFAULT_COOLDOWN = 60.0  # first cooldown after a transient failure; doubles, capped
DEFAULT_PROVIDER_COOLDOWN = 600.0  # first cooldown after a provider (account/config) failure
DEFAULT_MAX_COOLDOWN = 6 * 3600.0
DEFAULT_QUEUE_RETRY = 300.0  # first wait before a queued message is retried; doubles
DEFAULT_QUEUE_MAX_RETRY = 4 * 3600.0  # the doubling stops here
DEFAULT_QUEUE_MAX_AGE = 5 * 86400.0  # then the message moves to failed/ (sendmail's 5 days)

DEFAULTS_KEYS = (
    "from",
    "policy",
    "timeout",
    "on_ambiguous",
    "cooldown",
    "provider_cooldown",
    "max_cooldown",
    "max_size",
    "state_file",
    "state_password",
    "on_failure",
    "log_file",
    "spool_dir",
    "queue_retry",
    "queue_max_retry",
    "queue_max_age",
    "aliases_file",
    "suppress_bounces_for",
    "message_status_for",
)
SERVE_KEYS: tuple[str, ...] = (
    "bind",
    "workers",
    "threads",
    "tokens",
    "max_request_bytes",
    "flush_interval",
    "header_timeout",
    "body_timeout",
    "events_url",
    "events_secret",
)
DEFAULT_BIND = "127.0.0.1:8025"
DEFAULT_MAX_REQUEST_BYTES = 30 * 1000 * 1000  # a 25 MB attachment, base64-encoded, fits
DEFAULT_FLUSH_INTERVAL = 60.0  # seconds between two flushes of the spool inside `serve`


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    """Parse TOML, turning every decoding problem into a one-line ConfigError."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8", source=source) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", source=source) from None


_DAY = 86400.0
# The longest each duration in [defaults] may be: beyond these a value is a typo (or would
# overflow date arithmetic), refused when the config is read.
DURATION_LIMITS: dict[str, float] = {
    "timeout": _DAY,
    "cooldown": 30 * _DAY,
    "provider_cooldown": 30 * _DAY,
    "max_cooldown": 30 * _DAY,
    "queue_retry": 30 * _DAY,
    "queue_max_retry": 30 * _DAY,
    "queue_max_age": 3650 * _DAY,
    "suppress_bounces_for": 3650 * _DAY,  # 0: a hard bounce is suppressed until removed
    "message_status_for": 365 * _DAY,
}


@record
class ServeSettings:
    """The [serve] table: how `mailrelay serve` listens and whom it lets in."""

    bind: str = DEFAULT_BIND
    workers: int = 2
    threads: int = 8
    tokens: list[Secret] = field(default_factory=list)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    header_timeout: float = 5.0  # seconds a client has for its request line and headers
    body_timeout: float = 60.0  # seconds a client has for its request body
    events_url: str | None = None  # provider events are forwarded there, signed with:
    events_secret: Secret | None = None


@record
class Settings:
    source: str | None = None  # the config file read, None when there was none
    searched: str | None = None  # the config file looked for (named in "no config" errors)
    sender: str | None = None
    policy: PolicyName = "sticky"
    timeout: float = DEFAULT_TIMEOUT
    on_ambiguous: OnAmbiguous = "failover"
    cooldown: float = DEFAULT_COOLDOWN
    provider_cooldown: float = DEFAULT_PROVIDER_COOLDOWN
    max_cooldown: float = DEFAULT_MAX_COOLDOWN
    max_size: int | None = None
    state_file: Path | None = None
    state_url: str | None = None  # state_file given as a URL (redis://, redis+sentinel://, …)
    state_password: Secret | None = None  # for a state URL without a password in it
    on_failure: OnFailure = "fail"  # "queue": spool a message every provider refused for now
    log_file: Path | None = None  # JSON-lines audit log; off by default
    spool_dir: Path | None = None  # default: the user data dir's mailrelay/spool
    spool_url: str | None = None  # spool_dir given as redis://, rediss:// or unix://
    queue_retry: float = DEFAULT_QUEUE_RETRY
    queue_max_retry: float = DEFAULT_QUEUE_MAX_RETRY
    queue_max_age: float = DEFAULT_QUEUE_MAX_AGE
    aliases: dict[str, list[str]] = field(default_factory=dict)  # [aliases]: local names
    aliases_file: Path | None = None  # an aliases(5) file, read when a local name needs it
    suppress_bounces_for: float = 0.0  # seconds a hard bounce stays suppressed (0: always)
    message_status_for: float = 7 * _DAY  # seconds a message's status is kept
    providers: list[ProviderSpec] = field(default_factory=list)
    alerts: AlertSettings | None = None  # the [alerts] table; None when there is none
    telemetry: TelemetrySettings | None = None  # the [telemetry] table (OpenTelemetry traces)
    serve: ServeSettings = field(default_factory=ServeSettings)
    warnings: list[str] = field(default_factory=list)

    def build_providers(self) -> list[Provider]:
        from mailrelay.providers import registry

        return [registry.build(spec) for spec in self.providers]


def _read_defaults(
    table: object, source: str, settings: Settings, problems: list[ConfigError] | None = None
) -> None:
    if not isinstance(table, dict):
        raise ConfigError("[defaults] must be a table", source=source)
    cfg = ProviderConfig("[defaults]", "defaults", table, source)

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, source=source, key=f"defaults.{key}")

    for key in sorted(set(table) - set(DEFAULTS_KEYS)):
        hint = did_you_mean(key, DEFAULTS_KEYS) or f"; known: {', '.join(DEFAULTS_KEYS)}"
        _report(fail(key, f"unknown key{hint}"), problems)
    try:
        settings.sender = cfg.get_str("from")
        settings.policy = cfg.get_choice("policy", POLICIES, settings.policy)
        settings.on_ambiguous = cfg.get_choice("on_ambiguous", ON_AMBIGUOUS, settings.on_ambiguous)
        settings.on_failure = cfg.get_choice("on_failure", ON_FAILURE, settings.on_failure)
        for key, most in DURATION_LIMITS.items():
            setattr(settings, key, cfg.get_float(key, getattr(settings, key), most=most))
        if cfg.has("max_size"):
            settings.max_size = cfg.get_int("max_size", 0, least=1)
        settings.state_password = cfg.get_secret("state_password")
        for key in ("state_file", "log_file", "spool_dir", "aliases_file"):
            value = cfg.get_str(key)
            if value and key == "state_file" and is_state_url(value):
                settings.state_url = value
            elif value and key == "spool_dir" and is_state_url(value):
                settings.spool_url = value
            elif value:
                setattr(settings, key, Path(value).expanduser())
    except ConfigError as exc:
        _report(fail(exc.key or "?", exc.reason), problems)


def _report(problem: ConfigError, problems: list[ConfigError] | None) -> None:
    """Raise the problem, or keep it when the caller collects them all (`config check`)."""
    if problems is None:
        raise problem
    problems.append(problem)


def _read_serve(table: object, source: str) -> ServeSettings:
    if not isinstance(table, dict):
        raise ConfigError("[serve] must be a table", source=source)
    unknown = sorted(set(table) - set(SERVE_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key; known: {', '.join(SERVE_KEYS)}", source=source, key=f"serve.{unknown[0]}"
        )
    cfg = ProviderConfig("[serve]", "serve", table, source)
    serve = ServeSettings()
    try:
        serve.bind = cfg.get_str("bind", serve.bind) or serve.bind
        serve.workers = cfg.get_int("workers", serve.workers, least=1, most=64)
        serve.threads = cfg.get_int("threads", serve.threads, least=1, most=256)
        serve.max_request_bytes = cfg.get_int(
            "max_request_bytes", serve.max_request_bytes, least=1024
        )
        serve.flush_interval = cfg.get_float("flush_interval", serve.flush_interval)
        serve.header_timeout = cfg.get_float("header_timeout", serve.header_timeout, most=3600)
        serve.body_timeout = cfg.get_float("body_timeout", serve.body_timeout, most=_DAY)
        serve.events_url = cfg.get_str("events_url")
        serve.events_secret = cfg.get_secret("events_secret")
        if serve.events_url and (serve.events_secret is None or "://" not in serve.events_url):
            raise cfg.error("events_url", "needs an http(s):// URL and events_secret beside it")
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=source, key=f"serve.{exc.key or '?'}") from None
    tokens = table.get("tokens", [])
    if not isinstance(tokens, list):
        raise ConfigError(
            "must be a list of secrets (strings or { env | command | file = ... })",
            source=source,
            key="serve.tokens",
        )
    serve.tokens = [
        Secret(spec, source=source, key=f"serve.tokens[{i}]") for i, spec in enumerate(tokens)
    ]
    return serve


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    provider_urls: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    problems: list[ConfigError] | None = None,
) -> Settings:
    """Read the config file (if any) and the provider URLs into Settings.

    With `problems`, unknown keys and bad [defaults] values are collected there instead of
    raised, so `config check` can show them all.
    """
    env = os.environ if env is None else env
    candidates, explicit = config_candidates(config_path, env)
    settings = Settings(searched=" or ".join(str(p) for p in candidates))
    found = _read_first(candidates, explicit)
    if found is not None:
        path, raw = found
        settings.source = source = str(path)
        data = parse_toml(raw, source)
        _read_tables(data, source, settings, problems)
        warning = _exposed_secrets(path, data, settings)
        if warning:
            settings.warnings.append(warning)
    if provider_urls:
        settings.providers = specs_from_urls(provider_urls, "--provider")
    elif env.get("MAILRELAY_PROVIDERS", "").strip():
        settings.providers = specs_from_urls(
            env["MAILRELAY_PROVIDERS"].split(), "$MAILRELAY_PROVIDERS"
        )
    return settings


def _read_first(candidates: Sequence[Path], explicit: bool) -> tuple[Path, bytes] | None:
    """The first config file of `candidates` there is, and its bytes; None when there is
    none (an error when it was asked for by name)."""
    for path in candidates:
        source = str(path)
        try:
            return path, read_regular_file(path)
        except FileNotFoundError:
            if explicit:
                raise ConfigError("config file not found", source=source) from None
            continue
        except PermissionError:
            if path != candidates[0]:
                continue  # a system-wide file kept from this user: as if it were not there
            raise ConfigError("cannot read: permission denied", source=source) from None
        except IsADirectoryError:
            raise ConfigError("is a directory, not a config file", source=source) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    return None


_TABLES = ("defaults", "providers", "aliases", "alerts", "serve", "telemetry")


def _read_tables(
    data: dict[str, Any], source: str, settings: Settings, problems: list[ConfigError] | None
) -> None:
    for key in sorted(set(data) - set(_TABLES)):
        hint = did_you_mean(key, _TABLES)
        _report(
            ConfigError(
                f"unknown top-level key{hint}; "
                "known: [defaults], [[providers]], [aliases], [alerts], [serve], [telemetry]",
                source=source,
                key=key,
            ),
            problems,
        )
    if "defaults" in data:
        _read_defaults(data["defaults"], source, settings, problems)
    settings.providers = specs_from_tables(data.get("providers", []), source)
    if "aliases" in data:
        from mailrelay.aliases import read_table

        settings.aliases = read_table(data["aliases"], source)
    if "alerts" in data:
        from mailrelay.alerts import read_alerts

        settings.alerts = read_alerts(data["alerts"], source)
    if "serve" in data:
        settings.serve = _read_serve(data["serve"], source)
    if "telemetry" in data:
        from mailrelay.telemetry import read_telemetry

        settings.telemetry = read_telemetry(data["telemetry"], source)


def _exposed_secrets(path: Path, data: dict[str, Any], settings: Settings) -> str | None:
    """The warning for a file others may read that holds a secret written in it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return None
    alert_urls = data["alerts"].get("urls") if settings.alerts is not None else None
    if (
        any(t.is_literal for t in settings.serve.tokens)
        or holds_literal_secret(data.get("providers", []))
        or isinstance(alert_urls, str)
        or (isinstance(alert_urls, list) and any(isinstance(u, str) for u in alert_urls))
    ):
        return (
            f"{path} holds a literal secret and is readable by others "
            f"(mode {mode:04o}); chmod 600 it, or use {{ env = ... }} / {{ command = [...] }}"
        )
    return None

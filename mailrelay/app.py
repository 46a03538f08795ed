"""`App`, the composition root both front ends stand on: the settings, the providers, the
state store, the spool, the audit log, the alert dispatcher and the failover engine over
them, built lazily. Nothing is loaded before a command or a request asks for it. A front end
gives it a `warn` callback; the CLI's prints through its Output, serve's writes its log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mailrelay.errors import did_you_mean

BUDGET_FILE = "ratelimit.json"  # the host's rate budgets, beside the state file

if TYPE_CHECKING:
    from pathlib import Path

    from mailrelay.alerts import Dispatcher
    from mailrelay.config import Settings
    from mailrelay.delivery import Queueing
    from mailrelay.engine import AlertSink, Engine
    from mailrelay.policy import ProbeGate
    from mailrelay.providers.base import Provider
    from mailrelay.providers.options import ProviderSpec
    from mailrelay.ratelimit.bucket import BudgetStore
    from mailrelay.ratelimit.pacer import Pacer
    from mailrelay.result import Listener
    from mailrelay.spool.protocol import QueueStore
    from mailrelay.state import StateStore
    from mailrelay.state.records import RecordStore
    from mailrelay.suppression import SuppressionList


class App:
    """What every command or request needs, built lazily from the global options."""

    def __init__(
        self,
        *,
        config: str | None,
        state: str | None,
        providers: Sequence[str],
        spool: str | None = None,
        debug: bool,
        warn: Callable[[str], None],
        log_file: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.log_file = log_file
        self.config_path = config
        self.state_override = state
        self.spool_override = spool
        self._spool: QueueStore | None = None
        self.provider_urls = list(providers)
        self.debug = debug
        self.warn = warn  # a problem worth a word that does not stop the work
        self._settings: Settings | None = settings
        self._providers: list[Provider] | None = None
        self._suppressions: SuppressionList | None = None
        self.via: list[str] = []  # send --via / status NAME: only these providers, this order

    def merge(self, name: str, value: Any) -> None:
        """A global option given after the command word (see cli.global_options)."""
        if name == "providers":
            self.provider_urls.extend(value)
        elif name == "debug":
            self.debug = True
        else:
            names = {"config": "config_path", "state": "state_override", "spool": "spool_override"}
            attr = names.get(name, name)
            setattr(self, attr, value)
        self._settings = None
        if self._spool is not None:  # built from the settings before this option
            self._spool.close()
            self._spool = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from mailrelay.config import load_settings

            self._settings = load_settings(self.config_path, self.provider_urls)
            for warning in self._settings.warnings:
                self.warn(warning)
        return self._settings

    def providers(self) -> list[Provider]:
        if self._providers is None:
            from mailrelay.errors import ConfigError
            from mailrelay.providers import registry

            specs = self.settings.providers
            if self.via:
                specs = self.chosen(specs)
            self._providers = [registry.build(spec) for spec in specs]
            if not self._providers:
                s = self.settings
                where = f"in {s.source}" if s.source else f"no config file at {s.searched}"
                init = "" if s.source else "run 'mailrelay config init', "  # not over a config
                raise ConfigError(
                    f"no providers configured ({where}); {init}add [[providers]] to the "
                    "config, or give --provider URL / $MAILRELAY_PROVIDERS"
                )
        return self._providers

    def chosen(self, specs: list[ProviderSpec]) -> list[ProviderSpec]:
        """The providers named by --via (or `status NAME`), in the order given."""
        from mailrelay.errors import UsageError

        by_name = {spec.name: spec for spec in specs}
        unknown = [name for name in self.via if name not in by_name]
        if unknown:
            known = ", ".join(by_name) or "none"
            where = self.settings.source or self.settings.searched
            raise UsageError(
                f"no provider named {unknown[0]!r}{did_you_mean(unknown[0], list(by_name))}; "
                f"configured ({where}): {known}"
            )
        return [by_name[name] for name in dict.fromkeys(self.via)]

    def store(self) -> StateStore:
        from mailrelay.state import TomlStateStore, default_state_path, state_path, state_url

        settings = self.settings
        url = state_url(self.state_override, os.environ, settings.state_url)
        if url is None:
            path = state_path(self.state_override, os.environ, settings.state_file)
            return TomlStateStore(path, warn=self.warn)
        from mailrelay.state.redisstore import FallbackStore, RedisStateStore
        from mailrelay.state.redisurl import masked

        def connect() -> RedisStateStore:
            secret = settings.state_password
            return RedisStateStore(url, password=secret.reveal() if secret else None)

        def local() -> TomlStateStore:  # while Redis cannot be reached: this user's file
            return TomlStateStore(settings.state_file or default_state_path(), warn=self.warn)

        return FallbackStore(connect, masked(url), local, warn=self.warn)

    def records(self) -> RecordStore:
        """The records beside the state (suppressions, events seen, message statuses): in
        the same Redis as the state, or in a file beside the state file."""
        from mailrelay.state import state_path, state_url
        from mailrelay.state.records import FileRecordStore, records_path

        settings = self.settings
        url = state_url(self.state_override, os.environ, settings.state_url)
        if url is None:
            path = state_path(self.state_override, os.environ, settings.state_file)
            return FileRecordStore(records_path(path))
        from mailrelay.state import default_state_path
        from mailrelay.state.redisrecords import FallbackRecordStore, RedisRecordStore
        from mailrelay.state.redisstore import RedisStateStore

        def connect() -> RecordStore:
            secret = settings.state_password
            return RedisRecordStore(
                RedisStateStore(url, password=secret.reveal() if secret else None)
            )

        def local() -> RecordStore:  # while Redis cannot be reached (the state says so)
            return FileRecordStore(records_path(settings.state_file or default_state_path()))

        return FallbackRecordStore(connect, local)

    def suppressions(self) -> SuppressionList:
        """The suppression list (made once: `serve` asks at every request)."""
        if self._suppressions is None:
            from mailrelay.suppression import SuppressionList

            expiry = self.settings.suppress_bounces_for
            self._suppressions = SuppressionList(self.records(), bounce_expiry=expiry)
        return self._suppressions

    def hold_connections(self) -> None:
        """Many messages follow: providers keep connections between them (close() ends them)."""
        for provider in self.providers():
            provider.hold_connections()

    def spool_location(self) -> str | Path:
        """Where the spool is: a folder, or a Redis URL (mailrelay.spool.location)."""
        from mailrelay.spool.location import spool_location
        from mailrelay.state import state_url

        s = self.settings
        state = state_url(self.state_override, os.environ, s.state_url)
        return spool_location(self.spool_override, os.environ, s.spool_url or s.spool_dir, state)

    def spool_dir(self) -> Path:
        """The local spool folder: the spool itself, or where messages wait while the spool's
        Redis cannot be reached (`spool_dir` when it is a folder, else the user data dir)."""
        from pathlib import Path

        from mailrelay.spool import default_spool_dir

        where = self.spool_location()
        return where if isinstance(where, Path) else self.settings.spool_dir or default_spool_dir()

    def spool(self) -> QueueStore:
        """The spool of queued messages: a folder, or the fleet's queue in Redis."""
        from pathlib import Path

        from mailrelay.spool import Spool

        if self._spool is not None:
            return self._spool
        where = self.spool_location()
        local = Spool(self.spool_dir(), warn=self.warn)
        if isinstance(where, Path):
            return local
        from mailrelay.spool.redisspool import CLAIM_MARGIN, RedisSpool

        s = self.settings
        secret = s.state_password
        self._spool = RedisSpool(
            where,
            local=local,
            password=secret.reveal() if secret else None,
            claim_idle=s.timeout + CLAIM_MARGIN,
            max_size=s.max_size,
            warn=lambda text: self.warn(text),
        )
        return self._spool

    def queueing(self) -> Queueing:
        """Queuing on: the spool and the retry settings (mailrelay.delivery writes it)."""
        from mailrelay.delivery import Queueing

        s = self.settings
        return Queueing(self.spool(), retry=s.queue_retry, max_retry=s.queue_max_retry)

    def listeners(self) -> list[Listener]:
        """Who hears of every attempt: the audit log, when --log-file or log_file is set;
        OpenTelemetry traces, when $OTEL_EXPORTER_OTLP_ENDPOINT or [telemetry] turns them on."""
        import os

        found: list[Listener] = []
        path = self.log_file or self.settings.log_file
        if path:
            from mailrelay.audit import AuditLog

            found.append(AuditLog(path))
        telemetry = self.settings.telemetry
        if telemetry is not None or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from mailrelay.telemetry import listener_for

            tracing = listener_for(telemetry, os.environ, self.warn)
            if tracing is not None:
                found.append(tracing)
        return found

    def alerter(self) -> Dispatcher | None:
        """Where alert events go ([alerts] in the config), or None when nowhere."""
        alerts = self.settings.alerts
        if alerts is None or not alerts.enabled:
            return None
        from mailrelay.alerts import Dispatcher

        return Dispatcher(alerts, warn=self.warn)

    def engine(
        self,
        *,
        policy: str | None = None,
        timeout: float | None = None,
        store: StateStore | None = None,
        alert: AlertSink | None = None,
        skip_cooling: bool = False,
        probe_gate: ProbeGate | None = None,
    ) -> Engine:
        """The failover engine; `alert` replaces the [alerts] dispatcher (serve passes an
        alerts.BackgroundDispatcher, so no request waits for an alert)."""
        from mailrelay.engine import Engine
        from mailrelay.policy import Policy

        s = self.settings
        return Engine(
            self.providers(),
            store if store is not None else self.store(),
            Policy(
                order=policy or ("priority" if self.via else s.policy),
                timeout=timeout or s.timeout,
                on_ambiguous=s.on_ambiguous,
                cooldown=s.cooldown,
                provider_cooldown=s.provider_cooldown,
                max_cooldown=s.max_cooldown,
                skip_cooling=skip_cooling,
            ),
            warn=self.warn,
            raise_bugs=self.debug,
            listeners=self.listeners(),
            alert=alert if alert is not None else self.alerter(),
            probe_gate=probe_gate,
            pacer=self.pacer(),
        )

    def pacer(self) -> Pacer | None:
        """Paces sends through the providers' budgets (rate limits); None when no provider
        has a budget or could learn one, so such a send touches no budget file at all."""
        from mailrelay.ratelimit.pacer import Pacer

        if not any(Pacer.applies(p) for p in self.providers()):
            return None
        return Pacer(self.budgets(), warn=self.warn)

    def budgets(self) -> BudgetStore:
        """Where the budgets are shared: with the state in Redis, the fleet's (in Redis);
        else this host's, a small file beside the state file."""
        from mailrelay.ratelimit.bucket import FileBudgets
        from mailrelay.state import default_state_path, state_path, state_url

        s = self.settings
        url = state_url(self.state_override, os.environ, s.state_url)
        if url is None:
            path = state_path(self.state_override, os.environ, s.state_file)
            return FileBudgets(path.parent / BUDGET_FILE)
        local = FileBudgets((s.state_file or default_state_path()).parent / BUDGET_FILE)
        from mailrelay.ratelimit.redisbucket import FallbackBudgets, connect

        secret = s.state_password
        return FallbackBudgets(
            lambda: connect(url, secret.reveal() if secret else None), local, self.warn
        )

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        for provider in self._providers or []:
            provider.close()

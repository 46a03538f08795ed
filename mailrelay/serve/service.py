"""What every request of one `serve` worker shares (see `Service`)."""

from __future__ import annotations

import hmac
from base64 import b64decode
from binascii import Error as Base64Error
from typing import TYPE_CHECKING

from mailrelay.serve.metrics import ServeMetrics
from mailrelay.state import TomlStateStore
from mailrelay.state.workerstore import WorkerStore

if TYPE_CHECKING:
    from mailrelay.app import App
    from mailrelay.config import Settings
    from mailrelay.policy import ProbeGate
    from mailrelay.serve.keys import KeyStore
    from mailrelay.state import StateStore


def current_service() -> Service:
    """The Service of the app handling this request (create_app puts it in its extensions)."""
    from flask import current_app

    service: Service = current_app.extensions["mailrelay"]
    return service


def serve_tokens(settings: Settings) -> list[str]:
    """The [serve] tokens' values. One that is blank (spaces, tabs) is refused as an empty
    one is: a client's blank Basic password or Bearer token would match it."""
    from mailrelay.errors import ConfigError

    tokens = []
    for i, secret in enumerate(settings.serve.tokens):
        value = secret.reveal()
        if not value.strip():
            raise ConfigError(
                "a token may not be blank (only spaces or tabs)",
                source=settings.source,
                key=f"serve.tokens[{i}]",
            )
        tokens.append(value)
    return tokens


class Service:
    """What every request of one worker shares: the App (settings, providers), one engine
    (its probe bookkeeping must be shared), the token list, the key store, the metrics."""

    def __init__(self, app: App, tokens: list[str], keys: KeyStore, probes: ProbeGate) -> None:
        self.app = app
        store: StateStore = app.store()
        if isinstance(store, TomlStateStore):  # counters written behind, cooldowns at once
            store = WorkerStore(store, warn=app.warn)
        self.store = store
        self.engine = app.engine(skip_cooling=True, probe_gate=probes, store=store)
        self.tokens = [t.encode("utf-8") for t in tokens]
        self.keys = keys
        self.metrics = ServeMetrics([p.name for p in self.engine.providers])
        self.engine.listeners.append(self.metrics)  # each attempt's time, for the histogram

    def close(self) -> None:
        """The worker stops: counters still held in memory go to the state file."""
        if isinstance(self.store, WorkerStore):
            self.store.close()

    def authorized(self, header: str | None) -> bool:
        if not self.tokens:
            return True  # --no-auth on loopback
        scheme, _, value = (header or "").partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = value.strip().encode("utf-8", "replace")
        elif scheme.lower() == "basic":
            try:
                _, _, password = b64decode(value.strip(), validate=True).partition(b":")
            except (Base64Error, ValueError):
                return False
            given = password
        if not given:
            return False
        ok = False
        for token in self.tokens:  # every token compared, each in constant time
            ok |= hmac.compare_digest(given, token)
        return ok

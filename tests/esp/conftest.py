"""What every `test_<type>.py` beside this file shares: the fake's base URL, a sample message,
and building a provider and catching its error.

A provider's test module gets its fake (the `fake` fixture of tests/conftest.py) from
`fake_<type>.py` (`FAKE_CLASS`) by its own name; it then states only what differs, e.g.

    message = message_factory(subject="s", text="t\\n")
    send_error = send_error_factory(message)

    def build(server: HTTPServer, **values: Any) -> BrevoProvider:
        values = {"api_key": API_KEY, "base_url": server_base_url(server), **values}
        return build_provider(BrevoProvider, values, name="bv")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.message import Address, Message
from mailrelay.providers import registry
from mailrelay.providers.base import Provider, ProviderError
from mailrelay.providers.options import ProviderSpec
from tests.esp.fakebase import FakeESP, serve, server_base_url

__all__ = ["serve"]  # kept here for the tests that import it from this module

P = TypeVar("P", bound=Provider)


@pytest.fixture
def base(httpserver: HTTPServer) -> str:
    """The fake's address as a provider `base_url`."""
    return server_base_url(httpserver)


def build_provider(cls: type[P], values: dict[str, Any], name: str) -> P:
    """A `cls` provider named `name` from a config table (its `type` is added)."""
    provider = registry.build(ProviderSpec(name, cls.type, {"type": cls.type, **values}, "test"))
    assert isinstance(provider, cls)
    return provider


def message_factory(**fields: Any) -> Callable[..., Message]:
    """`message(**overrides)`: a short text mail from Ops to one recipient, with `fields` and
    then each call's overrides in place of the defaults. Every call builds a new Message."""
    defaults: dict[str, Any] = {
        "sender": Address("ops@example.com", "Ops"),
        "to": [Address("a@example.com")],
        "subject": "Disk full",
        "text": "disk 91% full\n",
        **fields,
    }

    def message(**overrides: Any) -> Message:
        fresh = {k: list(v) if isinstance(v, list) else v for k, v in defaults.items()}
        return Message(**{**fresh, **overrides})

    return message


class SendError(Protocol):
    def __call__(
        self, provider: Provider, message: Message | None = None, timeout: float = 5
    ) -> ProviderError: ...


def send_error_factory(sample: Callable[[], Message]) -> SendError:
    """`send_error(provider, message=None, timeout=5)`: the ProviderError that sending
    `message` (by default a new `sample()`) raises; the test fails if it raises none."""

    def send_error(
        provider: Provider, message: Message | None = None, timeout: float = 5
    ) -> ProviderError:
        with pytest.raises(ProviderError) as info:
            provider.send(message or sample(), timeout=timeout)
        return info.value

    return send_error


def last_json(fake: FakeESP) -> dict[str, Any]:
    """The JSON body of the last request the fake received."""
    return json.loads(fake.requests[-1].get_data(as_text=True))  # type: ignore[no-any-return]

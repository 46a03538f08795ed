"""The base of the fake provider servers used by the HTTP adapter tests.

Each `fake_<type>.py` module defines a subclass of `FakeESP` that speaks that provider's
documented API on a loopback pytest-httpserver: it checks auth, path and body shape the way
the real service does (answering with the real service's error for what it rejects) and can
be told to answer with each documented error (`scenarios`). It exposes `FAKE_CLASS`.
The shared cases in `test_contract.py` run every fake through the same checks.
"""

from __future__ import annotations

import importlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from jsonschema import Draft202012Validator
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from mailrelay.providers.base import Outcome

# every provider fake beside this file, by module name (fake_brevo, ...)
FAKE_MODULES = sorted(p.stem for p in Path(__file__).parent.glob("fake_*.py"))


def serve(type_: str, httpserver: HTTPServer, **options: Any) -> FakeESP:
    """The fake of provider `type_` (fake_<type>.FAKE_CLASS, built with `options`), installed
    on the loopback httpserver."""
    module = importlib.import_module(f"tests.esp.fake_{type_}")
    instance: FakeESP = module.FAKE_CLASS(**options)
    instance.install(httpserver)
    return instance


def server_base_url(server: HTTPServer) -> str:
    """The fake's address as a provider `base_url` (no trailing slash)."""
    return server.url_for("").rstrip("/")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


@dataclass
class Scenario:
    """A documented error the fake can be told to answer with, and the class it must get."""

    response: Callable[[], Response]
    outcome: Outcome
    words: str  # a piece of the provider's own error text that the user must see
    retry_after: float | None = None  # the wait the adapter must report, when documented
    limited: str | None = None  # "quota" for a spent quota (ProviderError.limited), checked


class FakeESP(ABC):
    type: ClassVar[str]
    """The provider type under test, e.g. "postmark"."""
    secrets: ClassVar[tuple[str, ...]]
    """Every credential value in `config()`; no error or output may contain one."""
    credential_keys: ClassVar[tuple[str, ...]]
    """The config keys that are required credentials (removing one is a config error)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []  # accepted send payloads, as `normalize` takes them
        self.requests: list[Request] = []  # every request received, check requests included
        self.queued: list[Response] = []  # responses to give before normal handling
        self.counter = 0

    # --- what each fake implements ----------------------------------------------------

    @abstractmethod
    def config(self, base_url: str) -> dict[str, Any]:
        """A provider table (with `type` and `base_url`) whose credentials the fake accepts."""

    @abstractmethod
    def url(self, base_url: str) -> str:
        """The same provider as a `--provider` URL, with `?base_url=<quoted base_url>`."""

    @abstractmethod
    def handle(self, request: Request) -> Response:
        """Answer like the real service: validate auth, path and body; record accepted sends."""

    @abstractmethod
    def normalize(self, payload: Any) -> dict[str, Any]:
        """One recorded payload as {from, to, cc, bcc, reply_to, subject, text, html,
        headers: {name: value}, attachments: [(filename, content_type, bytes)], tags,
        metadata}; addresses as "email" or "Name <email>" strings, lists in order."""

    scenarios: ClassVar[dict[str, Scenario]] = {}
    """Documented errors: must include "auth", "invalid", "rate_limit" and "server_error"."""

    last_message_id: str | None = None
    """The id the last accepted send answered with."""

    # --- machinery ---------------------------------------------------------------------

    def next_id(self) -> str:
        self.counter += 1
        return f"fake-{self.type}-{self.counter}"

    def install(self, server: HTTPServer) -> None:
        server.expect_request(re.compile(".*")).respond_with_handler(self.dispatch)

    def dispatch(self, request: Request) -> Response:
        self.requests.append(request)
        if self.queued:
            return self.queued.pop(0)
        return self.handle(request)

    def fail_next(self, response: Response) -> None:
        self.queued.append(response)


SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
"""Compact JSON Schemas of the send requests, derived from the providers' published OpenAPI
specs; each file names its source (repository, path, commit) in `x-source`."""


@cache
def send_schema(name: str) -> dict[str, Any]:
    """The compact send-request schema `schemas/<name>.json`, e.g. "sendgrid"."""
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{name}.json").read_text("utf-8"))
    return schema


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(send_schema(name))


def schema_errors(name: str, payload: Any) -> list[str]:
    """Validate a request body against the provider's compact send-request schema.

    Returns the validation errors as short strings (empty when the body is valid).
    """
    return validation_errors(_validator(name), payload)


def validation_errors(validator: Draft202012Validator, payload: Any) -> list[str]:
    """Each error as "where: what", e.g. "personalizations/0: 'to' is a required property"."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in validator.iter_errors(payload)
    ]

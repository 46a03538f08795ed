"""The base of the fake provider servers used by the HTTP adapter tests.

Each `fake_<type>.py` module defines a subclass of `FakeESP` that speaks that provider's
documented API on a loopback pytest-httpserver: it checks auth, path and body shape the way
the real service does (answering with the real service's error for what it rejects) and can
be told to answer with each documented error (`scenarios`). It exposes `FAKE_CLASS`.
The shared cases in `test_contract.py` run every fake through the same checks.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import yaml
from jsonschema import Draft202012Validator
from pytest_httpserver import HTTPServer
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug import Request, Response

from mailrelay.providers.base import Outcome


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


# ../shared/specs beside the checkout (CI clones main with shared/ next to it)
SPECS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "specs"


@cache
def _spec(relpath: str) -> dict[str, Any]:
    path = SPECS_DIR / relpath
    if not path.exists():
        raise FileNotFoundError(
            f"provider spec {path} is missing: shared/ must sit beside the repo"
        )
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def openapi_errors(
    relpath: str, path: str, method: str, payload: Any, content_type: str = "application/json"
) -> list[str]:
    """Validate a request body against the published OpenAPI spec's request schema.

    Returns the validation errors as short strings (empty when the body is valid).
    `relpath` is relative to shared/specs, e.g. "sendgrid/tsg_mail_v3.yaml".
    """
    spec = _spec(relpath)
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    body_ptr = "/" + _pointer("paths", path, method.lower(), "requestBody")
    body = spec["paths"][path][method.lower()]["requestBody"]
    if "$ref" in body:  # requestBody may itself be a reference to components/requestBodies
        body_ptr = body["$ref"].lstrip("#")
    ref = "urn:spec#" + body_ptr + "/" + _pointer("content", content_type, "schema")
    validator = Draft202012Validator({"$ref": ref}, registry=registry)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in validator.iter_errors(payload)
    ]

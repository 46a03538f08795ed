"""The OpenAPI 3.1 document of the service: openapi.json in the package, with the message
schema that `mailrelay schema` prints put in as components (one schema, not two copies)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from mailrelay import __version__


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/Message_" + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


@cache
def openapi_document() -> dict[str, Any]:
    from mailrelay.message.msgjson import message_schema

    text = resources.files("mailrelay.serve").joinpath("openapi.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    doc["info"]["version"] = __version__
    message = {k: v for k, v in message_schema().items() if k not in ("$schema", "$defs")}
    schemas = doc["components"]["schemas"]
    for name, sub in message_schema().get("$defs", {}).items():
        schemas[f"Message_{name}"] = _rewrite_refs(sub)
    schemas["Message"] = _rewrite_refs(message)
    return doc


def documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
    }

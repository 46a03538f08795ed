"""The OpenAPI document shows an example of every request and answer, and each example is
one the schema beside it accepts (so Swagger UI at /api never shows a wrong one)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mailrelay.serve.openapi import openapi_document


def media_types() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(operationId, where, content type, media type object) of every body in the document."""
    found = []
    for item in openapi_document()["paths"].values():
        for op in item.values():
            name = op["operationId"]
            for ctype, media in op.get("requestBody", {}).get("content", {}).items():
                found.append((name, "request", ctype, media))
            for code, answer in op["responses"].items():
                for ctype, media in answer.get("content", {}).items():
                    found.append((name, code, ctype, media))
    return found


@pytest.mark.parametrize(
    ("operation", "where", "ctype", "media"),
    media_types(),
    ids=[f"{o}-{w}-{c}" for o, w, c, _ in media_types()],
)
def test_every_body_has_an_example_its_schema_accepts(
    operation: str, where: str, ctype: str, media: dict[str, Any]
) -> None:
    assert "example" in media, f"{operation} {where} {ctype} has no example"
    # the whole document as the root schema (its other members are keywords JSON Schema
    # ignores), so the "#/components/schemas/..." references resolve as they do for a reader
    root = {**openapi_document(), "allOf": [media["schema"]]}
    errors = [e.message for e in Draft202012Validator(root).iter_errors(media["example"])]
    assert not errors, f"{operation} {where} {ctype}: {errors}"

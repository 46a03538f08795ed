"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/test_serve_pages.py: it has no
serializer for message/rfc822, the body of POST /v1/messages/raw."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("message/rfc822")
def rfc822(ctx: Any, value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value if isinstance(value, bytes) else str(value).encode()

"""A provider's HTTP answer read for its own words: its JSON (`json_body`), the error's text
as one short line (`error_text`), and "<code>: <message>" where a body names its error
(`coded_words`). The HTTP adapters (httpapi.py and each provider's module) share these."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrelay.providers.httpclient import Response

_ERROR_TEXT_LIMIT = 300


def json_body(resp: Response) -> Any:
    """The response's JSON, or None when the body is empty or not JSON."""
    if not resp.content:
        return None
    try:
        return resp.json()
    except (ValueError, RecursionError):  # a number over the int-string limit; deep nesting
        return None


def error_text(resp: Response) -> str:
    """The provider's own words from an error response, as one short line."""
    body = json_body(resp)
    try:
        text = _text_from_json(body) if body is not None else None
    except RecursionError:  # nested just under the parser's limit: the raw text will do
        text = None
    if text is None:
        text = " ".join(resp.text.split()) if resp.content else ""
    if not text:
        text = resp.reason or "no error text"
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[: _ERROR_TEXT_LIMIT - 1] + "…"
    return text


def _text_from_json(body: Any) -> str | None:
    if isinstance(body, str):
        return body or None
    if isinstance(body, list):
        parts = [t for t in (_text_from_json(b) for b in body) if t]
        return "; ".join(parts) or None
    if not isinstance(body, dict):
        return None
    for key in ("message", "Message", "ErrorMessage", "error_description", "detail"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    for key in ("error", "errors", "Errors"):
        if key in body:
            found = _text_from_json(body[key])
            if found:
                return found
    return json.dumps(body, separators=(",", ":"))[:_ERROR_TEXT_LIMIT]


def coded_words(body: Any, key: str) -> str | None:
    """ "<code>: <message>" from an error body that names its error under `key` (Brevo's
    `code`, Resend's and Mandrill's `name`); None when it names none."""
    code = body.get(key) if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        return None
    words = str(body.get("message") or "").strip()
    return f"{code}: {words}" if words else code

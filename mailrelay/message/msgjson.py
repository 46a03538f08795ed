"""A message given as JSON (`send --message`, each line of `send --batch`).

The object is checked against the JSON Schema shipped in the package (`mailrelay schema`
prints it) before anything else, so a typo or a wrong type is one line naming the field by
its JSON path ("alert.json: attachments[0].path: ..."). Attachments come as a `path`
(relative to the JSON file) or as `content_base64`.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from mailrelay.errors import MessageError
from mailrelay.message import (
    DEFAULT_MAX_SIZE,
    Message,
    message_from_dict,
    parse_addresses,
    read_input_file,
)

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_RESOURCE = "message.schema.json"
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")
_TYPE_WORDS = {
    "string": "a string",
    "array": "a list",
    "object": "an object",
    "boolean": "true or false",
    "null": "null",
    "number": "a number",
    "integer": "an integer",
}


def schema_text() -> str:
    """The message's JSON Schema (draft 2020-12) as shipped in the package."""
    return (
        resources.files("mailrelay.message").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    )


@cache
def message_schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(schema_text())
    return doc


def is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time with a time zone; what the schema's "date-time" format means."""
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if not _RFC3339.match(value):
        return False
    text = value.upper().replace("Z", "+00:00")
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@cache
def _validator() -> Draft202012Validator:
    # jsonschema costs start-up time (and pulls in referencing, rpds): only JSON input pays it
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time")(is_rfc3339)
    return Draft202012Validator(message_schema(), format_checker=checker)


def json_path(parts: Iterable[object]) -> str:
    """A JSON path as the errors show it: attachments[0].path, headers.X-Report."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if not text.isprintable() or not text:  # a key with a line break stays on one line
            text = repr(text)
        out += f".{text}" if out else text
    return out


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expected(schema: Mapping[str, Any]) -> str:
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    items = schema.get("items")
    words = []
    for name in names:
        if name == "array" and isinstance(items, Mapping) and items.get("type") == "string":
            words.append("a list of strings")
        elif name == "object" and isinstance(schema.get("additionalProperties"), Mapping):
            inner = schema["additionalProperties"].get("type")
            words.append("an object of strings" if inner == "string" else "an object")
        else:
            words.append(_TYPE_WORDS.get(name, name))
    return " or ".join(words) or "another value"


def _describe(error: ValidationError) -> tuple[str, str]:
    """(JSON path, what is wrong) for one schema error, in words a script author follows."""
    path = list(error.absolute_path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    field = path[-1] if path else None
    if "propertyNames" in error.relative_schema_path:
        return json_path(path), f"{_short(instance)} is not a valid header name"
    if keyword == "additionalProperties" and isinstance(instance, Mapping):
        known = list(schema.get("properties", {}))
        extra = [k for k in instance if k not in known]
        name = extra[0] if extra else "?"
        hint = difflib.get_close_matches(str(name), known, n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        if len(extra) > 1:
            more += f" (also unknown: {', '.join(map(str, extra[1:]))})"
        return json_path([*path, name]), f"unknown field{more}"
    if keyword == "type":
        if not path:
            return "", f"expected a JSON object, got {_json_type(instance)}"
        return json_path(path), f"expected {_expected(schema)}, got {_json_type(instance)}"
    if keyword == "oneOf" and isinstance(instance, Mapping):
        if "path" in instance and "content_base64" in instance:
            return json_path(path), "give 'path' or 'content_base64', not both"
        return json_path(path), "'path' or 'content_base64' is required"
    if keyword == "required":
        missing = [k for k in error.validator_value if k not in instance]
        name = missing[0] if missing else "?"
        why = " with content_base64" if name == "filename" else ""
        return json_path([*path, name]), f"required{why}"
    if keyword == "minLength":
        return json_path(path), "must not be empty"
    if keyword == "format" and error.validator_value == "date-time":
        return json_path(path), (
            f"{_short(instance)} is not an RFC 3339 date-time with a time zone "
            "(e.g. 2026-11-22T09:00:00Z)"
        )
    if keyword == "pattern":
        words = {
            "content_base64": "not valid base64"
            + (": line breaks are not allowed" if "\n" in str(instance) else ""),
            "message_id": f"{_short(instance)} is not a Message-ID like '<id@example.com>'",
            "content_type": f"{_short(instance)} is not a MIME type like 'application/pdf'",
        }
        return json_path(path), words.get(str(field), f"{_short(instance)} is not allowed here")
    return json_path(path), error.message.splitlines()[0][:200]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


class SchemaError(MessageError):
    """The message does not follow the schema: `path` (a JSON path, "" for the whole
    document) and `reason` say where and what, as the one-line message does."""

    def __init__(self, where: str, path: str, reason: str) -> None:
        super().__init__(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")
        self.path = path
        self.reason = reason


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# The message's plain fields and what the schema allows in each (tests/test_msgjson.py checks
# this table against message.schema.json): a document of only these is valid without
# jsonschema, which costs more than the rest of a message's parsing
PLAIN_FIELDS: dict[str, Callable[[object], bool]] = {
    "from": lambda v: isinstance(v, str) and v != "",
    "to": lambda v: isinstance(v, str) or _strings(v),
    "cc": lambda v: isinstance(v, str) or _strings(v),
    "bcc": lambda v: isinstance(v, str) or _strings(v),
    "reply_to": lambda v: isinstance(v, str) or _strings(v),
    "subject": lambda v: isinstance(v, str),
    "text": lambda v: v is None or isinstance(v, str),
    "html": lambda v: v is None or isinstance(v, str),
    "tags": _strings,
}


def _plainly_valid(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    for key, value in doc.items():
        check = PLAIN_FIELDS.get(key)
        if check is None or not check(value):
            return False
    return True


def schema_error(doc: object, *, where: str) -> SchemaError | None:
    """The best schema error in `doc` as a one-line MessageError, or None when it is valid."""
    if _plainly_valid(doc):
        return None
    from jsonschema.exceptions import best_match

    errors = list(_validator().iter_errors(doc))
    # "exactly one of path or content_base64" says more than "filename is required with
    # content_base64" about an attachment that has both
    one_of = {tuple(e.absolute_path) for e in errors if e.validator == "oneOf"}
    errors = [
        e
        for e in errors
        if not ("then" in e.relative_schema_path and tuple(e.absolute_path) in one_of)
    ]
    error = best_match(errors)
    if error is None:
        return None
    path, what = _describe(error)
    return SchemaError(where, path, what)


def message_from_json(
    doc: object,
    *,
    where: str,
    base_dir: str | None,
    default_sender: str | None,
    max_size: int = DEFAULT_MAX_SIZE,
    allow_paths: bool = True,
) -> Message:
    """A decoded JSON object → a validated Message; attachment paths are read here (unless
    not `allow_paths`: a message from the network must not read the server's files)."""
    error = schema_error(doc, where=where)
    if error is not None:
        raise error
    assert isinstance(doc, Mapping)  # the schema says so
    fields: dict[str, Any] = {k: v for k, v in doc.items() if k != "$schema"}
    if not any(fields.get(k) for k in ("to", "cc", "bcc")):
        raise MessageError(f"{where}: no recipients: give 'to', 'cc' or 'bcc'")
    body = fields.get("text") is not None or fields.get("html") is not None
    if not (body or fields.get("subject") or fields.get("attachments")):
        raise MessageError(
            f"{where}: empty message: give 'subject', 'text', 'html' or 'attachments'"
        )
    for name in ADDRESS_FIELDS:  # check each address here so that the error has its index
        value = fields.get(name)
        if isinstance(value, list):
            for i, one in enumerate(value):
                parse_addresses(f"{where}: {name}[{i}]", [one])
    attachments = fields.get("attachments")
    if isinstance(attachments, list):
        if not allow_paths:
            for i, item in enumerate(attachments):
                if "path" in item:
                    raise SchemaError(
                        where,
                        f"attachments[{i}].path",
                        "not accepted here: give the file as content_base64",
                    )
        fields["attachments"] = [
            _read_attachment(item, f"{where}: attachments[{i}]", base_dir, max_size)
            if "path" in item
            else item
            for i, item in enumerate(attachments)
        ]
    try:
        return message_from_dict(
            fields, where=where, default_sender=default_sender, max_size=max_size
        )
    except MessageError as exc:
        if str(exc).startswith(f"{where}: "):
            raise
        raise MessageError(f"{where}: {exc}") from None


def _read_attachment(
    item: Mapping[str, Any], where: str, base_dir: str | None, max_size: int
) -> dict[str, Any]:
    path: str = item["path"]
    full = os.path.join(base_dir or os.getcwd(), os.path.expanduser(path))
    data = read_input_file(full, f"{where}.path: {path}", limit=max_size, regular=True)
    out = {k: v for k, v in item.items() if k != "path"}
    out.setdefault("filename", os.path.basename(path))
    out["content_base64"] = base64.b64encode(data).decode("ascii")
    return out


def decode_json(
    data: bytes, where: str, *, encoding: str = "utf-8", one_line: bool = False
) -> object:
    """JSON bytes → a value; bad input is a one-line MessageError at `where` (a JSON-lines
    line says only its column)."""
    try:
        return json.loads(
            data.decode(encoding), parse_constant=_refuse_constant, parse_float=_finite
        )
    except UnicodeDecodeError:
        raise MessageError(f"{where}: not UTF-8") from None
    except RecursionError:
        raise MessageError(f"{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        raise MessageError(f"{where}: not valid JSON: {exc.msg} at {at}") from None
    except ValueError as exc:  # a number over Python's int-string limit, NaN, Infinity
        raise MessageError(f"{where}: not valid JSON: {_number_words(exc)}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")  # RFC 8259 section 6


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 would be read as infinity
        raise ValueError(f"the number {text[:20]}… is out of range")
    return value


def _number_words(exc: ValueError) -> str:
    text = str(exc)
    if "integer string conversion" in text:
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return text.splitlines()[0][:200] if text else "a bad number"


def load_message(
    data: bytes,
    *,
    where: str,
    base_dir: str | None,
    default_sender: str | None,
    max_size: int = DEFAULT_MAX_SIZE,
    allow_paths: bool = True,
) -> Message:
    """The bytes of a JSON document → a validated Message."""
    doc = decode_json(data, where, encoding="utf-8-sig")  # an editor's byte-order mark is fine
    return message_from_json(
        doc,
        where=where,
        base_dir=base_dir,
        default_sender=default_sender,
        max_size=max_size,
        allow_paths=allow_paths,
    )

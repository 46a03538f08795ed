"""The body of an HTTP request, from the forms the adapters give it (as requests takes them):
JSON, form fields, or multipart/form-data with files."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode


def encode_body(json_body: Any, data: Any, files: Any) -> tuple[bytes | None, str | None]:
    """The bytes of a request body and their Content-Type (None for raw `data`)."""
    if json_body is not None:
        return json.dumps(json_body).encode("utf-8"), "application/json"
    if files is not None:
        return encode_multipart(data, files)
    if data is None:
        return None, None
    if isinstance(data, (bytes, str)):
        return (data.encode("utf-8") if isinstance(data, str) else data), None
    return urlencode(_pairs(data), doseq=True).encode("ascii"), "application/x-www-form-urlencoded"


def encode_multipart(
    data: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
    files: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[bytes, str]:
    """A multipart/form-data body from requests-style `data` and `files`.

    A file value is (filename, content[, content type]); filename None makes a plain field.
    """
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []

    def part(name: str, value: Any, filename: str | None, ctype: str | None) -> None:
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        body = value if isinstance(value, bytes) else str(value).encode("utf-8")
        chunks.append(head.encode("utf-8") + b"\r\n" + body + b"\r\n")

    for name, value in _pairs(data):
        for one in value if isinstance(value, list) else [value]:
            part(name, one, None, None)
    for name, spec in _pairs(files):
        if isinstance(spec, tuple):
            filename, content = spec[0], spec[1]
            ctype = spec[2] if len(spec) > 2 else None
        else:
            filename, content, ctype = name, spec, None
        part(name, content, filename, ctype)
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _pairs(values: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return list(values.items())
    return list(values)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")

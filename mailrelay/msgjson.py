"""A message given as JSON (`send --message`, each line of `send --batch`).

The object has the fields of the command-line options (see `mailrelay schema`); attachments
come as a `path` (relative to the JSON file) or as `content_base64`. Errors name the field.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

from mailrelay.errors import InputFileError, MessageError
from mailrelay.message import DEFAULT_MAX_SIZE, Message, message_from_dict


def message_from_json(
    doc: object,
    *,
    where: str,
    base_dir: str | None,
    default_sender: str | None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """A decoded JSON object → a validated Message; attachment paths are read here."""
    if not isinstance(doc, Mapping):
        raise MessageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    fields: dict[str, Any] = dict(doc)
    attachments = fields.get("attachments")
    if isinstance(attachments, list):
        resolved: list[Any] = []
        for i, item in enumerate(attachments):
            if isinstance(item, Mapping) and "path" in item:
                item = _read_attachment(item, f"{where}: attachments[{i}]", base_dir)
            resolved.append(item)
        fields["attachments"] = resolved
    return message_from_dict(fields, where=where, default_sender=default_sender, max_size=max_size)


def _read_attachment(item: Mapping[str, Any], where: str, base_dir: str | None) -> dict[str, Any]:
    path = item["path"]
    if not isinstance(path, str) or not path:
        raise MessageError(f"{where}.path: expected a file path")
    full = os.path.join(base_dir or os.getcwd(), os.path.expanduser(path))
    try:
        with open(full, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputFileError(f"{where}.path: {path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{where}.path: {path}: is a directory") from None
    except OSError as exc:
        raise InputFileError(f"{where}.path: {path}: cannot read: {exc.strerror}") from None
    out = {k: v for k, v in item.items() if k != "path"}
    out.setdefault("filename", os.path.basename(path))
    out["content_base64"] = base64.b64encode(data).decode("ascii")
    return out


def load_message(
    data: bytes,
    *,
    where: str,
    base_dir: str | None,
    default_sender: str | None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """The bytes of a JSON document → a validated Message."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError(f"{where}: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MessageError(
            f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return message_from_json(
        doc, where=where, base_dir=base_dir, default_sender=default_sender, max_size=max_size
    )

"""The message: its model, building it from command-line pieces, local validation, its MIME
form, a whole message given as RFC 5322 bytes, and its JSON form.

One job per module (docs/architecture.md, "Layout"): `model` (the records), `headers`
(header values and encoded words), `addresses` (address syntax and the local-address rules),
`mime` (MIME rendering and streaming), `validate`, `build` (flags and input files), `eml`,
`fields` (a header block's fields, as bytes) and `jsonform`. Every name callers use is
re-exported here.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrelay.message.addresses import (
        Address,
        is_local_address,
        parse_address,
        parse_addresses,
        plain_address,
        validate_email,
    )
    from mailrelay.message.bounds import MAX_MIME_DEPTH
    from mailrelay.message.build import (
        build_message,
        html_to_text,
        load_attachment,
        read_bounded,
        read_input_file,
    )
    from mailrelay.message.eml import parse_eml
    from mailrelay.message.fields import ascii_header_fields, split_fields
    from mailrelay.message.headers import STRUCTURAL_HEADERS, check_header_value, parse_header
    from mailrelay.message.jsonform import message_from_dict, message_to_dict
    from mailrelay.message.mime import MessageBytes
    from mailrelay.message.model import DEFAULT_MAX_SIZE, Attachment, Message
    from mailrelay.message.validate import check_fields, check_renders, validate_message

# Each name is loaded from its module when first asked for (PEP 562), so a plain send does
# not load the .eml parser or the JSON form it never uses (a module costs start-up time).
_HOME = {
    "Address": "addresses",
    "Attachment": "model",
    "DEFAULT_MAX_SIZE": "model",
    "MAX_MIME_DEPTH": "bounds",
    "Message": "model",
    "MessageBytes": "mime",
    "STRUCTURAL_HEADERS": "headers",
    "plain_address": "addresses",
    "split_fields": "fields",
    "ascii_header_fields": "fields",
    "build_message": "build",
    "check_fields": "validate",
    "check_header_value": "headers",
    "check_renders": "validate",
    "html_to_text": "build",
    "is_local_address": "addresses",
    "load_attachment": "build",
    "message_from_dict": "jsonform",
    "message_to_dict": "jsonform",
    "parse_address": "addresses",
    "parse_addresses": "addresses",
    "parse_eml": "eml",
    "parse_header": "headers",
    "read_bounded": "build",
    "read_input_file": "build",
    "validate_email": "addresses",
    "validate_message": "validate",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'mailrelay.message' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"mailrelay.message.{module}"), name)
    globals()[name] = value  # asked once
    return value


__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_MIME_DEPTH",
    "STRUCTURAL_HEADERS",
    "Address",
    "Attachment",
    "Message",
    "MessageBytes",
    "ascii_header_fields",
    "build_message",
    "check_fields",
    "check_header_value",
    "check_renders",
    "html_to_text",
    "is_local_address",
    "load_attachment",
    "message_from_dict",
    "message_to_dict",
    "parse_address",
    "parse_addresses",
    "parse_eml",
    "parse_header",
    "plain_address",
    "read_bounded",
    "read_input_file",
    "split_fields",
    "validate_email",
    "validate_message",
]

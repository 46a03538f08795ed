"""The compact send-request schemas in `schemas/` against a corpus of good and bad requests.

Every case says whether the provider's published spec accepts it. The compact schemas (which
the fakes validate against) must give that verdict always; when `MAILRELAY_SPECS_DIR` names
a folder holding the published specs (laid out as below, each file byte for byte from the
repository and commit in the schema's `x-source`), the full specs must give it too.

    sendgrid/tsg_mail_v3.yaml             twilio/sendgrid-oai
    resend/resend.yaml                    resend/resend-openapi
    mandrill/transactional.openapi.json   mailchimp/mailchimp-client-lib-codegen
    mailgun/openapi.yaml                  mailgun/mailgun-mcp-server
    postmark/server.yml                   kylecarhart/runner (OpenAPI 3 of Postmark's Swagger)
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.esp.fakebase import SCHEMAS_DIR, schema_errors, send_schema, validation_errors

SPECS_ENV = "MAILRELAY_SPECS_DIR"
# read at import: tests/conftest.py drops every MAILRELAY_* variable while a test runs
SPECS_DIR = os.environ.get(SPECS_ENV) or None

# provider → (spec file under MAILRELAY_SPECS_DIR, path, content type)
SPECS: dict[str, tuple[str, str, str]] = {
    "sendgrid": ("sendgrid/tsg_mail_v3.yaml", "/v3/mail/send", "application/json"),
    "resend": ("resend/resend.yaml", "/emails", "application/json"),
    "mandrill": ("mandrill/transactional.openapi.json", "/messages/send", "application/json"),
    "mailgun": ("mailgun/openapi.yaml", "/v3/{domain_name}/messages", "multipart/form-data"),
    "postmark": ("postmark/server.yml", "/email", "application/json"),
}

SG_BASE: dict[str, Any] = {
    "personalizations": [{"to": [{"email": "a@example.com"}]}],
    "from": {"email": "ops@example.com", "name": "Ops"},
    "subject": "Disk full",
    "content": [{"type": "text/plain", "value": "hi"}],
}
RS_BASE: dict[str, Any] = {
    "from": "Ops <ops@example.com>",
    "to": ["a@example.com"],
    "subject": "Disk full",
    "text": "hi",
}
MD_BASE: dict[str, Any] = {
    "key": "md-key",
    "message": {
        "from_email": "ops@example.com",
        "subject": "Disk full",
        "text": "hi",
        "to": [{"email": "a@example.com", "type": "to"}],
    },
}
# Mailgun's form takes the same four fields, `to` repeated (a list)
MG_BASE: dict[str, Any] = dict(RS_BASE)
PM_BASE: dict[str, Any] = {
    "From": "ops@example.com",
    "To": "a@example.com",
    "Subject": "Disk full",
    "TextBody": "hi",
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with top-level keys replaced (None removes a key)."""
    doc: dict[str, Any] = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def _msg(**changes: Any) -> dict[str, Any]:
    """A Mandrill request whose `message` has these keys replaced (None removes a key)."""
    return _with(MD_BASE, message=_with(MD_BASE["message"], **changes))


# (provider, case id, payload, valid by the published spec)
CORPUS: list[tuple[str, str, Any, bool]] = [
    # SendGrid
    ("sendgrid", "minimal", SG_BASE, True),
    (
        "sendgrid",
        "everything",
        _with(
            SG_BASE,
            personalizations=[
                {
                    "to": [{"email": "a@example.com", "name": "A"}],
                    "cc": [{"email": "c@example.com"}],
                    "bcc": [{"email": "b@example.com"}],
                    "custom_args": {"ticket": "42"},
                    "headers": {"X-Run": "7"},
                }
            ],
            reply_to_list=[{"email": "r@example.com"}],
            attachments=[
                {"content": "aGk=", "filename": "a.txt", "type": "text/plain"},
                {
                    "content": "aGk=",
                    "filename": "i.png",
                    "disposition": "inline",
                    "content_id": "i",
                },
            ],
            categories=["ops"],
            mail_settings={"sandbox_mode": {"enable": True}},
        ),
        True,
    ),
    ("sendgrid", "no personalizations", _with(SG_BASE, personalizations=None), False),
    ("sendgrid", "no from", _with(SG_BASE, **{"from": None}), False),
    ("sendgrid", "personalization without to", _with(SG_BASE, personalizations=[{}]), False),
    ("sendgrid", "from as a string", _with(SG_BASE, **{"from": "ops@example.com"}), False),
    ("sendgrid", "empty subject", _with(SG_BASE, subject=""), False),
    ("sendgrid", "content without value", _with(SG_BASE, content=[{"type": "text/plain"}]), False),
    (
        "sendgrid",
        "bad disposition",
        _with(SG_BASE, attachments=[{"content": "aGk=", "filename": "a", "disposition": "x"}]),
        False,
    ),
    (
        "sendgrid",
        "attachment without filename",
        _with(SG_BASE, attachments=[{"content": "aGk="}]),
        False,
    ),
    (
        "sendgrid",
        "sandbox enable as string",
        _with(SG_BASE, mail_settings={"sandbox_mode": {"enable": "yes"}}),
        False,
    ),
    # the published quirk: top-level custom_args is a string
    ("sendgrid", "top-level custom_args object", _with(SG_BASE, custom_args={"a": "b"}), False),
    (
        "sendgrid",
        "eleven categories",
        _with(SG_BASE, categories=[f"c{i}" for i in range(11)]),
        False,
    ),
    # Resend
    ("resend", "minimal", RS_BASE, True),
    ("resend", "to as a string", _with(RS_BASE, to="a@example.com"), True),
    (
        "resend",
        "everything",
        _with(
            RS_BASE,
            cc="c@example.com",
            bcc=["b@example.com"],
            reply_to=["r@example.com"],
            html="<p>hi</p>",
            headers={"X-Run": "7"},
            attachments=[{"filename": "a.txt", "content": "aGk=", "content_type": "text/plain"}],
            tags=[{"name": "kind", "value": "ops"}],
        ),
        True,
    ),
    (
        "resend",
        "template",
        _with(RS_BASE, text=None, template={"id": "t-1", "variables": {"n": 1}}),
        True,
    ),
    ("resend", "no from", _with(RS_BASE, **{"from": None}), False),
    ("resend", "no to", _with(RS_BASE, to=None), False),
    ("resend", "no subject", _with(RS_BASE, subject=None), False),
    ("resend", "empty to list", _with(RS_BASE, to=[]), False),
    ("resend", "51 recipients", _with(RS_BASE, to=[f"u{i}@example.com" for i in range(51)]), False),
    ("resend", "to as a number", _with(RS_BASE, to=7), False),
    ("resend", "template without id", _with(RS_BASE, template={"variables": {}}), False),
    ("resend", "attachments not a list", _with(RS_BASE, attachments={"filename": "a"}), False),
    ("resend", "headers as a list", _with(RS_BASE, headers=["X-A: 1"]), False),
    # Mandrill
    ("mandrill", "minimal", MD_BASE, True),
    (
        "mandrill",
        "everything",
        _with(
            _msg(
                html="<p>hi</p>",
                from_name="Ops",
                headers={"Reply-To": "r@example.com"},
                tags=["ops"],
                metadata={"ticket": "42"},
                attachments=[{"type": "text/plain", "name": "a.txt", "content": "aGk="}],
                images=[{"type": "image/png", "name": "i", "content": "aGk="}],
                important=True,
            ),
            send_at="2026-12-01 10:00:00",
            ip_pool="Main Pool",
            **{"async": False},
        ),
        True,
    ),
    ("mandrill", "no key", _with(MD_BASE, key=None), False),
    ("mandrill", "no message", _with(MD_BASE, message=None), False),
    ("mandrill", "key as a number", _with(MD_BASE, key=7), False),
    ("mandrill", "unknown top-level field", _with(MD_BASE, priority="high"), False),
    ("mandrill", "bad recipient type", _msg(to=[{"email": "a@example.com", "type": "x"}]), False),
    ("mandrill", "recipient email as a number", _msg(to=[{"email": 7}]), False),
    ("mandrill", "attachments as an object", _msg(attachments={"name": "a"}), False),
    ("mandrill", "bad merge_language", _msg(merge_language="jinja"), False),
    ("mandrill", "tags as a string", _msg(tags="ops"), False),
    ("mandrill", "important as a string", _msg(important="yes"), False),
    # Mailgun (form fields; repeated fields and files as lists)
    ("mailgun", "minimal", MG_BASE, True),
    (
        "mailgun",
        "everything",
        _with(
            MG_BASE,
            cc=["c@example.com"],
            bcc=["b@example.com"],
            html="<p>hi</p>",
            attachment=["a.txt"],
            inline=["i.png"],
            **{
                "o:tag": ["ops"],
                "o:testmode": "yes",
                "o:tracking": "htmlonly",
                "h:Reply-To": "r@example.com",
                "v:ticket": "42",
            },
        ),
        True,
    ),
    ("mailgun", "template only", _with(MG_BASE, text=None, template="welcome"), True),
    ("mailgun", "no from", _with(MG_BASE, **{"from": None}), False),
    ("mailgun", "no to", _with(MG_BASE, to=None), False),
    ("mailgun", "no subject", _with(MG_BASE, subject=None), False),
    ("mailgun", "to as a single string", _with(MG_BASE, to="a@example.com"), False),
    ("mailgun", "testmode no", _with(MG_BASE, **{"o:testmode": "no"}), False),
    ("mailgun", "bad tracking value", _with(MG_BASE, **{"o:tracking": "maybe"}), False),
    ("mailgun", "tag as a string", _with(MG_BASE, **{"o:tag": "ops"}), False),
    ("mailgun", "t:text other than yes", _with(MG_BASE, **{"t:text": "no"}), False),
    # Postmark (the spec has no required list: a missing From passes it)
    ("postmark", "minimal", PM_BASE, True),
    (
        "postmark",
        "everything",
        _with(
            PM_BASE,
            Cc="c@example.com",
            Bcc="b@example.com",
            ReplyTo="r@example.com",
            HtmlBody="<p>hi</p>",
            Tag="ops",
            TrackOpens=True,
            TrackLinks="HtmlOnly",
            Headers=[{"Name": "X-Run", "Value": "7"}],
            Attachments=[{"Name": "a.txt", "Content": "aGk=", "ContentType": "text/plain"}],
        ),
        True,
    ),
    ("postmark", "no From (not required by the spec)", _with(PM_BASE, From=None), True),
    ("postmark", "To as a list", _with(PM_BASE, To=["a@example.com"]), False),
    ("postmark", "bad TrackLinks", _with(PM_BASE, TrackLinks="Always"), False),
    ("postmark", "TrackOpens as a string", _with(PM_BASE, TrackOpens="true"), False),
    ("postmark", "Headers as an object", _with(PM_BASE, Headers={"X-Run": "7"}), False),
    (
        "postmark",
        "header Value as a number",
        _with(PM_BASE, Headers=[{"Name": "X", "Value": 7}]),
        False,
    ),
    ("postmark", "Attachments not a list", _with(PM_BASE, Attachments={"Name": "a"}), False),
    ("postmark", "body not an object", ["From", "To"], False),
]


def _mandrill_union(root: dict[str, Any], schema: dict[str, Any]) -> set[str] | None:
    """The properties of all `allOf` branches of a request schema (refs resolved in `root`)."""
    while "$ref" in schema:
        schema = _resolve(root, schema["$ref"])
    names: set[str] = set()
    for branch in schema.get("allOf", []):
        while "$ref" in branch:
            branch = _resolve(root, branch["$ref"])
        names |= set(branch.get("properties", {}))
    return names or None


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.removeprefix("#").removeprefix("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _verdict(provider: str, errors: list[str], union: set[str] | None, payload: Any) -> bool:
    """Valid or not, reading Mandrill's ApiKey `additionalProperties: false` over the union
    of the `allOf` branches (as the fake does) instead of literally."""
    if provider == "mandrill":
        errors = [e for e in errors if not (e.startswith("(body):") and "Additional prop" in e)]
        if isinstance(payload, dict) and union is not None and set(payload) - union:
            return False
    return not errors


def _ptr(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@cache
def _full_spec(relpath: str) -> dict[str, Any]:
    assert SPECS_DIR is not None
    path = Path(SPECS_DIR) / relpath
    text = path.read_text(encoding="utf-8")
    spec: dict[str, Any] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return spec


def _full_spec_schema_pointer(provider: str) -> str:
    relpath, path, content_type = SPECS[provider]
    spec = _full_spec(relpath)
    pointer = "/" + _ptr("paths", path, "post", "requestBody")
    body = spec["paths"][path]["post"]["requestBody"]
    if "$ref" in body:  # requestBody may itself point into components/requestBodies
        pointer = body["$ref"].removeprefix("#")
    return pointer + "/" + _ptr("content", content_type, "schema")


def _full_spec_errors(provider: str, payload: Any) -> list[str]:
    spec = _full_spec(SPECS[provider][0])
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    ref = "urn:spec#" + _full_spec_schema_pointer(provider)
    return validation_errors(Draft202012Validator({"$ref": ref}, registry=registry), payload)


IDS = [f"{provider}: {name}" for provider, name, _, _ in CORPUS]


def test_every_schema_names_its_public_source() -> None:
    assert sorted(p.stem for p in SCHEMAS_DIR.glob("*.json")) == sorted(SPECS)
    for provider in SPECS:
        source = send_schema(provider)["x-source"]
        assert source["repository"].startswith("https://github.com/"), provider
        assert len(source["commit"]) == 40 and int(source["commit"], 16) >= 0, provider
        assert source["path"] and not source["path"].startswith("/"), provider
        Draft202012Validator.check_schema(send_schema(provider))


def test_the_corpus_has_good_and_bad_cases_for_every_provider() -> None:
    for provider in SPECS:
        verdicts = [valid for p, _, _, valid in CORPUS if p == provider]
        assert len(verdicts) >= 8 and any(verdicts) and not all(verdicts), provider


@pytest.mark.parametrize(("provider", "name", "payload", "valid"), CORPUS, ids=IDS)
def test_compact_schema_verdict(provider: str, name: str, payload: Any, valid: bool) -> None:
    schema = send_schema(provider)
    union = _mandrill_union(schema, schema)
    errors = schema_errors(provider, payload)
    assert _verdict(provider, errors, union, payload) is valid, errors


@pytest.mark.parametrize(("provider", "name", "payload", "valid"), CORPUS, ids=IDS)
def test_full_spec_gives_the_same_verdict(
    provider: str, name: str, payload: Any, valid: bool
) -> None:
    if SPECS_DIR is None:
        pytest.skip(f"{SPECS_ENV} is not set: the published specs are not at hand")
    relpath = SPECS[provider][0]
    if not (Path(SPECS_DIR) / relpath).is_file():
        pytest.fail(f"{SPECS_ENV} is set but has no {relpath}")
    spec = _full_spec(relpath)
    schema = _resolve(spec, _full_spec_schema_pointer(provider))
    errors = _full_spec_errors(provider, payload)
    assert _verdict(provider, errors, _mandrill_union(spec, schema), payload) is valid, errors
    compact = schema_errors(provider, payload)
    assert sorted(errors) == sorted(compact)

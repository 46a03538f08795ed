"""Hostile input, round 3: JSON that breaks the parser's limits, secrets that travel in
another form than they were given, a Redis reply that comes late, and config keys of the
wrong type. Through the installed command and real loopback servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer

from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay, smtp_url

GOOD = {"from": "a@example.com", "to": "b@example.com", "subject": "x", "text": "hi"}
HUGE_INT = "1" * 5000  # over Python's int-string conversion limit (4300 digits)


def with_raw(field: str, raw: str) -> str:
    """GOOD as JSON text with `field` set to the raw JSON text `raw`."""
    return json.dumps(GOOD)[:-1] + f', "{field}": {raw}}}'


# the same class: what json.loads cannot turn into a value, or turns into one that is not JSON
BAD_NUMBERS = {
    "a 5000-digit integer": with_raw("x", HUGE_INT),
    "a 5000-digit integer in a header": with_raw("headers", '{"X-A": ' + HUGE_INT + "}"),
    "a float out of range": with_raw("x", "1e999999"),
    "NaN": with_raw("x", "NaN"),
    "Infinity": with_raw("headers", '{"X-A": -Infinity}'),
    "nested too deeply": with_raw("x", "[" * 100_000 + "]" * 100_000),
}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_a_json_message_beyond_the_parser_is_a_bad_message(
    tmp_path: Path, smtp: SmtpServer, text: str
) -> None:
    doc = tmp_path / "m.json"
    doc.write_text(text)
    r = mailrelay("--provider", smtp_url(smtp, "relay"), "send", "--message", str(doc))
    assert r.returncode == 65, r.stderr
    assert r.stderr.startswith(f"mailrelay: error: {doc}: ")
    assert len(r.stderr.splitlines()) == 1 and "internal error" not in r.stderr
    assert smtp.mail_commands == 0


def test_a_batch_line_beyond_the_parser_is_one_bad_line(tmp_path: Path, smtp: SmtpServer) -> None:
    lines = [json.dumps({**GOOD, "subject": "first"}), BAD_NUMBERS["a 5000-digit integer"]]
    lines += [BAD_NUMBERS["nested too deeply"], json.dumps({**GOOD, "subject": "last"})]
    batch = tmp_path / "b.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    r = mailrelay(
        "--provider", smtp_url(smtp, "relay"), "--state", str(tmp_path / "state.toml"),
        "send", "--json", "--batch", str(batch),
    )  # fmt: skip
    assert r.returncode == 65, r.stderr
    assert "internal error" not in r.stderr
    results = {x["line"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert results[2]["error"] == f"{batch}:2: not valid JSON: a number has more than 4300 digits"
    assert results[3]["error"] == f"{batch}:3: JSON nested too deeply"
    assert results[2]["exit_code"] == results[3]["exit_code"] == 65
    assert results[1]["delivered"] and results[4]["delivered"]  # the others' results printed
    assert smtp.mail_commands == 2


def serve_client(tmp_path: Path) -> Any:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    config = tmp_path / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "a@example.com"\n[serve]\ntokens = ["tok-0123456789abcdef"]\n'
        f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
    )
    config.chmod(0o600)
    app = create_app(load_settings(str(config)), state=str(tmp_path / "state.toml"), log=False)
    return app.test_client()


@pytest.mark.parametrize("text", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_serve_answers_400_to_json_beyond_the_parser(tmp_path: Path, text: str) -> None:
    client = serve_client(tmp_path)
    r = client.post(
        "/v1/messages",
        data=text.encode(),
        headers={"Authorization": "Bearer tok-0123456789abcdef"},
        content_type="application/json",
    )
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["detail"].startswith("request body: ")
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())


@pytest.mark.parametrize("depth", [900, 100_000])
def test_a_provider_error_nested_too_deeply_keeps_its_outcome_class(
    tmp_path: Path, httpserver: HTTPServer, depth: int
) -> None:
    body = '{"errors":' + "[" * depth + "]" * depth + "}"
    httpserver.expect_request("/email").respond_with_data(
        body, status=503, content_type="application/json"
    )
    base = quote(httpserver.url_for("/").rstrip("/"), safe="")
    r = mailrelay(
        "--provider", f"postmark://pm-token-123456@?base_url={base}", "--state",
        str(tmp_path / "state.toml"), "send", "-r", "a@example.com", "-s", "x", "--text", "hi",
        "b@example.com",
    )  # fmt: skip
    assert r.returncode == 75, r.stderr  # a 503 is transient, not an adapter's bug
    assert "transient: HTTP 503" in r.stderr and "internal error" not in r.stderr

"""Hostile input, round 3: JSON that breaks the parser's limits, secrets that travel in
another form than they were given, a Redis reply that comes late, and config keys of the
wrong type. Through the installed command and real loopback servers."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.configfile import write_config
from tests.smtpserver import SmtpServer, shared_server
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
    with shared_server() as s:
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


def serve_client(tmp_path: Path, provider: str | None = None) -> Any:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    config = tmp_path / "config.toml"
    provider = provider or f'name = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
    config.write_text(
        '[defaults]\nfrom = "a@example.com"\n[serve]\ntokens = ["tok-0123456789abcdef"]\n'
        f"[[providers]]\n{provider}"
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


# --- secrets that leave in another form than they were given --------------------------------

ESP_TYPES = [
    p.stem.removeprefix("fake_") for p in sorted(Path(__file__).parent.glob("esp/fake_*.py"))
]
CREDENTIAL_HEADERS = (
    "authorization", "api-key", "x-postmark-server-token", "x-amz-security-token",
)  # fmt: skip


def echo_credentials(request: Request) -> Response:
    """A 503 whose error text repeats every credential the request carried, as a careless
    provider (or a proxy in front of it) does."""
    said = [v for k, v in request.headers.items() if k.lower() in CREDENTIAL_HEADERS]
    try:
        body = json.loads(request.get_data())
    except ValueError:
        body = None
    if isinstance(body, dict) and "key" in body:  # Mandrill's key travels in the JSON body
        said.append(json.dumps(body["key"]))
    text = "echo: " + " | ".join(said)
    return Response(
        json.dumps({"message": text, "Message": text, "ErrorMessage": text,
                    "errors": [{"message": text}]}),
        status=503, content_type="application/json",
    )  # fmt: skip


@pytest.mark.parametrize("type_", ESP_TYPES)
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_an_env_secret_with_a_line_end_is_scrubbed_as_sent(
    tmp_path: Path, httpserver: HTTPServer, type_: str, line_end: str
) -> None:
    import base64
    import importlib

    options = {"session_token": "session-token-0123456789"} if type_ == "ses" else {}
    fake = importlib.import_module(f"tests.esp.fake_{type_}").FAKE_CLASS(**options)
    httpserver.expect_request(re.compile(".*")).respond_with_handler(echo_credentials)
    table = fake.config(httpserver.url_for("").rstrip("/"))
    env: dict[str, str] = {}
    for key, value in list(table.items()):
        if value in fake.secrets:
            env[f"SECRET_{key.upper()}"] = value + line_end
            table[key] = {"env": f"SECRET_{key.upper()}"}
    assert env, "the fake names its credentials"
    config = write_config(
        tmp_path / "config.toml", [table], defaults={"from": "a@example.com"}, mode=0o600
    )
    log = tmp_path / "audit.jsonl"
    r = mailrelay(
        "--config", str(config), "--state", str(tmp_path / "state.toml"), "--log-file",
        str(log), "send", "--queue", "--json", "-s", "x", "--text", "hi", "b@example.com",
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr  # queued
    assert httpserver.log, "the request went out"
    assert "echo: " in r.stdout + r.stderr  # the provider's words reached the output
    secrets = [v.rstrip("\r\n") for v in env.values()]
    forms = set(secrets)
    for request, _ in httpserver.log:  # and every form in which they went on the wire
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            forms.add(auth.removeprefix("Basic "))
            forms.add(base64.b64decode(auth.removeprefix("Basic ")).decode())
    if type_ in ("mailgun", "mailjet"):
        assert len(forms) > len(secrets)
    spool = Path(os.environ["XDG_DATA_HOME"]) / "mailrelay" / "spool"
    places = {"stdout": r.stdout, "stderr": r.stderr, "audit log": log.read_text()}
    places["state"] = (tmp_path / "state.toml").read_text()
    for path in spool.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    assert len(places) > 4  # the spool holds the message
    for where, text in places.items():
        for form in forms:
            assert form not in text, (where, form)


def test_serve_does_not_answer_with_an_echoed_env_secret(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "pm-serve-token-5f1e9a"
    monkeypatch.setenv("PM_SERVE_TOKEN", token + "\n")
    httpserver.expect_request(re.compile(".*")).respond_with_handler(echo_credentials)
    base = httpserver.url_for("").rstrip("/")
    client = serve_client(
        tmp_path,
        f'type = "postmark"\nbase_url = "{base}"\nserver_token = {{ env = "PM_SERVE_TOKEN" }}\n',
    )
    r = client.post(
        "/v1/messages",
        json={"to": "b@example.com", "subject": "x", "text": "hi"},
        headers={"Authorization": "Bearer tok-0123456789abcdef"},
    )
    body = r.get_data(as_text=True)
    assert r.status_code == 503 and "echo: " in body, body
    assert token not in body


def test_a_secret_echoed_inside_a_json_string_is_scrubbed(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    key = 'md-key"with\\quotes-0123'  # travels JSON-escaped in Mandrill's body
    httpserver.expect_request(re.compile(".*")).respond_with_handler(echo_credentials)
    config = tmp_path / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "a@example.com"\n\n[[providers]]\ntype = "mandrill"\n'
        f'base_url = "{httpserver.url_for("").rstrip("/")}"\napi_key = {{ env = "MD_KEY" }}\n'
    )
    r = mailrelay(
        "--config", str(config), "--state", str(tmp_path / "state.toml"), "send", "-s", "x",
        "--text", "hi", "b@example.com", env={"MD_KEY": key},
    )  # fmt: skip
    assert r.returncode == 75, r.stderr
    assert "echo: " in r.stderr, r.stderr
    state = (tmp_path / "state.toml").read_text()
    for form in (key, json.dumps(key)[1:-1]):
        for where, text in {"stdout": r.stdout, "stderr": r.stderr, "state": state}.items():
            assert form not in text, (where, form)


# --- a Redis reply that comes after the timeout -----------------------------------------------


class StallingRelay(SmtpServer):
    """A relay that, as it takes message number `at`, puts a Redis server to sleep for
    `seconds` (DEBUG SLEEP from another connection) before it answers: the sender's state
    update after the send goes out, waits there, and runs when the server wakes."""

    def __init__(self, redis_port: int, seconds: float, at: int) -> None:
        super().__init__()
        self.redis_port = redis_port
        self.seconds = seconds
        self.at = at
        self.sleeper: socket.socket | None = None

    def _record(self, envelope: Any) -> str:
        if len(self.messages) + 1 == self.at:
            self.sleeper = socket.create_connection(("127.0.0.1", self.redis_port))
            self.sleeper.sendall(f"DEBUG SLEEP {self.seconds}\r\n".encode())
            for _ in range(100):  # bounded: until a PING goes unanswered, the server asleep
                with socket.create_connection(("127.0.0.1", self.redis_port)) as probe:
                    probe.settimeout(0.2)
                    probe.sendall(b"PING\r\n")
                    try:
                        probe.recv(16)
                    except TimeoutError:
                        break
        return super()._record(envelope)

    def stop(self) -> None:
        if self.sleeper is not None:
            self.sleeper.close()
        super().stop()


# 1: the server's script cache is empty (EVALSHA finds no script); 2: it has the script, and
# the update runs there after the client gave up
@pytest.mark.parametrize("paused", [1, 2])
def test_a_redis_reply_after_the_timeout_counts_the_send_once(tmp_path: Path, paused: int) -> None:
    import redis

    from mailrelay.state import TomlStateStore
    from tests.redisserver import RedisServer, server_binary

    binary = server_binary()
    if binary is None:
        pytest.skip("no redis-server or valkey-server")
    # the update waits 2 s: past the store's 0.5 s reply timeout, and past its resend's
    server = RedisServer(binary)
    server.extra = ["--enable-debug-command", "yes"]
    with server, StallingRelay(server.port, 2.0, paused) as relay:
        config = tmp_path / "config.toml"
        config.write_text(
            '[defaults]\nfrom = "a@example.com"\n\n[[providers]]\nname = "relay"\n'
            f'type = "smtp"\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'
        )
        for _ in range(paused):
            r = mailrelay(
                "--config", str(config), "--state", server.url, "send", "-s", "x", "--text",
                "hi", "b@example.com",
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
        assert len(relay.messages) == paused
        client = redis.Redis(host="127.0.0.1", port=server.port)
        try:  # the PING is answered when the server wakes, after the update and its resend
            client.ping()  # (in the same turn of its event loop); the reads come after them
            in_redis = int(client.hget("{mailrelay}:provider:relay", "sent") or 0)
            messages = int(client.hget("{mailrelay}:failover", "message:sent") or 0)
        finally:
            client.close()
    local = Path(os.environ["XDG_DATA_HOME"]) / "mailrelay" / "state.toml"
    local_sent = TomlStateStore(local).load().provider("relay").sent if local.exists() else 0
    assert (in_redis, messages, local_sent) == (paused, paused, 0)  # counted once
    assert "may have been recorded there" in r.stderr


# --- typed config keys ------------------------------------------------------------------------

SMTP_TABLE = '[[providers]]\nname = "relay"\ntype = "smtp"\nhost = "127.0.0.1"\nsecurity = "none"\n'
MAILGUN_TABLE = (
    '[[providers]]\nname = "mg"\ntype = "mailgun"\ndomain = "mg.example.com"\n'
    'api_key = "key-0123456789"\n'
)
WRONG_TYPES = {
    "int as a string": (SMTP_TABLE + 'port = "25"\n', "provider 'relay': key 'port': must be an "
                        "integer, not the string '25': write it without quotes"),
    "float as a string": (SMTP_TABLE + 'timeout = "5"\n', "provider 'relay': key 'timeout': "
                          "must be a number, not the string '5'"),
    "bool as a string": (SMTP_TABLE + 'verify = "false"\n', "provider 'relay': key 'verify': "
                         "must be true or false, not the string 'false'"),
    "bool as yes": (MAILGUN_TABLE + 'sandbox = "yes"\n', "provider 'mg': key 'sandbox': must "
                    "be true or false, not the string 'yes'"),
    "str as an int": (SMTP_TABLE.replace('"127.0.0.1"', "127"), "provider 'relay': key 'host': "
                      "must be a non-empty string"),
    "list of ints": ('[[providers]]\nname = "sm"\ntype = "sendmail"\ncommand = [1]\n',
                     "provider 'sm': key 'command': must be a list of non-empty strings"),
    "defaults float": ('[defaults]\ntimeout = "30"\n' + SMTP_TABLE, "key 'defaults.timeout': "
                       "must be a number, not the string '30'"),
    "defaults int": ('[defaults]\nmax_size = "1000000"\n' + SMTP_TABLE, "key "
                     "'defaults.max_size': must be an integer, not the string '1000000'"),
    "serve int": ('[serve]\nworkers = "2"\n' + SMTP_TABLE, "key 'serve.workers': must be an "
                  "integer, not the string '2'"),
    "serve float": ('[serve]\nflush_interval = "60"\n' + SMTP_TABLE, "key "
                    "'serve.flush_interval': must be a number, not the string '60'"),
}  # fmt: skip


@pytest.mark.parametrize(("table", "words"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
@pytest.mark.parametrize("command", [["config", "check"], ["send", "-s", "x", "b@example.com"]])
def test_a_config_key_of_the_wrong_type_is_refused(
    tmp_path: Path, table: str, words: str, command: list[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[defaults]\nfrom = "a@example.com"\n' + table.replace("[defaults]\n", ""))
    config.chmod(0o600)
    r = mailrelay("--config", str(config), *command)
    assert r.returncode == 78, r.stdout + r.stderr
    lines = [line for line in (r.stdout + r.stderr).splitlines() if words in line]
    assert len(lines) == 1 and f"{config}: {words}" in lines[0], r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_a_provider_url_still_reads_numbers_and_booleans_from_text(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    url = f"smtp://127.0.0.1:{smtp.port}?security=none&timeout=5&verify=false&name=relay"
    r = mailrelay("--provider", url, "send", "-r", "a@example.com", "-s", "x", "b@example.com")
    assert r.returncode == 0, r.stderr
    assert smtp.mail_commands == 1

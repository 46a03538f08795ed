"""The command line in-process (click's runner): options, standard input, JSON shapes, exit
codes and secrets. Delivery goes to real outbox folders; failures to real refused ports."""

from __future__ import annotations

import email
import email.policy
import json
import os
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailrelay.cli import main

SECRET = "s3cr3t-Pa55-word"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(args: list[str], input: str | bytes | None = None) -> Run:
    runner = CliRunner()
    with runner.isolation(input=input) as (out, err, _):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Run(code, out.getvalue().decode(), err.getvalue().decode())


def outbox_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def read_eml(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def base(outbox: Path, tmp_path: Path) -> list[str]:
    return ["--state", str(tmp_path / "state.toml"), "--provider", f"outbox://{outbox}"]


def body_of(msg: EmailMessage, subtype: str = "plain") -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def test_pipe_body_like_mail1(base: list[str], outbox: Path) -> None:
    r = run(
        [*base, "send", "-r", "ops@example.com", "-s", "web1: disk", "a@example.com"],
        input="disk 91% full\n",
    )
    assert r.code == 0, r.err
    assert r.out == "" and r.err == ""  # success is silent when nobody watches
    (path,) = outbox_files(outbox)
    msg = read_eml(path)
    assert msg["Subject"] == "web1: disk" and msg["To"] == "a@example.com"
    assert body_of(msg) == "disk 91% full\n"


def test_every_message_option(base: list[str], outbox: Path, tmp_path: Path) -> None:
    att = tmp_path / "report.csv"
    att.write_text("a,b\n1,2\n")
    html = tmp_path / "body.html"
    html.write_text("<p>Hello <b>world</b></p>")
    r = run(
        [
            *base,
            "send",
            "-r",
            "Ops Team <ops@example.com>",
            "--to",
            "b@example.com",
            "-c",
            "c@example.com, d@example.com",
            "-b",
            "e@example.com",
            "--reply-to",
            "r@example.com",
            "-s",
            "Héllo ✓",
            "--html-file",
            str(html),
            "-a",
            str(att),
            "--header",
            "X-Ticket: 42",
            "--tag",
            "deploy",
            "--metadata",
            "run=7",
            "a@example.com",
        ]
    )
    assert r.code == 0, r.err
    msg = read_eml(outbox_files(outbox)[0])
    assert msg["From"] == "Ops Team <ops@example.com>"
    assert msg["To"] == "a@example.com, b@example.com"
    assert msg["Cc"] == "c@example.com, d@example.com"
    assert msg["Bcc"] is None  # never in the headers...
    assert "e@example.com" in msg["X-Envelope-To"]  # ...but on the envelope
    assert msg["Reply-To"] == "r@example.com"
    assert msg["Subject"] == "Héllo ✓"
    assert msg["X-Ticket"] == "42"
    assert "Hello **world**" in body_of(msg)  # the text alternative made by html2text
    assert "<b>world</b>" in body_of(msg, "html")
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content_type() == "text/csv"


def test_text_file_from_stdin_dash(base: list[str], outbox: Path) -> None:
    r = run(
        [*base, "send", "-r", "o@example.com", "--text-file", "-", "a@example.com"],
        input="from dash\n",
    )
    assert r.code == 0, r.err
    assert body_of(read_eml(outbox_files(outbox)[0])) == "from dash\n"


def test_no_stdin_ignores_standard_input(base: list[str], outbox: Path) -> None:
    r = run(
        [
            *base,
            "send",
            "--no-stdin",
            "-r",
            "o@example.com",
            "-s",
            "only a subject",
            "a@example.com",
        ],
        input="must not be read",
    )
    assert r.code == 0, r.err
    assert "must not be read" not in outbox_files(outbox)[0].read_text()


def test_from_falls_back_to_the_config(tmp_path: Path, outbox: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[defaults]\nfrom = "Cron <cron@example.com>"\n\n'
        f'[[providers]]\ntype = "outbox"\npath = "{outbox}"\n'
    )
    r = run(["--config", str(cfg), "send", "-s", "x", "--text", "y", "a@example.com"])
    assert r.code == 0, r.err
    assert read_eml(outbox_files(outbox)[0])["From"] == "Cron <cron@example.com>"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--bogus"], 64, "No such option"),
        (["--text", "a", "--text-file", "x"], 64, "not both"),
        (["--to", "not an address"], 65, "--to"),
        (["--header", "Bad Header: x"], 65, "not a valid header name"),
        (["--header", "Subject: x"], 65, "own option"),
        (["-s", "line\nbreak"], 65, "CR/LF"),
        (["-a", "/nonexistent/file.pdf"], 66, "/nonexistent/file.pdf"),
        (["--text-file", "/nonexistent/body.txt"], 66, "no such file"),
        (["--metadata", "novalue"], 65, "KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_and_contacts_nobody(
    base: list[str], outbox: Path, args: list[str], code: int, words: str
) -> None:
    body = [] if any(a.startswith("--text") for a in args) else ["--text", "b"]
    r = run([*base, "send", "-r", "o@example.com", *body, "a@example.com", *args])
    assert r.code == code, r.err
    assert words in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err
    assert outbox_files(outbox) == []


def test_no_sender_is_a_usage_error(base: list[str]) -> None:
    r = run([*base, "send", "--text", "x", "a@example.com"])
    assert r.code == 64 and "no sender" in r.err


def test_no_recipient(base: list[str]) -> None:
    r = run([*base, "send", "-r", "o@example.com", "--text", "x"])
    assert r.code == 65 and "no recipients" in r.err


def test_dry_run_sends_nothing_and_changes_nothing(
    base: list[str], outbox: Path, tmp_path: Path
) -> None:
    r = run(
        [
            *base,
            "send",
            "--dry-run",
            "-r",
            "o@example.com",
            "-s",
            "x",
            "--text",
            "y",
            "-b",
            "hidden@example.com",
            "a@example.com",
        ]
    )
    assert r.code == 0, r.err
    assert "1. outbox (outbox)" in r.out and "Subject: x" in r.out
    assert outbox_files(outbox) == [] and not (tmp_path / "state.toml").exists()
    r = run(
        [
            *base,
            "send",
            "--dry-run",
            "--json",
            "-r",
            "o@example.com",
            "--text",
            "y",
            "a@example.com",
        ]
    )
    doc = r.json()
    assert doc["dry_run"] is True and doc["first"] == "outbox"
    assert doc["plan"][0] == {
        "position": 1,
        "provider": "outbox",
        "type": "outbox",
        "settings": {"path": str(outbox)},
        "cooling_until": None,
    }
    assert doc["message"]["to"] == ["a@example.com"]


def test_send_json_shape(base: list[str]) -> None:
    r = run([*base, "send", "--json", "-r", "o@example.com", "--text", "y", "a@example.com"])
    assert r.code == 0, r.err
    doc = r.json()
    assert set(doc) == {
        "delivered",
        "message_id",
        "provider",
        "provider_message_id",
        "exit_code",
        "attempts",
        "warnings",
    }
    assert doc["delivered"] is True and doc["provider"] == "outbox" and doc["exit_code"] == 0
    (attempt,) = doc["attempts"]
    assert set(attempt) == {
        "provider",
        "type",
        "outcome",
        "status",
        "message_id",
        "detail",
        "latency_ms",
        "retry_after",
        "tried",
        "rate_limited",
    }
    assert attempt["outcome"] == "accepted" and attempt["rate_limited"] is None


def test_all_dead_exits_75_with_one_line_per_provider(tmp_path: Path, dead_port: int) -> None:
    r = run(
        [
            "--state",
            str(tmp_path / "s.toml"),
            "--provider",
            f"smtp://u:{SECRET}@127.0.0.1:{dead_port}?security=none&timeout=2",
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none&name=second",
            "send",
            "-r",
            "o@example.com",
            "--text",
            "x",
            "a@example.com",
        ]
    )
    assert r.code == 75
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("mailrelay: error: smtp (smtp): transient:")
    assert lines[1].startswith("mailrelay: error: second (smtp): transient:")
    assert "try again later" in lines[2] and len(lines) == 3
    assert SECRET not in r.err + r.out


def test_failover_is_shown_on_verbose(tmp_path: Path, dead_port: int, outbox: Path) -> None:
    r = run(
        [
            "-v",
            "--state",
            str(tmp_path / "s.toml"),
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none",
            "--provider",
            f"outbox://{outbox}",
            "send",
            "-r",
            "o@example.com",
            "--text",
            "x",
            "a@example.com",
        ]
    )
    assert r.code == 0, r.err
    assert "smtp (smtp) failed: transient" in r.err
    assert "sent via outbox (outbox), id <" in r.err


def test_providers_lists_order_marks_and_counters(base: list[str]) -> None:
    assert run([*base, "send", "-r", "o@example.com", "--text", "x", "a@example.com"]).code == 0
    r = run([*base, "providers", "--json"])
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["last_provider"] == "outbox" and doc["policy"] == "sticky"
    (p,) = doc["providers"]
    assert p["name"] == "outbox" and p["sticky"] is True and p["next"] is True
    assert p["sent"] == 1 and p["failed"] == 0 and p["cooldown_until"] is None
    plain = run([*base, "providers"])
    assert plain.out.splitlines()[0].split()[:4] == ["#", "name", "type", "mark"]
    assert "sticky,next" in plain.out


def test_status_exit_codes(tmp_path: Path, outbox: Path, dead_port: int) -> None:
    state = ["--state", str(tmp_path / "s.toml")]
    good = ["--provider", f"outbox://{outbox}"]
    bad = ["--provider", f"smtp://127.0.0.1:{dead_port}?security=none"]
    r = run([*state, *good, "status", "--json"])
    assert r.code == 0 and r.json()["healthy"] == 1
    r = run([*state, *good, *bad, "status", "--json", "--timeout", "2"])
    doc = r.json()
    assert r.code == 1 and doc["healthy"] == 1 and doc["total"] == 2
    assert doc["providers"][1]["healthy"] is False
    assert doc["providers"][1]["outcome"] == "transient"
    assert set(doc["providers"][0]) >= {
        "provider",
        "type",
        "healthy",
        "detail",
        "latency_ms",
        "last_success",
        "last_failure",
        "last_error",
    }
    r = run([*state, *bad, "status"])
    assert r.code == 69 and "FAILING" in r.out


def test_config_errors_name_file_provider_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[providers]]\nname = "relay"\ntype = "smtp"\nhost = "h"\nprot = 25\n')
    r = run(["--config", str(cfg), "providers"])
    assert r.code == 78
    assert f"{cfg}: provider 'relay': key 'prot': unknown key" in r.err
    cfg.write_text("[defaults\n")
    r = run(["--config", str(cfg), "providers"])
    assert r.code == 78 and "not valid TOML" in r.err
    r = run(["--config", str(tmp_path / "missing.toml"), "providers"])
    assert r.code == 78 and "not found" in r.err
    r = run(["--provider", "nope://x", "providers"])
    assert r.code == 78 and "unknown scheme" in r.err


def test_no_providers_is_a_config_error(tmp_path: Path) -> None:
    r = run(["send", "-r", "o@example.com", "--text", "x", "a@example.com"])
    assert r.code == 78 and "no providers configured" in r.err


def test_world_readable_config_with_a_literal_secret_warns(tmp_path: Path, outbox: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[[providers]]\ntype = "smtp"\nhost = "127.0.0.1"\nusername = "u"\npassword = "{SECRET}"\n'
    )
    os.chmod(cfg, 0o644)
    r = run(["--config", str(cfg), "providers"])
    assert "readable by others" in r.err and SECRET not in r.err + r.out
    os.chmod(cfg, 0o600)
    assert "readable by others" not in run(["--config", str(cfg), "providers"]).err


def test_secrets_never_appear_in_any_output(
    tmp_path: Path, dead_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_PASSWORD", SECRET)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[defaults]\nfrom = "o@example.com"\n\n'
        f'[[providers]]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {dead_port}\n'
        f'security = "none"\nusername = "u"\npassword = {{ env = "RELAY_PASSWORD" }}\n'
    )
    url = f"smtp://user:{SECRET}@127.0.0.1:{dead_port}?security=none"
    outputs = []
    for args in (
        ["--config", str(cfg), "send", "--text", "x", "a@example.com"],
        ["--config", str(cfg), "send", "--json", "--text", "x", "a@example.com"],
        ["--config", str(cfg), "send", "--dry-run", "-v", "--text", "x", "a@example.com"],
        ["--config", str(cfg), "send", "--dry-run", "--json", "--text", "x", "a@example.com"],
        ["--config", str(cfg), "providers", "--json"],
        ["--config", str(cfg), "status", "--json"],
        ["--provider", url, "providers"],
        ["--provider", url, "send", "-r", "o@example.com", "--text", "x", "a@example.com"],
        ["--provider", url.replace(":25", ":notaport"), "providers"],
    ):
        r = run(["--state", str(tmp_path / "s.toml"), *args])
        outputs.append(r.out + r.err)
    joined = "\n".join(outputs)
    assert SECRET not in joined
    assert SECRET not in (tmp_path / "s.toml").read_text()


def test_version_and_help() -> None:
    from mailrelay import __version__

    r = run(["--version"])
    assert r.code == 0 and r.out.strip() == f"mailrelay {__version__}"
    r = run(["--help"])
    assert r.code == 0 and "send" in r.out and "status" in r.out and "providers" in r.out


def test_policy_and_timeout_options(tmp_path: Path, dead_port: int) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    base = [
        "--state",
        str(tmp_path / "s.toml"),
        "--provider",
        f"outbox://{first}",
        "--provider",
        f"outbox://{second}",
    ]
    for _ in range(2):
        r = run(
            [
                *base,
                "send",
                "--policy",
                "round-robin",
                "-r",
                "o@example.com",
                "--text",
                "x",
                "a@example.com",
            ]
        )
        assert r.code == 0, r.err
    assert len(outbox_files(first)) == 1 and len(outbox_files(second)) == 1
    r = run([*base, "send", "--policy", "sideways", "-r", "o@example.com", "a@example.com"])
    assert r.code == 64 and "sideways" in r.err
    r = run([*base, "send", "--timeout", "0", "-r", "o@example.com", "a@example.com"])
    assert r.code == 64
    r = run(
        [
            "--state",
            str(tmp_path / "s.toml"),
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none",
            "send",
            "--json",
            "--timeout",
            "5",
            "-r",
            "o@example.com",
            "--text",
            "x",
            "a@example.com",
        ]
    )
    assert r.code == 75 and r.json()["attempts"][0]["outcome"] == "transient"

"""`send --batch`: JSON lines through one engine, several in flight, against real loopback
servers (an HTTP fake speaking Brevo's API, aiosmtpd), in-process and through the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.state import TomlStateStore
from tests.esp.fake_brevo import FakeBrevo
from tests.esp.fakebase import server_base_url
from tests.smtpserver import shared_server
from tests.test_cli import run
from tests.test_e2e import mailrelay

pytestmark = pytest.mark.timeout(60)


FAKE_TYPE = "brevo"  # the `fake` fixture (tests/conftest.py) serves FakeBrevo


@pytest.fixture
def esp(fake: FakeBrevo, httpserver: HTTPServer) -> str:
    return fake.url(server_base_url(httpserver))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.toml"


def line(i: int, **extra: Any) -> str:
    doc: dict[str, Any] = {
        "from": "Ops <ops@example.com>",
        "to": [f"user{i}@example.com"],
        "subject": f"welcome {i}",
        "text": f"hello user {i}\n",
    }
    doc.update(extra)
    return json.dumps(doc)


def write_batch(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


def cli(*args: str) -> list[str]:
    return list(args)


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in out.splitlines()]


def recipients(fake: FakeBrevo) -> list[str]:
    return sorted(fake.normalize(p)["to"][0] for p in fake.sent)


def test_fifty_lines_four_at_once(tmp_path: Path, state: Path, esp: str, fake: FakeBrevo) -> None:
    batch = write_batch(tmp_path / "welcome.jsonl", [line(i) for i in range(1, 51)])
    r = run(
        cli(
            "--state",
            str(state),
            "--provider",
            esp,
            "send",
            "--batch",
            str(batch),
            "--concurrency",
            "4",
            "--json",
        )
    )
    assert r.code == 0, r.err
    docs = json_lines(r.out)
    assert sorted(d["line"] for d in docs) == list(range(1, 51))
    assert all(d["delivered"] and d["provider"] == "brevo" and d["exit_code"] == 0 for d in docs)
    assert all(d["provider_message_id"] for d in docs)
    assert recipients(fake) == sorted(f"user{i}@example.com" for i in range(1, 51))
    entry = TomlStateStore(state).load().providers["brevo"]
    assert entry.sent == 50 and entry.failed == 0
    assert r.err == ""  # success is silent when stderr is not a terminal


def test_bad_lines_are_reported_by_number_and_the_rest_go(
    tmp_path: Path, state: Path, esp: str, fake: FakeBrevo
) -> None:
    lines = [line(i) for i in range(1, 13)]
    lines[3] = '{"from": "ops@example.com", "to": ["a@example.com"'  # line 4: cut short
    lines[6] = line(7, to=["x"])  # line 7: not an address
    lines[8] = line(9, attachments=[{"path": "missing.pdf"}])  # line 9: no such file
    lines.insert(10, "   ")  # a blank line (11) is skipped, not an error
    batch = write_batch(tmp_path / "welcome.jsonl", lines)
    args = ["--state", str(state), "--provider", esp, "send", "--batch", str(batch)]

    r = run(args)
    assert r.code == 65
    assert r.out == ""
    err = r.err.splitlines()
    assert any(e.startswith(f"mailrelay: error: {batch}:4: not valid JSON") for e in err)
    assert any(f"{batch}:7: to[0]: 'x' is not a valid address" in e for e in err)
    assert any(f"{batch}:9: attachments[0].path: missing.pdf: no such file" in e for e in err)
    assert err[-1] == f"mailrelay: error: batch: 9 sent, 0 queued, 0 failed, 3 bad lines ({batch})"
    assert len(err) == 4
    assert len(fake.sent) == 9
    assert TomlStateStore(state).load().providers["brevo"].sent == 9

    r = run([*args, "--json"])
    assert r.code == 65
    docs = {d["line"]: d for d in json_lines(r.out)}
    assert sorted(docs) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]
    assert docs[4]["exit_code"] == 65 and docs[4]["error"].startswith(f"{batch}:4: not valid")
    assert set(docs[7]) == {"line", "error", "exit_code"}
    assert docs[9]["exit_code"] == 66  # the line names a file that is not there
    assert docs[13]["delivered"] is True
    assert len(fake.sent) == 18


def test_failover_inside_a_batch_in_few_state_writes(
    tmp_path: Path,
    state: Path,
    esp: str,
    fake: FakeBrevo,
    dead_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[int] = []
    real_update = TomlStateStore.update

    def counting_update(self: TomlStateStore, change: Any) -> Any:
        writes.append(1)
        return real_update(self, change)

    monkeypatch.setattr(TomlStateStore, "update", counting_update)
    dead = f"smtp://127.0.0.1:{dead_port}?security=none&timeout=2&name=dead"
    batch = write_batch(tmp_path / "b.jsonl", [line(i) for i in range(1, 41)])
    r = run(
        cli(
            "--state",
            str(state),
            "--provider",
            dead,
            "--provider",
            esp,
            "send",
            "--batch",
            str(batch),
            "--concurrency",
            "4",
            "--json",
        )
    )
    assert r.code == 0, r.err
    docs = json_lines(r.out)
    assert len(docs) == 40 and all(d["provider"] == "brevo" for d in docs)
    assert len(fake.sent) == 40
    loaded = TomlStateStore(state).load()
    assert loaded.last_provider == "brevo"
    assert loaded.providers["brevo"].sent == 40
    failed_first = sum(1 for d in docs if d["attempts"][0]["provider"] == "dead")
    assert failed_first >= 1
    assert loaded.providers["dead"].failed == failed_first
    assert 1 <= len(writes) <= 2  # one fold at the end, not 40 writes


def test_every_provider_down_exits_75_with_a_line_per_message(
    tmp_path: Path, state: Path, dead_port: int
) -> None:
    dead = f"smtp://127.0.0.1:{dead_port}?security=none&timeout=2&name=dead"
    batch = write_batch(tmp_path / "b.jsonl", [line(i) for i in range(1, 4)])
    r = run(["--state", str(state), "--provider", dead, "send", "--batch", str(batch)])
    assert r.code == 75
    err = r.err.splitlines()
    for i in (1, 2, 3):
        assert any(
            e.startswith(f"mailrelay: error: {batch}:{i}: not sent: dead: transient:")
            and "connection refused" in e
            for e in err
        )
    assert err[-1].endswith("batch: 0 sent, 0 queued, 3 failed, 0 bad lines (" + f"{batch})")
    assert TomlStateStore(state).load().providers["dead"].failed == 3


def test_a_bad_line_outranks_a_temporary_failure(
    tmp_path: Path, state: Path, dead_port: int
) -> None:
    dead = f"smtp://127.0.0.1:{dead_port}?security=none&timeout=2&name=dead"
    batch = write_batch(tmp_path / "b.jsonl", [line(1), "[1, 2]"])
    r = run(["--state", str(state), "--provider", dead, "send", "--batch", str(batch)])
    assert r.code == 65
    assert f"{batch}:2: expected a JSON object, got a list" in r.err


def test_smtp_batch_reuses_connections(tmp_path: Path, state: Path) -> None:
    batch = write_batch(tmp_path / "b.jsonl", [line(i) for i in range(1, 21)])
    with shared_server() as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=5&name=relay"
        r = run(
            cli(
                "--state",
                str(state),
                "--provider",
                url,
                "send",
                "--batch",
                str(batch),
                "--concurrency",
                "4",
            )
        )
        assert r.code == 0, r.err
        assert len(server.messages) == 20
        assert 1 <= server.connections <= 4
        assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
            f"user{i}@example.com" for i in range(1, 21)
        )
    assert TomlStateStore(state).load().providers["relay"].sent == 20


def test_empty_file_sends_nothing_and_succeeds(tmp_path: Path, state: Path, esp: str) -> None:
    for content in ("", "\n\n  \n"):
        batch = tmp_path / "empty.jsonl"
        batch.write_text(content)
        r = run(["--state", str(state), "--provider", esp, "send", "--batch", str(batch)])
        assert (r.code, r.out, r.err) == (0, "", "")
    assert not state.exists()  # nothing happened, nothing written


def test_missing_file_exits_66(tmp_path: Path, state: Path, esp: str) -> None:
    r = run(["--state", str(state), "--provider", esp, "send", "--batch", "nope.jsonl"])
    assert r.code == 66
    assert r.err == "mailrelay: error: --batch nope.jsonl: no such file\n"
    r = run(["--state", str(state), "--provider", esp, "send", "--batch", str(tmp_path)])
    assert r.code == 66 and "is a directory" in r.err


def test_batch_options_that_do_not_go_together(tmp_path: Path, esp: str) -> None:
    batch = write_batch(tmp_path / "b.jsonl", [line(1)])
    r = run(["--provider", esp, "send", "--batch", str(batch), "-s", "x"])
    assert r.code == 64
    r = run(["--provider", esp, "send", "--concurrency", "4", "--text", "x", "a@example.com"])
    assert r.code == 64
    r = run(["--provider", esp, "send", "--batch", str(batch), "--concurrency", "0"])
    assert r.code == 64


def test_default_sender_and_relative_attachments(
    tmp_path: Path, state: Path, esp: str, fake: FakeBrevo
) -> None:
    folder = tmp_path / "letters"
    folder.mkdir()
    (folder / "terms.txt").write_text("the terms\n")
    doc = {"to": ["ann@example.com"], "subject": "terms", "text": "attached"}
    doc["attachments"] = [{"path": "terms.txt"}]
    batch = write_batch(folder / "b.jsonl", [json.dumps(doc)])
    r = run(
        cli(
            "--state",
            str(state),
            "--provider",
            esp,
            "send",
            "--batch",
            str(batch),
            "--from",
            "Legal <legal@example.com>",
        )
    )
    assert r.code == 0, r.err
    (sent,) = [fake.normalize(p) for p in fake.sent]
    assert sent["from"] == "Legal <legal@example.com>"
    assert sent["attachments"] == [("terms.txt", "text/plain", b"the terms\n")]


def test_standard_input_through_the_installed_command(tmp_path: Path, state: Path) -> None:
    text = "".join(f"{line(i)}\n" for i in range(1, 6)) + "not json\n"
    with shared_server() as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=5&name=relay"
        r = mailrelay(
            "--state", str(state), "--provider", url, "send", "--batch", "-", "--json", input=text
        )
        assert r.returncode == 65, r.stderr
        docs = {d["line"]: d for d in json_lines(r.stdout)}
        assert sorted(docs) == [1, 2, 3, 4, 5, 6]
        assert docs[6]["error"].startswith("standard input:6: not valid JSON")
        assert len(server.messages) == 5
        assert "batch: 5 sent, 0 queued, 0 failed, 1 bad line (standard input)" in r.stderr
    assert TomlStateStore(state).load().providers["relay"].sent == 5

"""The sendmail drop-in end to end: the installed `mailrelay sendmail` and `mailrelay-sendmail`
commands in subprocesses, configured only through the environment as under cron, into a real
aiosmtpd server and an HTTP fake; and `send --eml` the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from pytest_httpserver import HTTPServer

from mailrelay.cli import cli, main
from tests.esp.fakebase import server_base_url
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, mailrelay_command, smtp_url

CRON_ARGV = ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]
CRON_BODY = "backup done: 3 fichiers copiés ✓\n.\n..two dots\nend\n"
CRON_MAIL = (
    "From: root (Cron Daemon)\n"
    "To: ops@example.com\n"
    "Subject: Cron <root@web1> /usr/local/bin/backup.sh\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "X-Cron-Env: <LOGNAME=root>\n"
    "\n" + CRON_BODY
).encode()


def sendmail_command(how: str) -> list[str]:
    if how == "mailrelay-sendmail":
        beside = Path(sys.executable).parent / "mailrelay-sendmail"
        assert beside.exists(), "mailrelay-sendmail is not installed (pip install -e .)"
        return [str(beside)]
    return [mailrelay_command(), "sendmail"]


def run(
    command: list[str], data: bytes, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, input=data, capture_output=True, timeout=timeout, env={**os.environ, **env}
    )


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with shared_server() as s:
        yield s


@pytest.fixture
def cron_env(tmp_path: Path, server: SmtpServer) -> dict[str, str]:
    """What cron can give: environment variables only."""
    config = tmp_path / "config.toml"
    config.write_text('[defaults]\nfrom = "Ops Cron <cron@example.com>"\n')
    return {
        "MAILRELAY_CONFIG": str(config),
        "MAILRELAY_PROVIDERS": smtp_url(server, "relay"),
        "MAILRELAY_STATE": str(tmp_path / "state.toml"),
    }


def body_of(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").partition(b"\n\n")[2]


def headers_of(data: bytes) -> list[bytes]:
    return data.replace(b"\r\n", b"\n").partition(b"\n\n")[0].split(b"\n")


@pytest.mark.parametrize("how", ["mailrelay sendmail", "mailrelay-sendmail"])
def test_crons_exact_call_into_smtp(how: str, server: SmtpServer, cron_env: dict[str, str]) -> None:
    r = run([*sendmail_command(how), *CRON_ARGV], CRON_MAIL, cron_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr == b""  # cron would mail any output
    (got,) = server.messages
    assert got.mail_from == "cron@example.com"
    assert got.rcpt_tos == ["ops@example.com"]
    # -i: the lone dot is body, not the end; 8-bit bytes arrive unchanged
    assert body_of(got.data) == CRON_BODY.encode()
    heads = headers_of(got.data)
    assert heads[0] == b"From: CronDaemon <cron@example.com>"
    assert heads[1:9] == CRON_MAIL.split(b"\n\n")[0].split(b"\n")[1:]
    assert any(h.startswith(b"Date: ") for h in heads)
    assert any(h.startswith(b"Message-ID: <") for h in heads)
    assert "BODY=8BITMIME" in server.mail_options[0]


def test_crons_exact_call_into_an_http_provider(tmp_path: Path) -> None:
    from tests.esp.fake_postmark import FakePostmark

    with HTTPServer(host="127.0.0.1", port=0) as http:
        postmark = FakePostmark()
        postmark.install(http)
        env = {
            "MAILRELAY_PROVIDERS": postmark.url(server_base_url(http)),
            "MAILRELAY_STATE": str(tmp_path / "state.toml"),
            "MAILRELAY_CONFIG": str(tmp_path / "config.toml"),
        }
        (tmp_path / "config.toml").write_text('[defaults]\nfrom = "cron@example.com"\n')
        r = run(sendmail_command("mailrelay-sendmail") + CRON_ARGV, CRON_MAIL, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr == b""
    (payload,) = postmark.sent
    got = postmark.normalize(payload)
    assert got["from"] == "CronDaemon <cron@example.com>"
    assert got["to"] == ["ops@example.com"]
    assert got["subject"] == "Cron <root@web1> /usr/local/bin/backup.sh"
    assert got["text"] == CRON_BODY
    assert got["headers"]["X-Cron-Env"] == "<SHELL=/bin/sh>, <HOME=/root>, <LOGNAME=root>"
    assert FakePostmark.TOKEN.encode() not in r.stderr


def test_bcc_is_stripped_but_delivered(server: SmtpServer, cron_env: dict[str, str]) -> None:
    mail = b"From: a@example.com\nTo: b@example.com\nBcc: Hidden <hidden@example.com>\n\nx\n"
    r = run([*sendmail_command("mailrelay sendmail"), "-t"], mail, cron_env)
    assert r.returncode == 0, r.stderr
    (got,) = server.messages
    assert got.rcpt_tos == ["b@example.com", "hidden@example.com"]
    assert b"Bcc" not in got.data and b"hidden@example.com" not in got.data


def test_sender_flags(server: SmtpServer, cron_env: dict[str, str]) -> None:
    mail = b"To: b@example.com\nSubject: s\n\nx\n"
    cmd = sendmail_command("mailrelay-sendmail")
    assert run([*cmd, "-t", "-f", "bounce@example.com"], mail, cron_env).returncode == 0
    assert run([*cmd, "-t", "-rme@example.com", "-F", "Me Too"], mail, cron_env).returncode == 0
    assert run([*cmd, "-FBackup Job", "b@example.com"], mail, cron_env).returncode == 0
    first, second, third = server.messages
    assert first.mail_from == "bounce@example.com"
    assert headers_of(first.data)[0] == b"From: bounce@example.com"
    assert second.mail_from == "me@example.com"
    assert headers_of(second.data)[0] == b"From: Me Too <me@example.com>"
    assert third.mail_from == "cron@example.com" and third.rcpt_tos == ["b@example.com"]
    assert headers_of(third.data)[0] == b"From: Backup Job <cron@example.com>"
    # -f with a From that is fine: the From stays, -f is the envelope sender
    mail = b"From: app@example.com\nTo: b@example.com\n\nx\n"
    assert run([*cmd, "-t", "-f", "bounces@example.com"], mail, cron_env).returncode == 0
    assert server.messages[3].mail_from == "bounces@example.com"
    assert headers_of(server.messages[3].data)[0] == b"From: app@example.com"


def test_double_dash_and_ignored_flags(server: SmtpServer, cron_env: dict[str, str]) -> None:
    mail = b"From: a@example.com\nTo: b@example.com\n\nx\n"
    argv = ["-B8BITMIME", "-odb", "-oep", "-bm", "-em", "-Nnever", "-R", "hdrs", "--"]
    r = run([*sendmail_command("mailrelay sendmail"), *argv, "c@example.com"], mail, cron_env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert server.messages[0].rcpt_tos == ["c@example.com"]  # no -t: To is not read


def test_unknown_flag_warns_and_the_mail_still_goes(
    server: SmtpServer, cron_env: dict[str, str]
) -> None:
    mail = b"From: a@example.com\nTo: b@example.com\n\nx\n"
    r = run([*sendmail_command("mailrelay-sendmail"), "-t", "-Y", "--frobnicate"], mail, cron_env)
    assert r.returncode == 0, r.stderr
    assert b"warning: ignoring unknown option -Y" in r.stderr
    assert b"warning: ignoring unknown option --frobnicate" in r.stderr
    assert len(server.messages) == 1


@pytest.mark.parametrize("flag", [[], ["-i"], ["-oi"]])
def test_lone_dot_ends_the_message_without_i(
    flag: list[str], server: SmtpServer, cron_env: dict[str, str]
) -> None:
    mail = b"From: a@example.com\nTo: b@example.com\n\nbefore\n.\nafter\n"
    r = run([*sendmail_command("mailrelay sendmail"), "-t", *flag], mail, cron_env)
    assert r.returncode == 0, r.stderr
    body = body_of(server.messages[0].data)
    assert body == (b"before\n.\nafter\n" if flag else b"before\n")


def test_non_ascii_subject_both_forms(server: SmtpServer, cron_env: dict[str, str]) -> None:
    raw8 = "From: a@example.com\nTo: b@example.com\nSubject: Café ☃\n\nx\n".encode()
    encoded = b"From: a@example.com\nTo: b@example.com\nSubject: =?utf-8?q?Caf=C3=A9?=\n\nx\n"
    for mail in (raw8, encoded):
        r = run([*sendmail_command("mailrelay sendmail"), "-t"], mail, cron_env)
        assert r.returncode == 0, r.stderr
    assert "Subject: Café ☃".encode() in server.messages[0].data
    assert b"Subject: =?utf-8?q?Caf=C3=A9?=" in server.messages[1].data


def test_errors_are_one_line_with_sysexits(server: SmtpServer, cron_env: dict[str, str]) -> None:
    cmd = sendmail_command("mailrelay-sendmail")
    r = run(cmd, b"From: a@example.com\nTo: b@example.com\n\nx\n", cron_env)  # no -t, no args
    assert r.returncode == 65
    assert r.stderr.decode().count("\n") == 1 and "no recipients" in r.stderr.decode()
    r = run([*cmd, "-bs"], b"", cron_env)
    assert r.returncode == 64 and b"-bs is not supported" in r.stderr
    r = run([*cmd, "-t", "-f"], b"", cron_env)
    assert r.returncode == 64 and b"-f needs a value" in r.stderr
    r = run([*cmd, "-t"], b"To: root\n\nx\n", cron_env)  # a local name: held for an alias
    assert r.returncode == 78 and b"no alias" in r.stderr and b"MAILTO" in r.stderr
    r = run([*cmd, "-t"], b"", cron_env)
    assert r.returncode == 65 and b"empty input" in r.stderr
    assert server.messages == []


def test_huge_message_is_refused(tmp_path: Path, server: SmtpServer) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[defaults]\nfrom = "cron@example.com"\nmax_size = 1000\n')
    env = {"MAILRELAY_CONFIG": str(config), "MAILRELAY_PROVIDERS": smtp_url(server, "relay")}
    big = b"To: b@example.com\n\n" + b"x" * 70 + b"\n"
    r = run([*sendmail_command("mailrelay sendmail"), "-t"], big * 40, env)
    assert r.returncode == 65 and b"message too large" in r.stderr
    r = run([*sendmail_command("mailrelay sendmail"), "-t"], big * 4000, env)
    assert r.returncode == 65 and b"message too large" in r.stderr
    assert server.messages == []


def test_global_options_before_the_command_word(tmp_path: Path, server: SmtpServer) -> None:
    mail = b"To: b@example.com\n\nx\n"
    r = run(
        [
            mailrelay_command(),
            "--provider",
            smtp_url(server, "relay"),
            "--state",
            str(tmp_path / "s.toml"),
            "sendmail",
            "-t",
            "-f",
            "me@example.com",
        ],
        mail,
        {},
    )
    assert r.returncode == 0, r.stderr
    assert server.messages[0].mail_from == "me@example.com"


def test_verbose_flag_reports_the_provider(server: SmtpServer, cron_env: dict[str, str]) -> None:
    r = run(
        [*sendmail_command("mailrelay sendmail"), "-v", "-t"], b"To: b@example.com\n\nx\n", cron_env
    )
    assert r.returncode == 0, r.stderr
    assert b"sent via relay (smtp)" in r.stderr


def test_help(cron_env: dict[str, str]) -> None:
    r = run([*sendmail_command("mailrelay-sendmail"), "--help"], b"", cron_env)
    assert r.returncode == 0 and b"-FCronDaemon" not in r.stdout
    assert b"Usage: mailrelay sendmail" in r.stdout and b"-oi" in r.stdout


def test_bp_and_q_run_the_queue_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """-bp / -q call `mailrelay queue list` / `queue flush` (another module's commands;
    a stand-in group here), and refuse with 64 when there is no such command."""
    calls: list[str] = []

    @click.group("queue")
    def queue() -> None:
        """Stand-in."""

    @queue.command("list")
    def list_() -> None:
        """Stand-in."""
        calls.append("list")

    @queue.command("flush")
    def flush() -> None:
        """Stand-in."""
        calls.append("flush")

    def exit_code(*argv: str) -> object:
        with pytest.raises(SystemExit) as info:
            main(list(argv))
        return info.value.code

    had = cli.commands.get("queue")
    had_lazy = cli.lazy_commands.pop("queue", None)  # type: ignore[attr-defined]
    try:
        cli.commands.pop("queue", None)
        assert exit_code("sendmail", "-bp") == 64
        assert "needs 'mailrelay queue list'" in capsys.readouterr().err
        cli.add_command(queue)
        assert exit_code("sendmail", "-bp") == 0
        assert exit_code("sendmail", "-q") == 0
    finally:
        cli.commands.pop("queue", None)
        if had is not None:
            cli.add_command(had)
        if had_lazy is not None:
            cli.lazy_commands["queue"] = had_lazy  # type: ignore[attr-defined]
    assert calls == ["list", "flush"]


# --- send --eml ---------------------------------------------------------------------------


def test_send_eml_from_a_file_and_from_stdin(
    tmp_path: Path, server: SmtpServer, cron_env: dict[str, str]
) -> None:
    eml = tmp_path / "saved.eml"
    eml.write_bytes(CRON_MAIL)
    r = mailrelay("send", "--eml", str(eml), env=cron_env, input=None)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    r = subprocess.run(
        [mailrelay_command(), "send", "--eml", "-", "extra@example.com"],
        input=CRON_MAIL,
        capture_output=True,
        timeout=60,
        env={**os.environ, **cron_env},
    )
    assert r.returncode == 0, r.stderr
    first, second = server.messages
    assert first.rcpt_tos == ["ops@example.com"]
    assert second.rcpt_tos == ["ops@example.com", "extra@example.com"]
    assert body_of(first.data) == body_of(second.data) == CRON_BODY.encode()


def test_send_eml_r_sets_mail_from(
    tmp_path: Path, server: SmtpServer, cron_env: dict[str, str]
) -> None:
    eml = tmp_path / "saved.eml"
    eml.write_bytes(b"From: app@example.com\nTo: b@example.com\nSubject: s\n\nx\n")
    r = mailrelay("send", "--eml", str(eml), "-r", "bounces@example.com", env=cron_env)
    assert r.returncode == 0, r.stderr
    (got,) = server.messages
    assert got.mail_from == "bounces@example.com"
    assert headers_of(got.data)[0] == b"From: app@example.com"


def test_send_eml_errors(tmp_path: Path, server: SmtpServer, cron_env: dict[str, str]) -> None:
    r = mailrelay("send", "--eml", str(tmp_path / "missing.eml"), env=cron_env)
    assert r.returncode == 66
    assert r.stderr.strip() == f"mailrelay: error: --eml {tmp_path / 'missing.eml'}: no such file"
    eml = tmp_path / "saved.eml"
    eml.write_bytes(CRON_MAIL)
    r = mailrelay("send", "--eml", str(eml), "--subject", "x", env=cron_env)
    assert r.returncode == 64 and "--subject cannot be added" in r.stderr
    assert server.messages == []

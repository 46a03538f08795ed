"""Mail from cron and other sendmail callers, through the installed `mailrelay` and
`mailrelay-sendmail` against a real SMTP server on loopback: non-ASCII display names on a
relay without SMTPUTF8, bare local names and their aliases, where the config is looked for
in cron's environment, held messages, and what only a config change can mend."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from email import message_from_bytes
from email.header import decode_header, make_header
from email.utils import getaddresses
from pathlib import Path

import pytest

from tests.smtpserver import ReceivedMessage, SmtpServer, shared_server
from tests.test_e2e import mailrelay

# What Debian's cron runs when a crontab has no MAILTO (cron's do_command.c): no -t, the
# recipient is the crontab's owner, a bare local name.
DEBIAN_CRON_ARGV = ("-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root")
CRON_MAIL = (
    "From: root (Cron Daemon)\n"
    "To: root\n"
    "Subject: Cron <root@web1> /usr/local/bin/backup\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "\n"
    "backup failed\n"
)


def sendmail_command() -> str:
    beside = Path(sys.executable).parent / "mailrelay-sendmail"
    assert beside.exists(), "mailrelay-sendmail is not installed (pip install -e '.[test]')"
    return str(beside)


def cron_env(home: Path, system_config: Path, **extra: str) -> dict[str, str]:
    """The environment Debian's cron gives its mailer: no crontab variables, no
    /etc/environment; MAILRELAY_SYSTEM_CONFIG stands in for /etc/mailrelay/config.toml."""
    return {
        "HOME": str(home),
        "LOGNAME": "root",
        "PATH": "/usr/bin:/bin",
        "SHELL": "/bin/sh",
        "MAILRELAY_SYSTEM_CONFIG": str(system_config),
        **extra,
    }


def run_sendmail(
    argv: tuple[str, ...], env: dict[str, str], data: str = CRON_MAIL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sendmail_command(), *argv],
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",
    )


def run_mailrelay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "mailrelay"), *args],
        input=None,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",
    )


def flush_delivers_one(env: dict[str, str], server: SmtpServer) -> ReceivedMessage:
    """`mailrelay queue flush` succeeds and `server` received exactly one message: that one."""
    flushed = run_mailrelay(env, "queue", "flush")
    assert flushed.returncode == 0, flushed.stderr
    (got,) = server.messages
    return got


def queued_count(env: dict[str, str]) -> int:
    """How many messages `mailrelay queue list --json` counts."""
    return int(json.loads(run_mailrelay(env, "queue", "list", "--json").stdout)["count"])


def relay_config(
    path: Path, port: int, *, aliases: str = "", security: str = "none", extra: str = ""
) -> Path:
    """One SMTP relay on loopback, the spool beside the config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[defaults]\n"
        'from = "cron@example.com"\n'
        f'spool_dir = "{path.parent / "spool"}"\n'
        f"{extra}\n"
        "[[providers]]\n"
        'name = "relay"\n'
        'type = "smtp"\n'
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'security = "{security}"\n'
        "timeout = 5\n" + (f"\n[aliases]\n{aliases}\n" if aliases else "")
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def root_home(tmp_path: Path) -> Path:
    home = tmp_path / "root"
    home.mkdir()
    return home


def user_config(home: Path) -> Path:
    """Where platformdirs looks in cron's environment (no XDG_CONFIG_HOME): ~/.config."""
    return home / ".config" / "mailrelay" / "config.toml"


def decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


# --- item 2: display names need no SMTPUTF8 --------------------------------------------------


def test_send_with_non_ascii_names_through_a_relay_without_smtputf8(tmp_path: Path) -> None:
    with SmtpServer(smtputf8=False) as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=5"
        r = mailrelay(
            "--provider",
            url,
            "send",
            "-r",
            "Zoë <zoe@example.com>",
            "--to",
            "Jürgen <j@example.com>",
            "-s",
            "grüße",
            "--text",
            "hallo",
            input=None,
        )
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert got.mail_from == "zoe@example.com" and got.rcpt_tos == ["j@example.com"]
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # encoded words, not 8-bit headers
    parsed = message_from_bytes(got.data)
    assert "=?" in parsed["From"] and "=?" in parsed["To"]
    assert getaddresses([decoded(parsed["From"])]) == [("Zoë", "zoe@example.com")]
    assert getaddresses([decoded(parsed["To"])]) == [("Jürgen", "j@example.com")]


@pytest.mark.parametrize("encoded", [True, False], ids=["rfc2047", "utf8-header"])
def test_sendmail_mode_sends_a_patch_with_non_ascii_names_without_smtputf8(
    tmp_path: Path, encoded: bool
) -> None:
    """As `git send-email --smtp-server=.../mailrelay-sendmail` hands over a patch: the
    names RFC 2047-encoded (as git writes them), or UTF-8 in the header (RFC 6532), which
    is re-encoded for a server that does not offer SMTPUTF8."""
    zoe = "=?UTF-8?q?Zo=C3=AB?=" if encoded else "Zoë"
    juergen = "=?UTF-8?q?J=C3=BCrgen?=" if encoded else "Jürgen"
    patch = (
        f"From: {zoe} <zoe@example.com>\n"
        f"To: {juergen} <j@example.com>\n"
        "Subject: [PATCH] fix the frobnicator\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\n"
        "Message-ID: <20261204.1@example.com>\n"
        "\n"
        "---\n"
        " a | 1 +\n"
    )
    with SmtpServer(smtputf8=False) as server:
        cfg = relay_config(tmp_path / "cfg" / "config.toml", server.port)
        r = mailrelay(
            "--config", str(cfg), "sendmail", "-i", "-f", "zoe@example.com", "j@example.com",
            input=patch,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert not (tmp_path / "cfg" / "spool").exists() or not list(
        (tmp_path / "cfg" / "spool").glob("*.json")
    )
    assert got.data.split(b"\r\n\r\n", 1)[0].isascii()
    parsed = message_from_bytes(got.data)
    assert getaddresses([decoded(parsed["From"])]) == [("Zoë", "zoe@example.com")]
    assert getaddresses([decoded(parsed["To"])]) == [("Jürgen", "j@example.com")]


def test_a_non_ascii_address_still_needs_smtputf8(tmp_path: Path) -> None:
    with SmtpServer(smtputf8=False) as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=5"
        r = mailrelay(
            "--provider", url, "send", "-r", "zoe@example.com", "--to", "jürgen@example.com",
            "-s", "x", "--text", "y", input=None,
        )  # fmt: skip
        assert r.returncode == 69, r.stderr
        assert "SMTPUTF8" in r.stderr
        assert server.messages == []


# --- item 3: bare local names and their aliases ------------------------------------------


def test_debian_cron_mail_to_root_goes_to_the_alias(tmp_path: Path, root_home: Path) -> None:
    with SmtpServer(smtputf8=False) as server:
        relay_config(user_config(root_home), server.port, aliases='root = "ops@example.com"')
        env = cron_env(root_home, tmp_path / "etc" / "config.toml")
        r = run_sendmail(DEBIAN_CRON_ARGV, env)
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert got.rcpt_tos == ["ops@example.com"]
    parsed = message_from_bytes(got.data)
    assert parsed["To"] == "ops@example.com"  # "To: root" shows where it went
    assert parsed["From"] == "CronDaemon <cron@example.com>"
    assert b"backup failed" in got.data


def test_aliases_take_a_list_and_a_catch_all(tmp_path: Path, root_home: Path) -> None:
    aliases = (
        'root = ["ops@example.com", "Backup Desk <desk@example.com>"]\n"*" = "admin@example.com"'
    )
    mail = CRON_MAIL.replace("To: root\n", "To: root, www-data\nCc: ceo@example.com\n")
    with shared_server() as server:
        relay_config(user_config(root_home), server.port, aliases=aliases)
        env = cron_env(root_home, tmp_path / "etc" / "config.toml")
        r = run_sendmail(("-FCronDaemon", "-i", "-t"), env, data=mail)
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert sorted(got.rcpt_tos) == [
        "admin@example.com",
        "ceo@example.com",
        "desk@example.com",
        "ops@example.com",
    ]
    parsed = message_from_bytes(got.data)
    assert [a for _, a in getaddresses([parsed["To"]])] == [
        "ops@example.com",
        "desk@example.com",
        "admin@example.com",
    ]
    assert parsed["Cc"] == "ceo@example.com"


def test_aliases_file_in_etc_aliases_form(tmp_path: Path, root_home: Path) -> None:
    aliases_file = tmp_path / "aliases"
    aliases_file.write_text(
        "# /etc/aliases\n"
        "mailer-daemon: postmaster\n"
        "postmaster: root\n"
        "root: ops@example.com,\n"
        '\toncall@example.com, "|/usr/bin/ticket"\n'
        "logs: /var/log/mail.copy, :include:/etc/mail/logs.list\n"
        "\n"
    )
    with shared_server() as server:
        relay_config(user_config(root_home), server.port, extra=f'aliases_file = "{aliases_file}"')
        env = cron_env(root_home, tmp_path / "etc" / "config.toml")
        argv = ("-FCronDaemon", "-i", "mailer-daemon")
        r = run_sendmail(argv, env, data=CRON_MAIL.replace("To: root", "To: mailer-daemon"))
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert sorted(got.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    assert "/usr/bin/ticket" in r.stderr and "left out" in r.stderr  # the pipe, with a warning


def test_a_local_name_without_an_alias_is_held_until_the_config_gives_one(
    tmp_path: Path, root_home: Path
) -> None:
    cfg = user_config(root_home)
    env = cron_env(root_home, tmp_path / "etc" / "config.toml")
    with shared_server() as server:
        relay_config(cfg, server.port)
        r = run_sendmail(DEBIAN_CRON_ARGV, env)
        assert r.returncode == 78, r.stderr
        assert "'root' is a local name with no alias" in r.stderr
        assert server.messages == []
        listed = run_mailrelay(env, "queue", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (held,) = json.loads(listed.stdout)["messages"]
        assert held["held"] is True and "[aliases]" in held["reason"]
        relay_config(cfg, server.port, aliases='root = "ops@example.com"')
        got = flush_delivers_one(env, server)
    assert got.rcpt_tos == ["ops@example.com"]
    assert queued_count(env) == 0


def test_config_aliases_come_before_the_file_and_a_loop_is_held(
    tmp_path: Path, root_home: Path
) -> None:
    aliases_file = tmp_path / "aliases"
    aliases_file.write_text("root: file@example.com\nloop1: loop2\nloop2: loop1\n")
    with shared_server() as server:
        relay_config(
            user_config(root_home),
            server.port,
            aliases='root = "config@example.com"',
            extra=f'aliases_file = "{aliases_file}"',
        )
        env = cron_env(root_home, tmp_path / "etc" / "config.toml")
        r = run_sendmail(DEBIAN_CRON_ARGV, env)
        assert r.returncode == 0, r.stderr
        r = run_sendmail(("-i", "loop1"), env, data=CRON_MAIL.replace("To: root", "To: loop1"))
        assert r.returncode == 78 and "'loop1' is a local name with no alias" in r.stderr
        (got,) = server.messages
    assert got.rcpt_tos == ["config@example.com"]


def test_config_check_reads_the_aliases_file(tmp_path: Path) -> None:
    cfg = relay_config(
        tmp_path / "config.toml", 25, extra=f'aliases_file = "{tmp_path / "missing"}"'
    )
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 78
    assert f"{tmp_path / 'missing'}: aliases file not found" in r.stderr


def test_a_bad_aliases_table_is_a_config_error(tmp_path: Path) -> None:
    cfg = relay_config(tmp_path / "config.toml", 25, aliases='"root@x" = "ops@example.com"')
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 78
    assert "aliases.root@x" in r.stderr and "local name" in r.stderr


# --- item 4: where cron's mail finds its config ------------------------------------------


def test_cron_mail_reads_the_system_config_when_root_has_none(
    tmp_path: Path, root_home: Path
) -> None:
    system = tmp_path / "etc" / "mailrelay" / "config.toml"
    with shared_server() as server:
        relay_config(system, server.port, aliases='root = "ops@example.com"')
        r = run_sendmail(DEBIAN_CRON_ARGV, cron_env(root_home, system))
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert got.rcpt_tos == ["ops@example.com"]


def test_the_user_config_comes_before_the_system_one(tmp_path: Path, root_home: Path) -> None:
    system = tmp_path / "etc" / "mailrelay" / "config.toml"
    relay_config(system, 9, aliases='root = "wrong@example.com"')  # would fail: port 9
    with shared_server() as server:
        relay_config(user_config(root_home), server.port, aliases='root = "ops@example.com"')
        r = run_sendmail(DEBIAN_CRON_ARGV, cron_env(root_home, system))
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert got.rcpt_tos == ["ops@example.com"]


def test_xdg_config_dirs_is_searched_like_site_config_dir(tmp_path: Path, root_home: Path) -> None:
    site = tmp_path / "xdg"
    with shared_server() as server:
        relay_config(
            site / "mailrelay" / "config.toml", server.port, aliases='"*" = "o@example.com"'
        )
        env = cron_env(root_home, Path("unused"), XDG_CONFIG_DIRS=f"{tmp_path / 'none'}:{site}")
        del env["MAILRELAY_SYSTEM_CONFIG"]  # the search list itself, XDG dirs first
        r = run_sendmail(DEBIAN_CRON_ARGV, env)
        assert r.returncode == 0, r.stderr
        (got,) = server.messages
    assert got.rcpt_tos == ["o@example.com"]


def cron_mail_without_config(
    tmp_path: Path, root_home: Path
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess[str]]:
    """cron's mail where no config file exists: (the system config's path, the environment,
    the sendmail run, which held the message and exited 78)."""
    system = tmp_path / "etc" / "mailrelay" / "config.toml"
    env = cron_env(root_home, system)
    r = run_sendmail(DEBIAN_CRON_ARGV, env)
    assert r.returncode == 78, r.stderr
    return system, env, r


def test_without_any_config_the_reason_says_no_config_file_first(
    tmp_path: Path, root_home: Path
) -> None:
    system, env, r = cron_mail_without_config(tmp_path, root_home)
    reason = r.stderr.strip()
    assert reason.startswith(
        f"mailrelay: error: no config file (looked for {user_config(root_home)}"
    )
    assert str(system) in reason
    assert reason.index("no config file") < reason.index("no usable From")
    shown = run_mailrelay(env, "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)["files"]
    assert str(user_config(root_home)) in files["config"] and str(system) in files["config"]


# --- item 5: held messages ---------------------------------------------------------------


def held_files(home: Path) -> list[Path]:
    return sorted((home / ".local" / "share" / "mailrelay" / "spool" / "held").glob("*.json"))


def test_queue_show_of_a_held_message_and_its_date_is_when_it_was_written(
    tmp_path: Path, root_home: Path
) -> None:
    system, env, _ = cron_mail_without_config(tmp_path, root_home)
    (path,) = held_files(root_home)
    ident = path.stem
    shown = run_mailrelay(env, "queue", "show", ident)
    assert shown.returncode == 0, shown.stderr
    assert f"id:          {ident}" in shown.stdout
    assert "held: no config file" in shown.stdout
    assert "Cron <root@web1>" in shown.stdout
    doc = json.loads(run_mailrelay(env, "queue", "show", ident[:8], "--json").stdout)
    assert doc["held"] is True and doc["id"] == ident
    raw = base64.b64decode(json.loads(path.read_text())["raw"])
    written = message_from_bytes(raw)["Date"]
    assert written is not None  # cron writes none: added when it was handed over
    with shared_server() as server:
        relay_config(system, server.port, aliases='root = "ops@example.com"')
        got = flush_delivers_one(env, server)
    assert message_from_bytes(got.data)["Date"] == written


# --- item 6: what only a config change can mend is held, not retried for days -------------


def test_a_relay_without_starttls_holds_the_message_until_the_config_is_fixed(
    tmp_path: Path, root_home: Path
) -> None:
    cfg = user_config(root_home)
    env = cron_env(root_home, tmp_path / "etc" / "config.toml")
    aliases = 'root = "ops@example.com"'
    with SmtpServer(tls="none") as server:
        relay_config(cfg, server.port, aliases=aliases, security="starttls")  # the default
        r = run_sendmail(DEBIAN_CRON_ARGV, env)
        assert r.returncode == 78, r.stderr
        assert "STARTTLS" in r.stderr and "is held as" in r.stderr
        assert list((cfg.parent / "spool").glob("*.json")) == []  # not queued for 5 days
        listed = json.loads(run_mailrelay(env, "queue", "list", "--json").stdout)
        (held,) = listed["messages"]
        assert held["held"] is True
        assert "relay (provider)" in held["reason"] and "STARTTLS" in held["reason"]
        status = run_mailrelay(env, "status")
        assert status.returncode == 69
        assert "STARTTLS" in status.stdout and "1 message(s) held" in status.stderr
        again = run_mailrelay(env, "queue", "flush")  # nothing changed: still held
        assert again.returncode == 78, again.stderr
        assert "still held" in again.stderr
        relay_config(cfg, server.port, aliases=aliases, security="none")
        got = flush_delivers_one(env, server)
    assert got.rcpt_tos == ["ops@example.com"]
    assert queued_count(env) == 0


def test_an_outage_is_still_queued_not_held(
    tmp_path: Path, root_home: Path, dead_port: int
) -> None:
    cfg = user_config(root_home)
    relay_config(cfg, dead_port, aliases='root = "ops@example.com"')
    env = cron_env(root_home, tmp_path / "etc" / "config.toml")
    r = run_sendmail(DEBIAN_CRON_ARGV, env)
    assert r.returncode == 0, r.stderr
    assert len(list((cfg.parent / "spool").glob("*.json"))) == 1
    assert held_files(root_home) == []

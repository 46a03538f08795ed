"""Options where people type them: every global option after the command word too, help with
no arguments, `sendmail -h`, "did you mean", and trying one provider with --via / status NAME.
All through the installed command."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, smtp_url, write_config

GLOBAL = ("--config", "--state", "--provider", "--log-file", "--verbose", "--quiet", "--debug")


def _commands() -> list[tuple[str, ...]]:
    from mailrelay.cli import cli

    ctx = click.Context(cli)
    found: list[tuple[str, ...]] = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if name == "sendmail":  # sendmail's own flags (its -v, -q mean sendmail's)
            continue
        found.append((name,))
        if isinstance(command, click.Group):
            found += [(name, sub) for sub in command.list_commands(ctx)]
    return found


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_command_lists_the_global_options_in_its_help(words: tuple[str, ...]) -> None:
    r = mailrelay(*words, "--help", input=None)
    assert r.returncode == 0, r.stderr
    for option in GLOBAL:
        assert option in r.stdout, (words, option)


def outbox_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "c.toml",
        [
            {"name": "one", "type": "outbox", "path": str(tmp_path / "one")},
            {"name": "two", "type": "outbox", "path": str(tmp_path / "two")},
        ],
    )


def send_args(*extra: str) -> list[str]:
    return ["send", *extra, "-s", "hello", "--text", "hi", "ops@example.com"]


def test_each_global_option_works_after_the_command_word(tmp_path: Path) -> None:
    cfg = outbox_config(tmp_path)
    state = tmp_path / "elsewhere" / "state.toml"
    log = tmp_path / "audit.jsonl"
    # --config, --state, --log-file, -v after `send`
    r = mailrelay(
        *send_args("--config", str(cfg), "--state", str(state), "--log-file", str(log), "-v"),
        input=None,
    )
    assert r.returncode == 0, r.stderr
    assert "sent via one" in r.stderr  # -v: success is reported off a terminal
    assert state.exists() and log.exists()
    assert len(list((tmp_path / "one").iterdir())) == 1
    # -q after the word silences the success line a -v before it asked for
    r = mailrelay("-v", "--config", str(cfg), *send_args("-q"), input=None)
    assert r.returncode == 0 and r.stderr == ""
    # --provider after the word replaces the config's providers
    url = f"outbox://{tmp_path / 'three'}"
    r = mailrelay("--config", str(cfg), *send_args("--provider", url, "-v"), input=None)
    assert r.returncode == 0 and "sent via outbox" in r.stderr, r.stderr
    assert len(list((tmp_path / "three").iterdir())) == 1
    # --debug after the word is seen too (usage errors stay one line)
    r = mailrelay("--config", str(cfg), "providers", "--debug", "--json", input=None)
    assert r.returncode == 0 and json.loads(r.stdout)["providers"][0]["name"] == "one"


def test_dry_run_with_v_after_the_word_shows_the_whole_message(tmp_path: Path) -> None:
    cfg = outbox_config(tmp_path)
    r = mailrelay(
        "--config", str(cfg), "send", "--dry-run", "-v", "-s", "Grüße aus Köln", "--text",
        "the body", "ops@example.com", input=None,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "the body" in r.stdout
    assert "Subject: Grüße aus Köln" in r.stdout  # decoded, as typed
    assert "=?utf-8?" not in r.stdout


def test_queue_show_v_after_the_word(tmp_path: Path) -> None:
    cfg = outbox_config(tmp_path)
    r = mailrelay("--config", str(cfg), "queue", "show", "-v", "NOPE", input=None)
    assert r.returncode != 2 and "No such option" not in r.stderr
    assert "no message NOPE" in r.stderr


@pytest.mark.parametrize("words", [(), ("queue",), ("config",)], ids=repr)
def test_no_arguments_prints_the_help_on_stdout_and_exits_0(words: tuple[str, ...]) -> None:
    r = mailrelay(*words, input=None)
    assert r.returncode == 0
    assert r.stdout.startswith(" ".join(("Usage: mailrelay", *words)))
    assert "Commands:" in r.stdout
    assert r.stderr == "" and "error:" not in r.stdout


def test_sendmail_h_prints_sendmail_modes_help() -> None:
    r = mailrelay("sendmail", "-h", input=None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: mailrelay sendmail")


@pytest.mark.parametrize(
    ("words", "meant"), [(("provider",), "providers"), (("queue", "lst"), "list")]
)
def test_a_mistyped_command_gets_did_you_mean(words: tuple[str, ...], meant: str) -> None:
    r = mailrelay(*words, input=None)
    assert r.returncode == 64
    assert f"did you mean {meant!r}?" in r.stderr and len(r.stderr.splitlines()) == 1


def test_via_sends_only_through_the_named_providers_in_that_order(tmp_path: Path) -> None:
    with SmtpServer() as first, SmtpServer() as second:
        second.fail["mail"] = "451 4.3.0 try later"
        cfg = write_config(
            tmp_path / "c.toml",
            [
                {"name": "one", "type": "outbox", "path": str(tmp_path / "one")},
                {"name": "a", "type": "smtp", "host": "127.0.0.1", "port": first.port,
                 "security": "none", "timeout": 5},
                {"name": "b", "type": "smtp", "host": "127.0.0.1", "port": second.port,
                 "security": "none", "timeout": 5},
            ],
        )  # fmt: skip
        base = ("--config", str(cfg), "--state", str(tmp_path / "state.toml"))
        r = mailrelay(*base, *send_args("--via", "b", "--via", "a", "-v"), input=None)
        assert r.returncode == 0, r.stderr
        assert "b (smtp) failed" in r.stderr and "sent via a" in r.stderr
        assert len(first.messages) == 1 and not (tmp_path / "one").exists()
        # only the named ones: when b fails, nothing else is tried
        r = mailrelay(*base, *send_args("--via", "b"), input=None)
        assert r.returncode == 75 and len(first.messages) == 1
        assert not (tmp_path / "one").exists()


def test_via_an_unknown_name_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    cfg = outbox_config(tmp_path)
    r = mailrelay("--config", str(cfg), *send_args("--via", "tow"), input=None)
    assert r.returncode == 64
    assert "'tow'" in r.stderr and "did you mean 'two'?" in r.stderr and "one, two" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_status_names_probe_only_those(tmp_path: Path) -> None:
    with shared_server() as server:
        url = smtp_url(server, "relay")
        cfg = outbox_config(tmp_path)
        r = mailrelay("--config", str(cfg), "status", "two", "--json", input=None)
        assert r.returncode == 0, r.stderr
        assert [p["provider"] for p in json.loads(r.stdout)["providers"]] == ["two"]
        r = mailrelay("--provider", url, "status", "nope", input=None)
        assert r.returncode == 64 and "relay" in r.stderr


def test_completion_offers_provider_names_for_via(tmp_path: Path) -> None:
    cfg = outbox_config(tmp_path)
    env = {
        "_MAILRELAY_COMPLETE": "bash_complete",
        "COMP_WORDS": f"mailrelay --config {cfg} send --via t",
        "COMP_CWORD": "5",
    }
    r = mailrelay(env=env, input=None)
    assert r.stdout.split() == ["plain,two"]
    env["COMP_WORDS"] = f"mailrelay send --config {cfg} --via t"  # --config after the word
    r = mailrelay(env=env, input=None)
    assert r.stdout.split() == ["plain,two"]

"""`mailrelay config init|check|show` through the installed command, on good, typo'd and
secret-less configurations; the shipped example is what `config init` writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.test_e2e import mailrelay, write_config

REPO = Path(__file__).resolve().parent.parent


def test_init_writes_the_template_private_to_the_path_that_is_read(
    isolated_user_dirs: Path,
) -> None:
    r = mailrelay("config", "init", input=None)
    path = isolated_user_dirs / ".config" / "mailrelay" / "config.toml"
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text == (REPO / "docs" / "config.example.toml").read_text()
    # the template is valid, has no provider on, and `show` reads the same file
    shown = mailrelay("config", "show", "--json", input=None)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["files"]["config"] == str(path) and doc["providers"] == []


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.toml"
    cfg.write_text("# my own\n")
    cfg.chmod(0o644)
    r = mailrelay("--config", str(cfg), "config", "init", input=None)
    assert r.returncode == 78 and "--force" in r.stderr and str(cfg) in r.stderr
    assert cfg.read_text() == "# my own\n"
    r = mailrelay("config", "init", "--force", "--config", str(cfg), input=None)
    assert r.returncode == 0, r.stderr
    assert "[[providers]]" in cfg.read_text()
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_init_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    r = mailrelay("--config", str(link), "config", "init", "--force", input=None)
    assert r.returncode == 78 and str(link) in r.stderr
    assert target.read_text() == "keep\n"


def test_every_provider_type_is_in_the_template() -> None:
    from mailrelay.providers import registry

    text = (REPO / "docs" / "config.example.toml").read_text()
    for type_ in registry.types():
        assert f'# type = "{type_}"' in text, type_
    assert "= { env = " in text
    assert not [line for line in text.splitlines() if line.startswith("[[")]  # all commented


def test_check_a_good_config_exits_0(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        [{"name": "box", "type": "outbox", "path": str(tmp_path / "out")}],
    )
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 0, r.stderr
    assert "config ok: 1 provider(s)" in r.stderr
    r = mailrelay("config", "check", "--probe", "--config", str(cfg), input=None)
    assert r.returncode == 0 and "box: healthy" in r.stderr


def test_check_lists_every_problem_one_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[defaults]\n"
        'polcy = "sticky"\n'
        "[[providers]]\n"
        'type = "smtp"\n'
        'host = "smtp.example.com"\n'
        'securty = "tls"\n'
        'username = "ops"\n'
        'password = { env = "MAILRELAY_TEST_UNSET" }\n'
        "[[providers]]\n"
        'type = "mailgun"\n'
        'domain = "mg.example.com"\n'
        'api_key = { command = ["false"] }\n'
        "[[providers]]\n"
        'type = "sendgrid"\n'
        'base_url = "ftp://127.0.0.1"\n'
        'api_key = { env = "MAILRELAY_TEST_UNSET" }\n'
    )
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 78
    lines = r.stderr.splitlines()
    assert len(lines) == 6, r.stderr
    assert "defaults.polcy" in lines[0] and "did you mean 'policy'?" in lines[0]
    assert "'securty'" in lines[1] and "did you mean 'security'?" in lines[1]
    assert "environment variable MAILRELAY_TEST_UNSET is not set" in lines[2]
    assert "provider 'mailgun'" in lines[3] and "secret command 'false' exited with 1" in lines[3]
    assert "base_url" in lines[4] and "must be an http(s) URL" in lines[4]
    assert "provider 'sendgrid'" in lines[5] and "MAILRELAY_TEST_UNSET is not set" in lines[5]
    assert "Traceback" not in r.stderr


def test_check_and_send_name_the_path_searched_when_there_is_no_config(
    isolated_user_dirs: Path,
) -> None:
    searched = str(isolated_user_dirs / ".config" / "mailrelay" / "config.toml")
    r = mailrelay("config", "check", input=None)
    assert r.returncode == 78 and searched in r.stderr
    r = mailrelay("send", "-r", "a@example.com", "--text", "x", "b@example.com", input=None)
    assert r.returncode == 78 and searched in r.stderr and "no providers configured" in r.stderr


def test_show_redacts_secrets_and_says_where_everything_is(tmp_path: Path) -> None:
    literal = "sg-literal-secret-9f8e7d"
    cfg = write_config(
        tmp_path / "c.toml",
        [
            {"name": "box", "type": "outbox", "path": str(tmp_path / "out")},
            {"name": "sg", "type": "sendgrid", "api_key": literal},
        ],
        spool_dir=str(tmp_path / "spool"),
    )
    cfg.chmod(0o600)
    state = tmp_path / "state.toml"
    r = mailrelay("--config", str(cfg), "config", "show", "--state", str(state), input=None)
    assert r.returncode == 0, r.stderr
    assert literal not in r.stdout + r.stderr
    assert 'api_key = "***"' in r.stdout
    for where in (str(cfg), str(state), str(tmp_path / "spool"), str(tmp_path / "out")):
        assert where in r.stdout
    doc = json.loads(mailrelay("--config", str(cfg), "config", "show", "--json", input=None).stdout)
    assert doc["providers"][1]["api_key"] == "***"
    assert doc["files"]["outbox"] == [str(tmp_path / "out")]


def test_a_provider_without_its_secret_says_so_even_when_another_delivered(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[defaults]\nfrom = "cron@example.com"\n'
        '[[providers]]\nname = "sg"\ntype = "sendgrid"\n'
        'api_key = { env = "MAILRELAY_TEST_UNSET" }\n'
        f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "out"}"\n'
    )
    base = ("--config", str(cfg), "--state", str(tmp_path / "state.toml"))
    r = mailrelay(*base, "send", "-v", "-s", "t", "--text", "x", "b@example.com", input=None)
    assert r.returncode == 0, r.stderr
    skipped = [line for line in r.stderr.splitlines() if "sg (sendgrid) skipped" in line]
    assert len(skipped) == 1 and "MAILRELAY_TEST_UNSET is not set" in skipped[0]
    r = mailrelay(*base, "providers", input=None)
    assert "sg (sendgrid) is skipped at send time" in r.stderr
    assert "MAILRELAY_TEST_UNSET is not set" in r.stderr
    r = mailrelay(*base, "status", input=None)
    assert r.returncode == 1 and "MAILRELAY_TEST_UNSET is not set" in r.stdout

"""The tests' one config writer writes what it is given, whatever the characters."""

from __future__ import annotations

from pathlib import Path

import tomllib

from tests.test_e2e import write_config


def test_apostrophes_quotes_and_backslashes_survive_the_writer(tmp_path: Path) -> None:
    awkward = "O'Brien \"ops\" \\ 'relay'"
    provider = {"name": "it's", "type": "outbox", "path": tmp_path / "Bob's box"}
    path = write_config(tmp_path / "c.toml", [provider], from_name=awkward, retries=2)
    document = tomllib.loads(path.read_text())
    assert document["defaults"] == {"from": "cron@example.com", "from_name": awkward, "retries": 2}
    assert document["providers"] == [{**provider, "path": str(tmp_path / "Bob's box")}]


def test_nested_tables_and_mode(tmp_path: Path) -> None:
    from tests.configfile import write_config as writer

    provider = {"type": "smtp", "host": "127.0.0.1", "password": {"env": "PW"}}
    path = writer(tmp_path / "sub" / "c.toml", [provider], serve={"tokens": ["t"]}, mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    document = tomllib.loads(path.read_text())
    assert document["serve"] == {"tokens": ["t"]}
    assert document["providers"][0]["password"] == {"env": "PW"}

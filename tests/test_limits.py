"""Extreme settings and nested input end in a one-line error or a warning, never exit 70."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_e2e import mailrelay


@pytest.mark.parametrize(
    ("key", "value"),
    [("cooldown", "1e12"), ("max_cooldown", "inf"), ("timeout", "1e9"), ("queue_retry", "nan")],
)
def test_a_duration_outside_its_range_is_refused_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[defaults]\nfrom = "a@example.com"\n{key} = {value}\n')
    r = mailrelay("--config", str(cfg), "send", "--text", "x", "-s", "s", "b@example.com")
    assert r.returncode == 78, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"defaults.{key}" in r.stderr


def test_deeply_nested_config_is_a_one_line_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("x = " + "[" * 100000 + "\n")
    r = mailrelay("--config", str(cfg), "send", "--text", "x", "b@example.com")
    assert r.returncode == 78, r.stderr
    assert "nested too deeply" in r.stderr and len(r.stderr.strip().splitlines()) == 1

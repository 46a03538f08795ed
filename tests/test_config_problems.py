"""`config check` names every problem of a provider, not only the first one its reading
stops at, with "did you mean" for a misspelt key or type; a config that exists is never
answered with "run mailrelay config init"; what the README says of exit codes and of the
Quick start's files holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.test_e2e import mailrelay

ROOT = Path(__file__).resolve().parents[1]


def test_check_names_every_problem_of_one_provider(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[[providers]]\n"
        'name = "relay"\n'
        'type = "smtp"\n'
        'hots = "127.0.0.1"\n'  # host misspelt: host is missing and hots is unknown
        'port = "x"\n'
        'security = "maybe"\n'
        'password = { env = "MAILRELAY_TEST_UNSET" }\n'
        'username = "ops"\n'
    )
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 78, r.stderr
    lines = r.stderr.splitlines()
    assert all(line.startswith(f"mailrelay: error: {cfg}: provider 'relay': ") for line in lines)
    assert any("key 'host': is required" in line for line in lines), lines
    assert any("key 'hots'" in line and "did you mean 'host'?" in line for line in lines), lines
    assert any("key 'port': must be an integer" in line for line in lines), lines
    assert any("key 'security': must be one of" in line for line in lines), lines
    assert any("MAILRELAY_TEST_UNSET is not set" in line for line in lines), lines
    assert len(lines) == 5 and "Traceback" not in r.stderr
    assert "mailrelay-config-check-stand-in" not in r.stderr


def test_a_misspelt_type_gets_did_you_mean(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[providers]]\ntype = "mailgum"\napi_key = "k"\ndomain = "mg.example.com"\n')
    r = mailrelay("--config", str(cfg), "config", "check", input=None)
    assert r.returncode == 78
    assert "unknown provider type 'mailgum' (did you mean 'mailgun'?)" in r.stderr


def test_no_config_init_hint_when_a_config_exists(tmp_path: Path, isolated_user_dirs: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[defaults]\nfrom = "cron@example.com"\n')
    r = mailrelay("--config", str(cfg), "send", "-s", "x", "--text", "x", "a@example.com")
    assert r.returncode == 78 and "no providers configured" in r.stderr
    assert "config init" not in r.stderr and str(cfg) in r.stderr
    r = mailrelay("send", "-s", "x", "--text", "x", "-r", "a@example.com", "b@example.com")
    assert r.returncode == 78 and "run 'mailrelay config init'" in r.stderr  # none: offer it


def test_readme_config_check_probe_exit_codes_match_its_help() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    line = next(x for x in readme.splitlines() if x.startswith("mailrelay config check --probe"))
    said = set(re.findall(r"\b(\d\d)\b", line.partition("#")[2]))
    helped = mailrelay("config", "check", "--help", input=None).stdout
    assert said == {"78", "69"} and all(code in helped for code in said), (line, helped)


def test_the_quick_starts_outbox_is_ignored_by_git() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert '"outbox://$PWD/outbox"' in readme  # what the Quick start writes
    r = subprocess.run(
        ["git", "check-ignore", "-q", "outbox/x.eml"], cwd=ROOT, capture_output=True, check=False
    )
    assert r.returncode == 0, "outbox/ (the Quick start's folder) is not in .gitignore"

"""What each path imports: start-up cost is paid only by the paths that need it (issue 6).

No timings here (they live in bench/); these check which modules a run loads, which is what
the timings follow from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_httpserver import HTTPServer

from tests.esp.fake_postmark import FakePostmark
from tests.esp.fakebase import server_base_url

HEAVY = ("requests", "rich", "html2text", "email_validator", "requests_aws4auth", "jsonschema",
         "redis", "mailrelay.state.redisstore")  # fmt: skip
REPORT = "print(sorted(m for m in {names!r} if m in sys.modules))"


def loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    script = f"import atexit, sys\natexit.register(lambda: {REPORT.format(names=names)})\n" + code
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    last = out.stdout.strip().splitlines()[-1]
    return list(eval(last))  # a printed list of str


def test_importing_the_cli_loads_no_heavy_module_and_no_command() -> None:
    names = (*HEAVY, "smtplib", "mailrelay.cli.send", "mailrelay.config", "mailrelay.engine")
    assert loaded_after("import mailrelay.cli", names) == []


def test_help_and_version_load_no_command_module() -> None:
    names = (
        *HEAVY,
        "mailrelay.cli.send",
        "mailrelay.cli.queue",
        "mailrelay.cli.sendmail",
        "mailrelay.metrics",
        "mailrelay.alerts",
        "prometheus_client",
        "apprise",
    )
    for argv in (["--help"], ["--version"], ["metrics", "--help"]):
        code = f"from mailrelay.cli import main\nmain({argv!r})"
        assert loaded_after(code, names) == [], argv


def test_an_http_send_loads_neither_requests_nor_email_validator(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    fake = FakePostmark()
    fake.install(httpserver)
    config = tmp_path / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "ops@example.com"\n[[providers]]\ntype = "postmark"\n'
        f'server_token = "{FakePostmark.TOKEN}"\nbase_url = "{server_base_url(httpserver)}"\n'
    )
    config.chmod(0o600)
    argv = ["--config", str(config), "--state", str(tmp_path / "state.toml"), "send", "-s",
            "hi", "--text", "body", "dev@example.com"]  # fmt: skip
    code = f"from mailrelay.cli import main\nmain({argv!r})"
    # no [alerts]: the alert machinery is not even imported; apprise never is by a send
    assert loaded_after(code, (*HEAVY, "mailrelay.alerts", "apprise", "prometheus_client")) == []
    assert len(fake.requests) == 1

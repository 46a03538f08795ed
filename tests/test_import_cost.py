"""What each path imports: start-up cost is paid only by the paths that need it (issue 6).

No timings here (they live in bench/); these check which modules a run loads, which is what
the timings follow from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.state.redisclient import Connection, parse_url
from tests.esp.fake_postmark import FakePostmark
from tests.esp.fakebase import server_base_url
from tests.redisserver import RedisServer, server_binary
from tests.smtpserver import SmtpServer

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
        "mailrelay.state.transitions",
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
    # no [alerts]: the alert machinery is not even imported; apprise never is by a send;
    # nor are the .eml parser and the JSON form of a message (the message package loads a
    # module when one of its names is first used)
    unused = ("mailrelay.alerts", "mailrelay.state.transitions", "apprise", "prometheus_client",
              "mailrelay.message.eml", "mailrelay.message.jsonform")  # fmt: skip
    assert loaded_after(code, (*HEAVY, *unused)) == []
    assert len(fake.requests) == 1


def test_an_smtp_send_with_the_state_file_loads_no_completion_and_no_mime_types(
    tmp_path: Path,
) -> None:
    """The start-up of the commonest send (issue 26): shell completion is for a TAB, the MIME
    types table (and its Windows registry reader) for attachments."""
    config = tmp_path / "config.toml"
    with SmtpServer() as relay:
        config.write_text(
            '[defaults]\nfrom = "ops@example.com"\n[[providers]]\ntype = "smtp"\n'
            f'host = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'
        )
        config.chmod(0o600)
        argv = ["--config", str(config), "--state", str(tmp_path / "state.toml"), "send", "-s",
                "hi", "--text", "body", "dev@example.com"]  # fmt: skip
        code = f"from mailrelay.cli import main\nmain({argv!r})"
        names = (*HEAVY, "click.shell_completion", "mimetypes", "mailrelay.message.eml",
                 "mailrelay.alerts", "email_validator")  # fmt: skip
        assert loaded_after(code, names) == []
        assert len(relay.messages) == 1


def test_the_console_script_tunes_the_collector_and_freezes_its_heap_before_exit() -> None:
    """`mailrelay` (main() with no argv, a process of its own) collects cycles less often and
    freezes the heap before it exits, so the collections of interpreter shutdown do not walk
    the start-up's objects; main(argv), as tests and embedders call it, leaves the garbage
    collector alone."""
    report = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print(gc.get_freeze_count(), gc.get_threshold()[0]))\n"
    )
    for call, own in (("main()", True), ("main(['--version'])", False)):
        code = report + "sys.argv = ['mailrelay', '--version']\n"
        code += f"from mailrelay.cli import main\n{call}"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        frozen, threshold = map(int, out.stdout.strip().splitlines()[-1].split())
        assert (frozen > 0) is own, (call, frozen)
        assert threshold == (20_000 if own else 700), (call, threshold)


@pytest.mark.skipif(server_binary() is None, reason="no redis-server or valkey-server")
def test_a_send_with_redis_state_loads_neither_redis_py_nor_asyncio_or_logging(
    tmp_path: Path,
) -> None:
    binary = server_binary()
    assert binary is not None
    config = tmp_path / "config.toml"
    with SmtpServer() as relay, RedisServer(binary) as redis_server:
        config.write_text(
            '[defaults]\nfrom = "ops@example.com"\n[[providers]]\ntype = "smtp"\n'
            f'host = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'
        )
        config.chmod(0o600)
        argv = ["--config", str(config), "--state", redis_server.url, "send", "--json", "-s",
                "hi", "--text", "body", "dev@example.com"]  # fmt: skip
        code = f"from mailrelay.cli import main\nmain({argv!r})"
        names = (
            "redis",
            "asyncio",
            "logging",
            "concurrent.futures",
            "platformdirs",
            "mailrelay.state.redisstore",
        )
        # the state store was used (imported), and nothing heavy came with it; the local
        # fallback file (platformdirs finds its directory) only when Redis cannot be used
        assert loaded_after(code, names) == ["mailrelay.state.redisstore"]
        assert len(relay.messages) == 1
        shared = Connection(parse_url(redis_server.url))  # the send used Redis, no fallback
        assert shared.execute("HGET", "{mailrelay}:provider:smtp", "sent") == b"1"
        shared.close()

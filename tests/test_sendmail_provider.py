"""The sendmail provider against real fake-sendmail scripts run as subprocesses."""

from __future__ import annotations

import email
import json
import os
import sys
import time
from email import policy
from pathlib import Path
from typing import Any

import pytest

from mailrelay.config import specs_from_urls
from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment, Message
from mailrelay.providers import registry
from mailrelay.providers import sendmail as sendmail_module
from mailrelay.providers.base import Outcome, ProviderError
from mailrelay.providers.options import ProviderSpec, ProviderURL
from mailrelay.providers.sendmail import CHILD_ENV, SendmailProvider, exit_outcome

SCRIPT = """#!{python}
import json, os, signal, sys, time
data = b"" if {skip_stdin!r} else sys.stdin.buffer.read()
with open({record!r}, "w") as f:
    json.dump({{"argv": sys.argv[1:], "stdin": data.decode("utf-8"),
               "child": os.environ.get("{child_env}")}}, f)
sys.stderr.write({stderr!r})
time.sleep({sleep!r})
if {signal!r}:
    os.kill(os.getpid(), signal.SIGTERM)
sys.exit({code!r})
"""


def fake_sendmail(
    folder: Path,
    name: str = "sendmail",
    *,
    code: int = 0,
    stderr: str = "",
    sleep: float = 0,
    skip_stdin: bool = False,
    signal: bool = False,
) -> Path:
    """A sendmail stand-in that records its argv, stdin and environment, then exits `code`."""
    script = folder / name
    script.write_text(
        SCRIPT.format(
            python=sys.executable,
            record=str(folder / "record.json"),
            child_env=CHILD_ENV,
            stderr=stderr,
            sleep=sleep,
            skip_stdin=skip_stdin,
            signal=signal,
            code=code,
        )
    )
    script.chmod(0o755)
    return script


def recorded(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((folder / "record.json").read_text())
    return result


def provider(command: object, **values: object) -> SendmailProvider:
    built = registry.build(
        ProviderSpec("sm", "sendmail", {"command": command, **values}, "test.toml")
    )
    assert isinstance(built, SendmailProvider)
    return built


def make_message(**extra: object) -> Message:
    values: dict[str, object] = {
        "sender": Address("ops@example.com", "Ops"),
        "to": [Address("alice@example.com")],
        "cc": [Address("carol@example.com")],
        "bcc": [Address("hidden@example.com")],
        "subject": "web1: disk",
        "text": "disk 91% full\n.\nstill here\n",
    }
    values.update(extra)
    return Message(**values)  # type: ignore[arg-type]


def failure(
    p: SendmailProvider, message: Message | None = None, timeout: float = 5
) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        p.send(message or make_message(), timeout=timeout)
    return info.value


def test_success_passes_envelope_and_message(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path)
    message = make_message()
    receipt = provider([str(script)]).send(message, timeout=5)
    assert receipt.provider == "sm"
    assert receipt.message_id == message.message_id

    seen = recorded(tmp_path)
    assert seen["argv"] == [
        "-i",
        "-f",
        "ops@example.com",
        "--",
        "alice@example.com",
        "carol@example.com",
        "hidden@example.com",
    ]
    assert seen["child"] == "1"
    stdin = seen["stdin"]
    assert "\r" not in stdin  # local submission uses UNIX line ends
    assert stdin.encode() == message.as_bytes().replace(b"\r\n", b"\n")
    parsed = email.message_from_string(stdin, policy=policy.default)
    assert parsed["Bcc"] is None
    assert "hidden@example.com" not in stdin
    assert parsed["To"] == "alice@example.com"
    assert parsed["Subject"] == "web1: disk"
    assert "\n.\nstill here" in stdin  # -i: a lone dot is not the end


def test_attachments_go_through(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path)
    att = Attachment("r.csv", "text/csv", b"a,b\n1,2\n")
    provider(str(script)).send(make_message(attachments=[att]), timeout=5)
    parsed = email.message_from_string(recorded(tmp_path)["stdin"], policy=policy.default)
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "r.csv"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (75, Outcome.TRANSIENT),
        (65, Outcome.PERMANENT),
        (78, Outcome.PROVIDER),
        (127, Outcome.PROVIDER),
        (69, Outcome.REJECTED),
    ],
)
def test_exit_status_classes(tmp_path: Path, code: int, outcome: Outcome) -> None:
    script = fake_sendmail(tmp_path, code=code, stderr=f"first line {code}\nsecond line\n")
    err = failure(provider([str(script)]))
    assert err.outcome is outcome
    assert err.message.startswith("sendmail: ")
    assert f"exit {code}" in err.message
    assert f"first line {code}" in err.message
    assert "second line" not in err.message


def test_exit_status_table() -> None:
    # sysexits.h codes, as the brief maps them
    assert exit_outcome(0) is Outcome.ACCEPTED
    for code in (75, 71, 74, 73):
        assert exit_outcome(code) is Outcome.TRANSIENT
    for code in (65, 67, 68):
        assert exit_outcome(code) is Outcome.PERMANENT
    for code in (77, 78, 126, 127):
        assert exit_outcome(code) is Outcome.PROVIDER
    for code in (1, 64, 69, 70, -9):
        assert exit_outcome(code) is Outcome.REJECTED


def test_killed_by_signal_is_rejected(tmp_path: Path) -> None:
    err = failure(provider([str(fake_sendmail(tmp_path, signal=True))]))
    assert err.outcome is Outcome.REJECTED
    assert "SIGTERM" in err.message


def test_missing_command_is_a_provider_failure(tmp_path: Path) -> None:
    p = provider([str(tmp_path / "no-such-sendmail")])
    err = failure(p)
    assert err.outcome is Outcome.PROVIDER
    assert "not found" in err.message
    health = p.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER


def test_not_executable(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path)
    script.chmod(0o644)
    p = provider([str(script)])
    err = failure(p)
    assert err.outcome is Outcome.PROVIDER
    assert "not executable" in err.message
    health = p.check(timeout=5)
    assert not health.ok
    assert "not executable" in health.detail


def test_check_healthy(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path)
    health = provider([str(script)]).check(timeout=5)
    assert health.ok
    assert health.detail == f"{script} executable"
    assert not (tmp_path / "record.json").exists()  # a probe runs nothing


def test_timeout_after_the_message_was_handed_over_is_ambiguous(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path, sleep=30)
    p = provider([str(script)], timeout=0.5)
    started = time.monotonic()
    err = failure(p, timeout=0.5)
    assert time.monotonic() - started < 5
    assert err.outcome is Outcome.AMBIGUOUS
    assert "0.5 s" in err.message


def test_timeout_before_the_message_was_read_is_transient(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path, sleep=30, skip_stdin=True)
    big = Attachment("big.bin", "application/octet-stream", os.urandom(1 << 20))
    started = time.monotonic()
    err = failure(provider([str(script)]), make_message(attachments=[big]), timeout=0.5)
    assert time.monotonic() - started < 5
    assert err.outcome is Outcome.TRANSIENT


def test_tags_and_metadata_travel_as_headers(tmp_path: Path) -> None:
    p = provider([str(fake_sendmail(tmp_path))])
    p.send(make_message(tags=["cron"], metadata={"host": "web1"}), timeout=10)
    stdin = recorded(tmp_path)["stdin"]
    parsed = email.message_from_string(stdin, policy=policy.default)
    assert parsed["X-Mailrelay-Tag"] == "cron"
    assert parsed["X-Mailrelay-Metadata"] == "host=web1"
    assert "\r" not in stdin


# --- the loop guard ---------------------------------------------------------------------


def test_refuses_a_command_named_mailrelay(tmp_path: Path) -> None:
    real = fake_sendmail(tmp_path, "real-script")
    link = tmp_path / "mailrelay"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="would call mailrelay itself") as info:
        provider([str(link)])
    assert "test.toml" in str(info.value) and "'command'" in str(info.value)


def test_refuses_a_symlink_to_mailrelay_sendmail(tmp_path: Path) -> None:
    target = fake_sendmail(tmp_path, "mailrelay-sendmail")
    link = tmp_path / "sendmail"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="would call mailrelay itself"):
        provider(str(link))


def test_refuses_a_script_that_runs_mailrelay(tmp_path: Path) -> None:
    script = tmp_path / "sendmail"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom mailrelay.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    with pytest.raises(ConfigError, match="would call mailrelay itself"):
        provider([str(script)])


def test_refuses_python_dash_m_mailrelay() -> None:
    with pytest.raises(ConfigError, match="would call mailrelay itself"):
        provider([sys.executable, "-m", "mailrelay", "sendmail"])


def test_refuses_to_run_inside_a_sendmail_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider([str(fake_sendmail(tmp_path))])
    monkeypatch.setenv(CHILD_ENV, "1")
    err = failure(p)
    assert err.outcome is Outcome.PROVIDER
    assert CHILD_ENV in err.message
    assert not (tmp_path / "record.json").exists()


# --- configuration ----------------------------------------------------------------------


def test_url_form(tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path)
    [spec] = specs_from_urls([f"sendmail://{script}"], "--provider")
    assert spec.values["command"] == [str(script)]
    built = registry.build(spec)
    assert built.describe() == {"command": str(script)}
    built.send(make_message(), timeout=5)
    assert recorded(tmp_path)["argv"][0] == "-i"

    url = ProviderURL.parse("sendmail:///usr/sbin/sendmail", "--provider")
    assert SendmailProvider.config_from_url(url) == {"command": ["/usr/sbin/sendmail"]}


def test_bad_url() -> None:
    with pytest.raises(ConfigError, match="local command"):
        specs_from_urls(["sendmail://mail.example.com/usr/sbin/sendmail"], "--provider")


def test_config_defaults_and_extra_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the default is the system's sendmail; building a provider reads the file it names (to
    # refuse a mailrelay wrapper), so the test names a stand-in rather than the host's own
    assert sendmail_module.DEFAULT_COMMAND == ("/usr/sbin/sendmail",)
    stand_in = fake_sendmail(tmp_path, "system-sendmail")
    monkeypatch.setattr(sendmail_module, "DEFAULT_COMMAND", (str(stand_in),))
    default = registry.build(ProviderSpec("sm", "sendmail", {}, "c.toml"))
    assert isinstance(default, SendmailProvider)
    assert default.command == [str(stand_in)]
    assert default.timeout == 60
    default.send(make_message(), timeout=5)
    assert recorded(tmp_path)["argv"][0] == "-i"

    script = fake_sendmail(tmp_path)
    p = provider([str(script), "-oem", "-oi"], timeout=7)
    assert p.timeout == 7
    p.send(make_message(), timeout=5)
    assert recorded(tmp_path)["argv"][:4] == ["-oem", "-oi", "-i", "-f"]

    with pytest.raises(ConfigError, match="'command'"):
        registry.build(ProviderSpec("sm", "sendmail", {"command": [1, 2]}, "c.toml"))

"""The outbox provider against real folders: atomic .eml files, modes, envelope, failures."""

from __future__ import annotations

import email
import errno
import os
import re
import stat
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailrelay.config import specs_from_urls
from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment, Message
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome, ProviderError
from mailrelay.providers.options import ProviderSpec
from mailrelay.providers.outbox import OutboxProvider, _classify

NAME = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{16}\.eml$")
SECRET_BODY = "the body text nobody but the recipient may see"


def make_message(**extra: object) -> Message:
    values: dict[str, object] = {
        "sender": Address("ops@example.com", "Ops"),
        "to": [Address("alice@example.com", "Alice")],
        "cc": [Address("carol@example.com")],
        "bcc": [Address("hidden@example.com")],
        "subject": "web1: disk 91% full",
        "text": SECRET_BODY + "\n",
        "attachments": [Attachment("report.csv", "text/csv", b"host,disk\nweb1,91\n")],
    }
    values.update(extra)
    return Message(**values)  # type: ignore[arg-type]


def outbox(path: Path, name: str = "box") -> OutboxProvider:
    provider = registry.build(ProviderSpec(name, "outbox", {"path": str(path)}, "test.toml"))
    assert isinstance(provider, OutboxProvider)
    return provider


def parse(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if not NAME.match(p.name)]


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_send_writes_one_parseable_eml(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    message = make_message()
    receipt = outbox(folder).send(message, timeout=5)

    files = sorted(folder.iterdir())
    assert [p.name for p in files] == [Path(receipt.detail).name]
    assert NAME.match(files[0].name)
    assert receipt.provider == "box"
    assert receipt.message_id == message.message_id

    msg = parse(files[0])
    assert msg["From"] == "Ops <ops@example.com>"
    assert msg["To"] == "Alice <alice@example.com>"
    assert msg["Cc"] == "carol@example.com"
    assert msg["Subject"] == "web1: disk 91% full"
    assert msg["Message-ID"] == message.message_id
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    # the file keeps the wire form (CRLF), which the parser leaves in the text
    assert body.get_content().replace("\r\n", "\n") == SECRET_BODY + "\n"
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["report.csv"]
    assert attachments[0].get_content() == "host,disk\nweb1,91\n"


def test_bcc_only_in_the_envelope_headers(tmp_path: Path) -> None:
    receipt = outbox(tmp_path).send(make_message(), timeout=5)
    raw = Path(receipt.detail).read_bytes()
    msg = parse(Path(receipt.detail))
    assert msg["Bcc"] is None
    assert b"\nBcc:" not in raw and not raw.startswith(b"Bcc:")
    assert raw.startswith(b"Return-Path: <ops@example.com>\r\n")
    assert msg["Return-Path"] == "<ops@example.com>"
    envelope = [a.strip() for a in str(msg["X-Envelope-To"]).split(",")]
    assert envelope == ["alice@example.com", "carol@example.com", "hidden@example.com"]


def test_tags_and_metadata_become_headers(tmp_path: Path) -> None:
    message = make_message(tags=["cron", "disk"], metadata={"host": "web1", "run": "42"})
    msg = parse(Path(outbox(tmp_path).send(message, timeout=5).detail))
    assert msg.get_all("X-Mailrelay-Tag") == ["cron", "disk"]
    assert msg.get_all("X-Mailrelay-Metadata") == ["host=web1", "run=42"]


def test_non_ascii_envelope_headers_are_encoded(tmp_path: Path) -> None:
    message = make_message(tags=["größe"], subject="Füllstand")
    msg = parse(Path(outbox(tmp_path).send(message, timeout=5).detail))
    assert msg["X-Mailrelay-Tag"] == "größe"
    assert msg["Subject"] == "Füllstand"


def test_file_mode_0600_and_folders_0700_with_permissive_umask(
    tmp_path: Path, umask_zero: None
) -> None:
    folder = tmp_path / "a" / "b" / "out"
    receipt = outbox(folder).send(make_message(), timeout=5)
    assert stat.S_IMODE(os.stat(receipt.detail).st_mode) == 0o600
    for made in (tmp_path / "a", tmp_path / "a" / "b", folder):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made


def test_twenty_sends_unique_sorted_names_no_temp_files(tmp_path: Path) -> None:
    provider = outbox(tmp_path / "out")
    details = [provider.send(make_message(subject=f"n{i}"), timeout=5).detail for i in range(20)]
    names = [Path(d).name for d in details]
    assert len(set(names)) == 20
    assert all(NAME.match(n) for n in names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert leftovers(tmp_path / "out") == []
    # names start with the time, so a listing sorts by it (to the second)
    stamps = [n.split("-")[0] for n in names]
    assert stamps == sorted(stamps)


def test_home_is_expanded(isolated_user_dirs: Path) -> None:
    provider = registry.build(ProviderSpec("box", "outbox", {"path": "~/mail/out"}, "test.toml"))
    assert provider.describe() == {"path": str(isolated_user_dirs / "mail" / "out")}
    receipt = provider.send(make_message(), timeout=5)
    assert Path(receipt.detail).parent == isolated_user_dirs / "mail" / "out"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_a_provider_failure(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ProviderError) as info:
            outbox(folder).send(make_message(), timeout=5)
        assert info.value.outcome is Outcome.PROVIDER
        assert str(folder) in info.value.message
        assert "EACCES" in info.value.message
        assert not outbox(folder).check(timeout=5).ok
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_folder_under_a_regular_file_is_a_provider_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    folder = blocker / "out"
    with pytest.raises(ProviderError) as info:
        outbox(folder).send(make_message(), timeout=5)
    err = info.value
    assert err.outcome is Outcome.PROVIDER
    assert str(folder) in err.message
    assert SECRET_BODY not in str(err) and "disk 91%" not in str(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "plain-file"]

    health = outbox(folder).check(timeout=5)
    assert not health.ok
    assert health.outcome is Outcome.PROVIDER


def test_path_that_is_a_file_is_a_provider_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("")
    with pytest.raises(ProviderError) as info:
        outbox(target).send(make_message(), timeout=5)
    assert info.value.outcome is Outcome.PROVIDER
    assert "not a folder" in info.value.message
    health = outbox(target).check(timeout=5)
    assert not health.ok and "not a folder" in health.detail


def test_errno_classes() -> None:
    # a real full disk cannot be made on demand; the mapping itself is checked here
    assert _classify(OSError(errno.ENOSPC, "No space left")) is Outcome.TRANSIENT
    assert _classify(OSError(errno.EDQUOT, "Quota exceeded")) is Outcome.TRANSIENT
    for code in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS):
        assert _classify(OSError(code, "x")) is Outcome.PROVIDER


def test_check_counts_messages_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    provider = outbox(folder)
    missing = provider.check(timeout=5)
    assert missing.ok and "missing" in missing.detail
    assert not folder.exists()  # a probe changes nothing

    for _ in range(2):
        provider.send(make_message(), timeout=5)
    health = provider.check(timeout=5)
    assert health.ok
    assert health.detail == f"{folder} writable, 2 messages"
    assert leftovers(folder) == []


def test_url_form(tmp_path: Path) -> None:
    [spec] = specs_from_urls([f"outbox://{tmp_path}/box"], "--provider")
    assert spec.values["path"] == f"{tmp_path}/box"
    provider = registry.build(spec)
    assert provider.name == "outbox"
    assert provider.describe() == {"path": f"{tmp_path}/box"}
    [named] = specs_from_urls([f"outbox://localhost{tmp_path}?name=local"], "--provider")
    assert named.name == "local" and registry.build(named).describe() == {"path": str(tmp_path)}


@pytest.mark.parametrize(
    "url", ["outbox://mail.example.com/var/out", "outbox:relative/out", "outbox://u:p@/x"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        specs_from_urls([url], "--provider")
    assert "--provider" in str(info.value)
    assert ":p@" not in str(info.value)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"'path'.*required"):
        registry.build(ProviderSpec("box", "outbox", {}, "c.toml"))
    with pytest.raises(ConfigError, match="absolute"):
        registry.build(ProviderSpec("box", "outbox", {"path": "out"}, "c.toml"))
    with pytest.raises(ConfigError, match="'colour'"):
        registry.build(ProviderSpec("box", "outbox", {"path": "/x", "colour": "red"}, "c.toml"))

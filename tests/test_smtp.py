"""The SMTP provider against real aiosmtpd servers on loopback (tests/smtpserver.py)."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage
from typing import Any

import pytest

from mailrelay.config import specs_from_urls
from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment, Message
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome, Provider, ProviderError, Receipt
from mailrelay.providers.options import ProviderSpec
from mailrelay.providers.smtp import SmtpProvider, classify_reply, dot_stuff, enhanced_code
from tests.smtpserver import SmtpServer, closing_server, shared_server, silent_server

pytestmark = pytest.mark.timeout(20)

PASSWORD = "pw-Zq8!x%40:/secret"  # looks percent-encoded on purpose
USER = "ops@example.com"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def build(**cfg: Any) -> Provider:
    return registry.build(ProviderSpec("s", "smtp", cfg, "test"))


def plain(server: Any, **extra: Any) -> Provider:
    return build(host="127.0.0.1", port=server.port, security="none", **extra)


def tls(server: SmtpServer, security: str = "starttls", **extra: Any) -> Provider:
    return build(
        host="127.0.0.1", port=server.port, security=security, ca_file=server.ca_file, **extra
    )


def message(**extra: Any) -> Message:
    fields: dict[str, Any] = {
        "sender": Address("ops@example.com", "Ops"),
        "to": [Address("to@example.com", "To Person")],
        "subject": "disk 91% full",
        "text": "web1: disk 91% full\n",
    }
    fields.update(extra)
    return Message(**fields)


def send(provider: Provider, msg: Message | None = None, timeout: float = 5.0) -> Receipt:
    return provider.send(msg or message(), timeout=timeout)


def fails(provider: Provider, msg: Message | None = None, timeout: float = 5.0) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        send(provider, msg, timeout)
    assert PASSWORD not in str(info.value)
    return info.value


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# --- success ---------------------------------------------------------------------------


def test_send_hands_over_envelope_and_data() -> None:
    msg = message(
        cc=[Address("cc@example.com")],
        bcc=[Address("hidden@example.com"), Address("TO@example.com")],  # duplicate To
        reply_to=[Address("replies@example.com")],
        headers=[("X-Job", "backup-42")],
        html="<p>disk <b>91%</b> full</p>",
        attachments=[
            Attachment("report.csv", "text/csv", b"host,use\nweb1,91\n"),
            Attachment("logo.png", "image/png", PNG, inline=True, content_id="logo"),
        ],
    )
    with shared_server() as server:
        receipt = send(plain(server), msg)
        assert server.connections == 1
    assert receipt.provider == "s"
    assert receipt.message_id == msg.message_id
    assert "queued as Q00001" in receipt.detail
    ((mail_from, rcpt_tos, data),) = server.messages
    assert mail_from == "ops@example.com"
    assert rcpt_tos == ["to@example.com", "cc@example.com", "hidden@example.com"]
    got = parsed(data)
    assert "Bcc" not in got and b"hidden@example.com" not in data
    assert got["To"] == "To Person <to@example.com>"
    assert got["Cc"] == "cc@example.com"
    assert got["Reply-To"] == "replies@example.com"
    assert got["X-Job"] == "backup-42"
    assert got["Message-ID"] == msg.message_id
    parts = {p.get_filename(): p for p in got.walk() if p.get_filename()}
    assert parts["report.csv"].get_content().splitlines() == ["host,use", "web1,91"]
    assert parts["logo.png"].get_content() == PNG
    assert parts["logo.png"]["Content-ID"] == "<logo>"


def test_lines_starting_with_a_dot_survive() -> None:
    text = ".hidden\n.\n..two\nend\n"
    with shared_server() as server:
        send(plain(server), message(text=text))
    assert server.messages[0].data.endswith(b"\r\n\r\n.hidden\r\n.\r\n..two\r\nend\r\n")


def test_dot_stuff() -> None:
    assert dot_stuff(b".a\nb\r.c\r\n") == b"..a\r\nb\r\n..c\r\n"
    assert dot_stuff(b"no end") == b"no end\r\n"


def test_eight_bit_body_uses_8bitmime_and_size() -> None:
    with shared_server() as server:
        send(plain(server), message(text="Grüße, 91 % voll\n"))
    (options,) = server.mail_options
    assert "BODY=8BITMIME" in options
    assert any(o.startswith("SIZE=") for o in options)
    assert "Grüße, 91 % voll" in parsed(server.messages[0].data).get_content()


def test_non_ascii_address_uses_smtputf8() -> None:
    # no display name: Address.__str__ (formataddr) cannot format one with a UTF-8 address
    msg = message(to=[Address("jörg@bücher.example")], cc=[Address("cc@example.com", "Jörg")])
    with shared_server() as server:
        send(plain(server), msg)
    assert "SMTPUTF8" in server.mail_options[0]
    assert server.messages[0].rcpt_tos == ["jörg@bücher.example", "cc@example.com"]
    assert "jörg@bücher.example" in parsed(server.messages[0].data)["To"]


def test_non_ascii_address_without_smtputf8_is_rejected() -> None:
    with SmtpServer(smtputf8=False) as server:
        err = fails(plain(server), message(to=[Address("jörg@bücher.example")]))
        assert server.mail_commands == 0
    assert err.outcome is Outcome.REJECTED
    assert "SMTPUTF8" in err.message


def test_message_larger_than_size_is_rejected_before_mail() -> None:
    with SmtpServer(size_limit=2000) as server:
        err = fails(plain(server), message(text="x" * 5000))
        assert server.mail_commands == 0
    assert err.outcome is Outcome.REJECTED
    assert "at most 2000" in err.message


def test_tags_and_metadata_travel_as_header_fields() -> None:
    with shared_server() as server:
        send(plain(server), message(tags=["cron"], metadata={"job": "backup"}))
        [got] = server.messages
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert parsed["X-Mailrelay-Tag"] == "cron"
    assert parsed["X-Mailrelay-Metadata"] == "job=backup"


def test_helo_fallback_for_a_server_without_esmtp() -> None:
    with SmtpServer(fail={"ehlo": "502 5.5.1 command not implemented"}) as server:
        send(plain(server))
    assert len(server.messages) == 1


# --- TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "security"), [("starttls", "starttls"), ("implicit", "tls")])
def test_tls_with_the_private_ca(mode: Any, security: str) -> None:
    with SmtpServer(tls=mode) as server:
        receipt = send(tls(server, security))
        health = tls(server, security).check(timeout=5)
    assert receipt.detail.startswith("2.0.0 Ok")
    assert len(server.messages) == 1
    assert health.ok, health.detail
    assert ("STARTTLS TLSv1" if mode == "starttls" else "TLS TLSv1") in health.detail


@pytest.mark.parametrize(("mode", "security"), [("starttls", "starttls"), ("implicit", "tls")])
def test_untrusted_certificate_is_a_provider_problem(mode: Any, security: str) -> None:
    with SmtpServer(tls=mode) as server:
        cfg = {"host": "127.0.0.1", "port": server.port, "security": security}
        err = fails(build(**cfg))
        health = build(**cfg).check(timeout=5)
        assert server.mail_commands == 0
    assert err.outcome is Outcome.PROVIDER
    assert "certificate verify failed" in err.message
    assert not health.ok and health.outcome is Outcome.PROVIDER


def test_certificate_for_another_host_is_refused() -> None:
    with SmtpServer(tls="implicit", cert_hosts=["mail.example.test"]) as server:
        err = fails(tls(server, "tls"))
    assert err.outcome is Outcome.PROVIDER
    assert "certificate verify failed" in err.message


def test_verify_false_accepts_any_certificate() -> None:
    with SmtpServer(tls="starttls") as server:
        provider = build(host="127.0.0.1", port=server.port, verify=False)
        send(provider)
    assert len(server.messages) == 1
    assert provider.describe()["verify"] == "off"


def test_starttls_required_but_not_offered() -> None:
    with SmtpServer(tls="none") as server:
        err = fails(build(host="127.0.0.1", port=server.port))  # security defaults to starttls
        assert server.mail_commands == 0
    assert err.outcome is Outcome.PROVIDER
    assert "STARTTLS" in err.message


def test_starttls_refused_by_the_server() -> None:
    with SmtpServer(tls="starttls", fail={"starttls": "454 4.7.0 TLS not available"}) as server:
        err = fails(tls(server))
    assert (err.outcome, err.status) == (Outcome.TRANSIENT, 454)


# --- AUTH ------------------------------------------------------------------------------


def test_auth_success() -> None:
    with SmtpServer(tls="starttls", auth={USER: PASSWORD}) as server:
        send(tls(server, username=USER, password=PASSWORD))
    assert server.logins == [USER]
    assert len(server.messages) == 1


def test_auth_failure_is_a_provider_problem_and_hides_the_password() -> None:
    with SmtpServer(tls="starttls", auth={USER: "another"}) as server:
        provider = tls(server, username=USER, password=PASSWORD)
        err = fails(provider)
        health = provider.check(timeout=5)
        assert server.mail_commands == 0
    assert (err.outcome, err.status) == (Outcome.PROVIDER, 535)
    assert err.message.startswith(f"127.0.0.1:{server.port}: 535 5.7.8 ")
    assert not health.ok and health.outcome is Outcome.PROVIDER
    for text in (str(err), err.message, repr(err), health.detail, str(provider.describe())):
        assert PASSWORD not in text


def test_auth_temporary_failure_is_transient() -> None:
    with SmtpServer(
        tls="starttls", auth={USER: PASSWORD}, fail={"auth": "454 4.7.0 try again later"}
    ) as server:
        err = fails(tls(server, username=USER, password=PASSWORD))
    assert (err.outcome, err.status) == (Outcome.TRANSIENT, 454)


def test_auth_not_offered_while_username_is_set() -> None:
    with SmtpServer(tls="starttls") as server:
        err = fails(tls(server, username=USER, password=PASSWORD))
    assert err.outcome is Outcome.PROVIDER
    assert "AUTH" in err.message


def test_server_wants_auth_but_no_username_is_configured() -> None:
    with SmtpServer(tls="starttls", auth={USER: PASSWORD}) as server:
        err = fails(tls(server))
    assert (err.outcome, err.status) == (Outcome.PROVIDER, 530)


def test_password_from_an_unset_environment_variable() -> None:
    with SmtpServer(tls="starttls", auth={USER: PASSWORD}) as server:
        provider = tls(server, username=USER, password={"env": "MAILRELAY_TEST_UNSET_PW"})
        err = fails(provider)
        assert server.mail_commands == 0
    assert err.outcome is Outcome.PROVIDER
    assert "MAILRELAY_TEST_UNSET_PW" in err.message


# --- replies at each stage -------------------------------------------------------------

STAGE_CASES = [
    ("connect", "421 4.3.2 too many connections", Outcome.TRANSIENT),
    ("connect", "554 5.3.2 no SMTP service here", Outcome.PROVIDER),
    ("ehlo", "421 4.3.2 shutting down", Outcome.TRANSIENT),
    ("ehlo", "550 5.7.1 your HELO name is refused", Outcome.PROVIDER),
    ("mail", "451 4.3.0 temporary local problem", Outcome.TRANSIENT),
    ("mail", "550 5.7.1 sender address not verified", Outcome.PROVIDER),
    ("mail", "553 5.1.8 sender domain does not exist", Outcome.PERMANENT),
    ("mail", "552 5.3.4 message size exceeds fixed limit", Outcome.REJECTED),
    ("mail", "550 not today", Outcome.REJECTED),
    ("rcpt", "450 4.2.1 greylisted, try again", Outcome.TRANSIENT),
    ("rcpt", "550 5.1.1 no such user here", Outcome.PERMANENT),
    ("rcpt", "554 5.7.1 relay access denied", Outcome.PROVIDER),
    ("rcpt", "550 mailbox unavailable", Outcome.REJECTED),
    ("data_cmd", "451 4.3.0 try later", Outcome.TRANSIENT),
    ("data_cmd", "554 5.5.1 no valid recipients", Outcome.REJECTED),
    ("data", "452 4.3.1 insufficient system storage", Outcome.TRANSIENT),
    ("data", "552 5.3.4 message too big", Outcome.REJECTED),
    ("data", "554 5.6.0 malformed message content", Outcome.PERMANENT),
    ("data", "550 5.7.1 message looks like spam", Outcome.PROVIDER),
    ("data", "554 transaction failed", Outcome.REJECTED),
]


@pytest.mark.parametrize(("stage", "reply", "outcome"), STAGE_CASES)
def test_reply_at_each_stage(stage: str, reply: str, outcome: Outcome) -> None:
    with SmtpServer(fail={stage: reply}) as server:
        err = fails(plain(server))
        assert server.messages == []
    assert err.outcome is outcome
    assert err.status == int(reply[:3])
    assert err.message.startswith(f"127.0.0.1:{server.port}: {reply}")


def test_classify_reply_table() -> None:
    assert classify_reply("AUTH", 535, "5.7.8 Authentication failed") is Outcome.PROVIDER
    assert classify_reply("AUTH", 534, "5.7.9 mechanism too weak") is Outcome.PROVIDER
    assert classify_reply("RCPT TO", 550, "5.1.1 unknown") is Outcome.PERMANENT
    assert classify_reply("RCPT TO", 552, "too many recipients") is Outcome.REJECTED
    assert classify_reply("DATA", 554, "5.3.4 too big") is Outcome.REJECTED
    assert classify_reply("MAIL FROM", 530, "authentication required") is Outcome.PROVIDER
    assert classify_reply("end of data", 250, "ok?") is Outcome.PROVIDER  # not a refusal
    assert enhanced_code(550, "5.1.1 x") == "5.1.1"
    assert enhanced_code(550, "4.1.1 class differs") is None
    assert enhanced_code(550, "5.1.1.9 not one") is None


def test_some_recipients_refused_is_accepted_and_named() -> None:
    fail = {"rcpt:bad@example.com": "550 5.1.1 no such user"}
    msg = message(to=[Address("to@example.com"), Address("bad@example.com")])
    with SmtpServer(fail=fail) as server:
        receipt = send(plain(server), msg)
    assert server.messages[0].rcpt_tos == ["to@example.com"]
    assert "refused: bad@example.com (550 5.1.1 no such user)" in receipt.detail


@pytest.mark.parametrize(
    ("second", "outcome"),
    [
        ("550 5.1.1 no such user", Outcome.PERMANENT),
        ("450 4.2.1 greylisted", Outcome.TRANSIENT),
        ("554 5.7.1 relay denied", Outcome.PROVIDER),
    ],
)
def test_every_recipient_refused(second: str, outcome: Outcome) -> None:
    fail = {"rcpt:a@example.com": "550 5.1.1 no such user", "rcpt:b@example.com": second}
    msg = message(to=[Address("a@example.com"), Address("b@example.com")])
    with SmtpServer(fail=fail) as server:
        err = fails(plain(server), msg)
        assert server.messages == []
    assert err.outcome is outcome
    assert "a@example.com" in err.message and "b@example.com" in err.message


# --- the connection --------------------------------------------------------------------


def test_refused_port_is_transient(dead_port: int) -> None:
    err = fails(build(host="127.0.0.1", port=dead_port, security="none"))
    assert err.outcome is Outcome.TRANSIENT
    assert "refused" in err.message


def test_server_that_closes_at_once() -> None:
    with closing_server() as server:
        err = fails(plain(server))
        assert server.connections == 1
    assert err.outcome is Outcome.TRANSIENT
    assert "closed" in err.message


def test_server_that_never_answers() -> None:
    with silent_server() as server:
        started = time.monotonic()
        err = fails(plain(server), timeout=0.5)
        elapsed = time.monotonic() - started
        assert server.connections == 1
    assert err.outcome is Outcome.TRANSIENT
    assert "no answer within 0.5 s" in err.message
    assert elapsed < 2


def test_configured_timeout_bounds_the_attempt() -> None:
    with silent_server() as server:
        started = time.monotonic()
        err = fails(plain(server, timeout=0.5), timeout=30)
        assert time.monotonic() - started < 2
    assert err.outcome is Outcome.TRANSIENT


def test_connection_lost_before_the_data_is_transient() -> None:
    with SmtpServer(fail={"mail": "close"}) as server:
        err = fails(plain(server))
    assert err.outcome is Outcome.TRANSIENT


def test_hang_after_data_is_ambiguous() -> None:
    with SmtpServer(hang_after_data=True) as server:
        started = time.monotonic()
        err = fails(plain(server), timeout=0.5)
        assert time.monotonic() - started < 2
    assert err.outcome is Outcome.AMBIGUOUS
    assert "may have been accepted" in err.message


def test_connection_closed_after_data_is_ambiguous() -> None:
    with SmtpServer(fail={"data": "close"}) as server:
        err = fails(plain(server))
    assert err.outcome is Outcome.AMBIGUOUS


def test_hang_at_rcpt_is_transient() -> None:
    with SmtpServer(fail={"rcpt": "hang"}) as server:
        err = fails(plain(server), timeout=0.5)
    assert err.outcome is Outcome.TRANSIENT


# --- check() ---------------------------------------------------------------------------


def test_check_healthy_sends_no_mail() -> None:
    with SmtpServer(tls="starttls", auth={USER: PASSWORD}) as server:
        health = tls(server, username=USER, password=PASSWORD).check(timeout=5)
        assert server.mail_commands == 0
        assert server.messages == []
    assert health.ok and health.outcome is None
    assert health.detail.startswith("ESMTP mx.mailrelay.test; STARTTLS TLSv1")
    assert "AUTH ok" in health.detail and "SIZE 33554432" in health.detail


def test_check_plain_server() -> None:
    with shared_server() as server:
        health = plain(server).check(timeout=5)
    assert health.ok
    assert "no TLS" in health.detail


@pytest.mark.parametrize(
    ("fail", "outcome"),
    [
        ({"noop": "421 4.3.2 closing"}, Outcome.TRANSIENT),
        ({"ehlo": "554 5.7.1 go away"}, Outcome.PROVIDER),
        ({"connect": "421 4.3.2 busy"}, Outcome.TRANSIENT),
    ],
)
def test_check_failing_replies(fail: dict[str, str], outcome: Outcome) -> None:
    with SmtpServer(fail=fail) as server:
        health = plain(server).check(timeout=5)
    assert not health.ok
    assert health.outcome is outcome
    assert health.detail.startswith(f"127.0.0.1:{server.port}: ")


def test_check_failing_connections(dead_port: int) -> None:
    health = build(host="127.0.0.1", port=dead_port, security="none").check(timeout=5)
    assert (health.ok, health.outcome) == (False, Outcome.TRANSIENT)
    with silent_server() as server:
        health = plain(server).check(timeout=0.5)
    assert (health.ok, health.outcome) == (False, Outcome.TRANSIENT)
    with shared_server() as server:  # STARTTLS required, not offered
        health = build(host="127.0.0.1", port=server.port).check(timeout=5)
    assert (health.ok, health.outcome) == (False, Outcome.PROVIDER)


# --- configuration and URLs ------------------------------------------------------------


def from_url(url: str) -> SmtpProvider:
    (spec,) = specs_from_urls([url], "--provider")
    provider = registry.build(spec)
    assert isinstance(provider, SmtpProvider)
    return provider


def test_url_with_percent_encoded_credentials_sends() -> None:
    with SmtpServer(tls="starttls", auth={USER: PASSWORD}) as server:
        provider = from_url(
            "smtp://ops%40example.com:pw-Zq8%21x%2540%3A%2Fsecret@127.0.0.1:"
            f"{server.port}?security=starttls&ca_file={server.ca_file}"
        )
        send(provider)
    assert server.logins == [USER]
    assert provider.describe() == {
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": "starttls",
        "username": USER,
        "ca_file": server.ca_file,
    }


def test_smtps_url_is_implicit_tls_on_465() -> None:
    provider = from_url("smtps://u:p4ss@smtp.example.com")
    assert (provider.security, provider.port, provider.host) == ("tls", 465, "smtp.example.com")
    with SmtpServer(tls="implicit") as server:
        send(from_url(f"smtps://127.0.0.1:{server.port}?ca_file={server.ca_file}"))
    assert len(server.messages) == 1


def test_smtp_url_forms() -> None:
    provider = from_url("smtp://smtp.example.com")
    assert (provider.security, provider.port) == ("starttls", 587)
    provider = from_url("smtp://relay.example.com?security=none")
    assert (provider.security, provider.port) == ("none", 25)
    with shared_server() as server:
        send(from_url(f"smtp://127.0.0.1:{server.port}?security=none&timeout=5"))
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    "url",
    [
        "smtps://h.example.com?security=starttls",
        "smtp:///no-host",
        "smtp://h.example.com/path",
        "smtp://h.example.com?security=ssl",
        "smtp://u@h.example.com",  # username without password
        "smtp://h.example.com?colour=blue",  # unknown key
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        from_url(url)


def test_config_defaults_and_describe() -> None:
    provider = build(host="smtp.example.com", username=USER, password=PASSWORD)
    assert isinstance(provider, SmtpProvider)
    assert (provider.security, provider.port, provider.timeout) == ("starttls", 587, 30.0)
    assert provider.describe() == {
        "host": "smtp.example.com",
        "port": "587",
        "security": "starttls",
        "username": USER,
    }
    assert PASSWORD not in repr(provider.describe())
    tls_provider = build(host="smtp.example.com", security="tls", helo="me.example.com")
    assert tls_provider.describe()["port"] == "465"
    assert tls_provider.describe()["helo"] == "me.example.com"


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({}, "host"),
        ({"host": "smtp.example.com", "username": USER}, "password"),
        ({"host": "smtp.example.com", "password": PASSWORD}, "password"),
        ({"host": "smtp.example.com", "security": "ssl"}, "security"),
        ({"host": "smtp.example.com", "port": 0}, "port"),
        ({"host": "smtp.example.com:587"}, "host"),
        ({"host": "smtp.example.com", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"host": "smtp.example.com", "verify": "maybe"}, "verify"),
        ({"host": "smtp.example.com", "helo": "two words"}, "helo"),
        ({"host": "smtp.example.com", "api_key": "x"}, "api_key"),
    ],
)
def test_config_errors_name_the_key(cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**cfg)
    assert info.value.key == key
    assert PASSWORD not in str(info.value)


# --- connection reuse (send --batch) ---------------------------------------------------


class _Once(dict[str, str]):
    """A `fail` table whose every failure happens once: the server's `get` pops it."""

    def get(self, key: str, default: Any = None) -> Any:
        return self.pop(key, default)


def reusing(server: SmtpServer, **extra: Any) -> SmtpProvider:
    provider = plain(server, **extra)
    assert isinstance(provider, SmtpProvider)
    provider.reuse_connections = True
    return provider


def numbered(i: int) -> Message:
    return message(subject=f"message {i}", to=[Address(f"user{i}@example.com")])


def test_single_sends_open_one_connection_each_by_default() -> None:
    with shared_server() as server:
        provider = plain(server)
        send(provider)
        send(provider)
        assert server.connections == 2 and len(server.messages) == 2


def test_reuse_sends_many_messages_over_one_connection_per_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with SmtpServer(auth={"ops": PASSWORD}, tls="starttls") as server:
        provider = tls(server, username="ops", password=PASSWORD)
        assert isinstance(provider, SmtpProvider)
        provider.reuse_connections = True
        with ThreadPoolExecutor(max_workers=4) as pool:
            receipts = list(pool.map(lambda i: send(provider, numbered(i)), range(20)))
        provider.close()
        assert len(receipts) == 20
        assert 1 <= server.connections <= 4
        assert len(server.logins) == server.connections  # AUTH once per connection
        got = sorted(m.rcpt_tos[0] for m in server.messages)
        assert got == sorted(f"user{i}@example.com" for i in range(20))
        send(provider)  # after close() a new connection is made
        provider.close()
        assert server.connections <= 5 and len(server.messages) == 21


@pytest.mark.parametrize("reply", ["close", "421 4.4.2 idle for too long, closing"])
def test_reuse_reconnects_once_when_the_server_dropped_the_idle_connection(reply: str) -> None:
    with shared_server() as server:
        provider = reusing(server)
        send(provider, numbered(1))
        assert server.connections == 1
        server.fail = _Once({"mail": reply})  # the kept connection fails at MAIL FROM, once
        receipt = send(provider, numbered(2))
        assert receipt.provider == "s"
        send(provider, numbered(3))  # and the new connection is kept in turn
        provider.close()
        assert server.connections == 2
        assert [m.rcpt_tos for m in server.messages] == [
            [f"user{i}@example.com"] for i in (1, 2, 3)
        ]


def test_reuse_keeps_reporting_real_failures() -> None:
    with shared_server() as server:
        provider = reusing(server)
        send(provider, numbered(1))
        server.fail["rcpt"] = "550 5.1.1 no such user"
        err = fails(provider, numbered(2))
        assert err.outcome is Outcome.PERMANENT and "5.1.1" in err.message
        del server.fail["rcpt"]
        send(provider, numbered(3))  # the failed session was closed; a fresh one works
        server.fail["mail"] = "451 4.3.0 try later"  # a 4xx that is not 421: not a reconnect
        err = fails(provider, numbered(4))
        assert err.outcome is Outcome.TRANSIENT and "451" in err.message
        provider.close()
        assert len(server.messages) == 2 and server.connections == 2


def test_reuse_times_out_on_a_silent_kept_connection() -> None:
    with shared_server() as server:
        provider = reusing(server, timeout=1)
        send(provider, numbered(1))
        server.fail["mail"] = "hang"
        err = fails(provider, numbered(2), timeout=1)
        assert err.outcome is Outcome.TRANSIENT and "no answer within" in err.message
        provider.close()
        assert server.connections == 1  # a timeout is a failure, not a reason to reconnect

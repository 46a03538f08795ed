"""Amazon SES events through SNS: signatures checked with the certificate fetched from the
pinned host (here a loopback stand-in allowed by MAILRELAY_TEST_SNS_HOSTS, a trustme
certificate), the TopicArn allowlist, subscriptions confirmed only for allowed topics."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrelay.events import WebhookError, WebhookRequest, read_events, sns, webhook_settings
from mailrelay.providers.options import ProviderSpec
from tests.snsstandin import TOPIC, StandIn, ses_bounce, sns_message, sns_stand_in

NOW = datetime.datetime.now


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    with sns_stand_in(tmp_path) as server:
        monkeypatch.setenv("MAILRELAY_TEST_SNS_HOSTS", server.host)
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        sns._cache.clear()
        yield server


def read(body: bytes):  # type: ignore[no-untyped-def]
    table = {"name": "ses1", "type": "ses", "sns_topic_arns": [TOPIC]}
    settings = webhook_settings(ProviderSpec("ses1", "ses", table, "test.toml"))
    request = WebhookRequest("https://relay.example/v1/webhooks/ses1", {}, body)
    return read_events(request, settings, NOW(datetime.timezone.utc))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_bounce_for_two_recipients_is_two_bounced_events(
    stand_in: StandIn, version: str
) -> None:
    body = sns_message(
        stand_in.host, message=ses_bounce(["a@example.org", "b@example.org"]), version=version
    )
    events = read(body).events
    assert [(e.event, e.reject_reason, e.recipient) for e in events] == [
        ("bounced", "bounced", "a@example.org"),
        ("bounced", "bounced", "b@example.org"),
    ]
    assert events[0].event_id != events[1].event_id


def test_a_changed_message_fails_the_signature(stand_in: StandIn) -> None:
    body = sns_message(stand_in.host, message=ses_bounce(["a@example.org"]))
    with pytest.raises(WebhookError) as caught:
        read(body.replace(b"a@example.org", b"z@example.org"))
    assert caught.value.kind == "forged"


def test_a_topic_not_allowed_is_refused_before_any_fetch(stand_in: StandIn) -> None:
    other = "arn:aws:sns:eu-west-1:999999999999:someone-elses"
    body = sns_message(stand_in.host, "SubscriptionConfirmation", topic=other)
    with pytest.raises(WebhookError, match="sns_topic_arns"):
        read(body)
    assert stand_in.confirmations == 0


def test_a_subscription_for_an_allowed_topic_is_confirmed(stand_in: StandIn) -> None:
    reading = read(sns_message(stand_in.host, "SubscriptionConfirmation"))
    assert reading.confirmed and reading.events == []
    assert stand_in.confirmations == 1


def test_a_certificate_on_a_foreign_host_is_refused(stand_in: StandIn) -> None:
    url = "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem"
    body = sns_message(stand_in.host, message=ses_bounce(["a@example.org"]), cert_url=url)
    with pytest.raises(WebhookError, match="not on an sns"):
        read(body)


def test_a_stale_message_is_refused(stand_in: StandIn) -> None:
    old = NOW(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    body = sns_message(stand_in.host, message=ses_bounce(["a@example.org"]), at=old)
    with pytest.raises(WebhookError) as caught:
        read(body)
    assert caught.value.kind == "stale"


def test_the_test_hosts_setting_takes_loopback_addresses_only() -> None:
    assert sns.test_hosts({"MAILRELAY_TEST_SNS_HOSTS": "127.0.0.1:8443, [::1]:9"}) == {
        "127.0.0.1:8443",
        "[::1]:9",
    }
    for foreign in ("10.0.0.1:443", "example.com:443", "localhost:443"):
        with pytest.raises(WebhookError, match="loopback"):
            sns.test_hosts({"MAILRELAY_TEST_SNS_HOSTS": foreign})


def test_without_the_setting_the_stand_in_is_a_foreign_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sns_stand_in(tmp_path) as server:
        monkeypatch.delenv("MAILRELAY_TEST_SNS_HOSTS", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        with pytest.raises(WebhookError, match="not on an sns"):
            read(sns_message(server.host, message=ses_bounce(["a@example.org"])))

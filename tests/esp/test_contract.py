"""The contract every HTTP provider adapter keeps, run against each provider's fake server.

Each `fake_<type>.py` beside this file speaks one provider's documented API on loopback; the
same cases run through every one of them: payload and auth, success and message id, each
documented error class, 429 with and without Retry-After, timeout, refused connections,
non-JSON and empty error bodies, missing credentials, the provider's words surfaced, secrets
absent from errors, the health check, the URL form, sandbox and idempotency.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from mailrelay.config import specs_from_urls
from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment, Message, build_message
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome, Provider
from mailrelay.providers.httpapi import HttpProvider
from mailrelay.providers.options import ProviderSpec, ProviderURL
from mailrelay.providers.postmark import PostmarkProvider
from mailrelay.providers.ses import SesProvider
from tests.esp.conftest import send_error_factory, serve
from tests.esp.fake_mailgun import FakeMailgun
from tests.esp.fake_postmark import FakePostmark
from tests.esp.fake_sendgrid import FakeSendgrid
from tests.esp.fake_ses import AKID as SES_AKID
from tests.esp.fake_ses import CONFIG_SET as SES_CONFIG_SET
from tests.esp.fake_ses import SECRET as SES_SECRET
from tests.esp.fake_ses import SESSION_TOKEN as SES_SESSION_TOKEN
from tests.esp.fakebase import FAKE_MODULES, FakeESP, server_base_url

EVERY_FAKE = True  # a test taking `fake` runs over every provider fake (tests/conftest.py)
HTTP_TYPES = [t for t in registry.BUILTIN if t not in ("smtp", "outbox", "sendmail")]
MAILGUN_KEY = FakeMailgun.API_KEY
POSTMARK_TOKEN = FakePostmark.TOKEN
SENDGRID_KEY = FakeSendgrid.API_KEY
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_every_http_provider_has_a_fake() -> None:
    assert sorted(m.removeprefix("fake_") for m in FAKE_MODULES) == sorted(HTTP_TYPES)


def build(fake: FakeESP, server: HTTPServer, **overrides: Any) -> Provider:
    cfg = {**fake.config(server_base_url(server)), **overrides}
    return registry.build(ProviderSpec(cfg.get("name", fake.type), fake.type, cfg, "test"))


def simple() -> Message:
    return build_message(
        sender="Ops <ops@example.com>",
        to=["a@example.com"],
        subject="Disk full",
        text="disk 91% full\n",
        html="<p>disk 91% full</p>",
    )


def full(provider: Provider) -> Message:
    """A message using every optional part the provider declares it can carry."""
    caps = provider.capabilities
    attachments = []
    if "attachments" in caps:
        attachments.append(Attachment("report.csv", "text/csv", b"a,b\n1,2\n"))
    if "inline" in caps:
        attachments.append(Attachment("logo.png", "image/png", PNG, inline=True, content_id="logo"))
    tags = ["deploy", "web1"][: provider.max_tags or 2] if "tags" in caps else []
    return Message(
        sender=build_message(
            sender="Ops Team <ops@example.com>", to=["x@example.com"], text="x"
        ).sender,
        to=build_message(
            sender="o@example.com", to=["a@example.com", "Bee <b@example.com>"], text="x"
        ).to,
        cc=build_message(sender="o@example.com", to=["c@example.com"], text="x").to
        if "cc" in caps
        else [],
        bcc=build_message(sender="o@example.com", to=["d@example.com"], text="x").to
        if "bcc" in caps
        else [],
        reply_to=build_message(sender="o@example.com", to=["r@example.com"], text="x").to
        if "reply_to" in caps
        else [],
        subject="Héllo ✓ report",
        text="plain body\n",
        html='<p>html body <img src="cid:logo"></p>',
        headers=[("X-Ticket", "42")] if "headers" in caps else [],
        attachments=attachments,
        tags=tags,
        metadata={"run": "7", "host": "web1"} if "metadata" in caps else {},
    )


def same_body(got: str, want: str) -> bool:
    """Bodies match up to line-end style and one final line break (raw MIME adds one)."""
    return got.replace("\r\n", "\n").rstrip("\n") == want.rstrip("\n")


send_error = send_error_factory(simple)


def assert_no_secret(fake: FakeESP, *texts: str) -> None:
    for secret in fake.secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text}"


def test_success_returns_the_provider_message_id(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    assert isinstance(provider, HttpProvider)
    receipt = provider.send(simple(), timeout=5)
    assert receipt.provider == provider.name
    assert receipt.message_id and receipt.message_id == fake.last_message_id
    assert len(fake.sent) == 1
    got = fake.normalize(fake.sent[0])
    assert got["from"] == "Ops <ops@example.com>"
    assert got["to"] == ["a@example.com"]
    assert got["subject"] == "Disk full"
    assert same_body(got["text"], "disk 91% full\n")
    assert same_body(got["html"], "<p>disk 91% full</p>")


def test_full_message_is_carried_field_by_field(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    message = full(provider)
    provider.send(message, timeout=5)
    got = fake.normalize(fake.sent[-1])
    caps = provider.capabilities
    assert got["from"] == "Ops Team <ops@example.com>"
    assert got["to"] == ["a@example.com", "Bee <b@example.com>"]
    assert got["subject"] == "Héllo ✓ report"
    assert same_body(got["text"], "plain body\n")
    assert same_body(got["html"], message.html or "")
    if "cc" in caps:
        assert got["cc"] == ["c@example.com"]
    if "bcc" in caps:
        assert got["bcc"] == ["d@example.com"]
    if "reply_to" in caps:
        assert got["reply_to"] == ["r@example.com"]
    if "headers" in caps:
        assert got["headers"].get("X-Ticket") == "42"
    if "attachments" in caps:
        assert ("report.csv", "text/csv", b"a,b\n1,2\n") in got["attachments"]
    if "inline" in caps:
        assert ("logo", "image/png", PNG) in got["inline"]
    if "tags" in caps:
        assert got["tags"] == message.tags
    if "metadata" in caps:
        assert got["metadata"] == {"run": "7", "host": "web1"}


def test_what_a_provider_cannot_carry_is_refused_not_dropped(
    fake: FakeESP, httpserver: HTTPServer
) -> None:
    provider = build(fake, httpserver)
    extra = build_message(sender="o@example.com", to=["z@example.com"], text="x").to
    uses: dict[str, dict[str, Any]] = {
        "cc": {"cc": extra},
        "bcc": {"bcc": extra},
        "reply_to": {"reply_to": extra},
        "headers": {"headers": [("X-Ticket", "42")]},
        "attachments": {"attachments": [Attachment("a.txt", "text/plain", b"x")]},
        "inline": {
            "attachments": [Attachment("l.png", "image/png", PNG, inline=True, content_id="l")]
        },
        "tags": {"tags": ["t"]},
        "metadata": {"metadata": {"k": "v"}},
    }
    for feature, fields in uses.items():
        if feature in provider.capabilities:
            continue
        message = simple()
        for attr, value in fields.items():
            setattr(message, attr, value)
        err = send_error(provider, message)
        assert err.outcome is Outcome.REJECTED, feature
        assert feature.replace("_", "-") in err.message
    assert fake.requests == []


def test_too_many_tags_are_refused(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    if provider.max_tags is None or "tags" not in provider.capabilities:
        pytest.skip("no tag limit")
    message = simple()
    message.tags = [f"t{i}" for i in range(provider.max_tags + 1)]
    assert send_error(provider, message).outcome is Outcome.REJECTED
    assert fake.requests == []


def test_declared_limits_are_refused_before_any_request(
    fake: FakeESP, httpserver: HTTPServer
) -> None:
    provider = build(fake, httpserver)
    breaking: dict[str, dict[str, Any]] = {}
    if provider.max_recipients is not None:
        many = [Address(f"u{i}@example.com") for i in range(provider.max_recipients + 1)]
        breaking["max_recipients"] = {"to": many}
    if provider.single_reply_to:
        breaking["single_reply_to"] = {
            "reply_to": [Address("r@example.com"), Address("s@example.com")]
        }
    if provider.needs_to:
        breaking["needs_to"] = {"to": [], "bcc": [Address("b@example.com")]}
    if provider.needs_body:
        breaking["needs_body"] = {"text": None, "html": None}
    if provider.needs_subject:
        breaking["needs_subject"] = {"subject": ""}
    if not breaking:
        pytest.skip("no declared limit")
    for limit, fields in breaking.items():
        message = simple()
        for attr, value in fields.items():
            setattr(message, attr, value)
        assert send_error(provider, message).outcome is Outcome.REJECTED, limit
    assert fake.requests == []


def test_documented_scenarios_are_required(fake: FakeESP) -> None:
    assert {"auth", "invalid", "rate_limit", "server_error"} <= set(fake.scenarios)


def test_each_documented_error_is_classified(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    for name, scenario in fake.scenarios.items():
        fake.fail_next(scenario.response())
        err = send_error(provider)
        assert err.outcome is scenario.outcome, f"{fake.type} {name}: {err}"
        assert scenario.words in err.message, f"{fake.type} {name}: {err.message!r}"
        if scenario.retry_after is not None:
            assert err.retry_after == pytest.approx(scenario.retry_after, abs=2), name
        if scenario.limited is not None:
            assert err.limited == scenario.limited, f"{fake.type} {name}: {err.limited}"
        assert_no_secret(fake, str(err), err.message, repr(err))
    assert fake.sent == []


def test_rate_limit_with_retry_after(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    response = fake.scenarios["rate_limit"].response()
    response.headers["Retry-After"] = "7"
    fake.fail_next(response)
    err = send_error(provider)
    assert err.outcome is Outcome.TRANSIENT and err.retry_after == 7
    assert err.status == 429
    assert err.limited == "rate"  # a pace, not an outage: no failure counted (engine.record)


def test_html_503_from_a_proxy(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    fake.fail_next(
        Response(
            "<html><body><h1>503 Service Unavailable</h1></body></html>",
            503,
            content_type="text/html",
        )
    )
    err = send_error(provider)
    assert err.outcome is Outcome.TRANSIENT and "503" in err.message


@pytest.mark.parametrize("status", [400, 500, 502])
def test_empty_error_bodies(fake: FakeESP, httpserver: HTTPServer, status: int) -> None:
    provider = build(fake, httpserver)
    fake.fail_next(Response(b"", status))
    err = send_error(provider)
    assert str(status) in err.message
    if status >= 500:
        assert err.outcome is Outcome.TRANSIENT


def test_a_server_that_never_answers_is_ambiguous(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)

    def slow(request: Request) -> Response:
        time.sleep(1.2)
        return Response("late", 200)

    httpserver.clear_all_handlers()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(slow)
    started = time.monotonic()
    err = send_error(provider, timeout=0.4)
    assert err.outcome is Outcome.AMBIGUOUS
    assert time.monotonic() - started < 1.2


def test_a_refused_port_is_transient(fake: FakeESP, dead_port: int) -> None:
    cfg = {**fake.config(f"http://127.0.0.1:{dead_port}")}
    provider = registry.build(ProviderSpec(fake.type, fake.type, cfg, "test"))
    err = send_error(provider)
    assert err.outcome is Outcome.TRANSIENT
    assert provider.check(timeout=2).ok is False


def test_missing_credentials_are_config_errors(fake: FakeESP, httpserver: HTTPServer) -> None:
    for key in fake.credential_keys:
        cfg = fake.config(server_base_url(httpserver))
        del cfg[key]
        with pytest.raises(ConfigError) as info:
            registry.build(ProviderSpec(fake.type, fake.type, cfg, "cfg.toml"))
        assert f"key {key!r}" in str(info.value)


def test_unset_env_secret_fails_at_send(fake: FakeESP, httpserver: HTTPServer) -> None:
    key = fake.credential_keys[0]
    provider = build(fake, httpserver, **{key: {"env": "MAILRELAY_TEST_UNSET_VARIABLE"}})
    with pytest.raises(ConfigError) as info:
        provider.send(simple(), timeout=5)
    assert "MAILRELAY_TEST_UNSET_VARIABLE" in str(info.value)
    assert fake.requests == []


def test_unknown_keys_are_refused(fake: FakeESP, httpserver: HTTPServer) -> None:
    with pytest.raises(ConfigError) as info:
        build(fake, httpserver, colour="blue")
    assert "'colour'" in str(info.value)


def test_health_check_sends_nothing(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    health = provider.check(timeout=5)
    assert health.ok, health.detail
    assert fake.sent == [] and len(fake.requests) >= 1
    assert provider.health_check


def test_health_check_with_bad_credentials(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver)
    fake.fail_next(fake.scenarios["auth"].response())
    health = provider.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert_no_secret(fake, health.detail)


def test_url_form(fake: FakeESP, httpserver: HTTPServer) -> None:
    url = fake.url(server_base_url(httpserver))
    (spec,) = specs_from_urls([url], "--provider")
    cfg = fake.config(server_base_url(httpserver))
    for key in fake.credential_keys:
        assert spec.values[key] == cfg[key], key
    provider = registry.build(spec)
    assert provider.type == fake.type
    receipt = provider.send(simple(), timeout=5)
    assert receipt.message_id == fake.last_message_id
    for secret in fake.secrets:
        assert secret not in str(spec.values.get("base_url", ""))
    assert quote(server_base_url(httpserver), safe="") in url or server_base_url(httpserver) in url


def test_sandbox_is_one_config_key(fake: FakeESP, httpserver: HTTPServer) -> None:
    provider = build(fake, httpserver, sandbox=True) if _has(fake, "sandbox") else None
    if provider is None:
        with pytest.raises(ConfigError):
            build(fake, httpserver, sandbox=True)
        return
    provider.send(simple(), timeout=5)
    assert fake.normalize(fake.sent[-1])["sandbox"] is True
    plain = build(fake, httpserver)
    plain.send(simple(), timeout=5)
    assert fake.normalize(fake.sent[-1])["sandbox"] is False


def test_idempotency_key_is_stable_per_message(fake: FakeESP, httpserver: HTTPServer) -> None:
    if not _has(fake, "idempotency"):
        pytest.skip(f"{fake.type} has no idempotency key")
    provider = build(fake, httpserver)
    message = simple()
    provider.send(message, timeout=5)
    provider.send(message, timeout=5)
    provider.send(simple(), timeout=5)
    keys = [fake.normalize(p)["idempotency_key"] for p in fake.sent]
    assert keys[0] and keys[0] == keys[1] != keys[2]


def _has(fake: FakeESP, capability: str) -> bool:
    return capability in registry.get(fake.type).capabilities


# --- URL forms, provider by provider ------------------------------------------------------

BAD_URLS: list[tuple[str, str | None, tuple[str, ...]]] = [
    # (URL, words the error must hold, secrets it must not hold)
    ("brevo://", None, ("s3cr3t",)),
    ("brevo://:s3cr3t@", None, ("s3cr3t",)),
    ("brevo://s3cr3t@api.brevo.com", None, ("s3cr3t",)),
    ("brevo://s3cr3t@/v3", None, ("s3cr3t",)),
    ("mailersend://", "API token", ()),
    ("mailersend://T@api.mailersend.com", "no host", ()),
    (f"mailgun://{MAILGUN_KEY}@", None, (MAILGUN_KEY,)),
    ("mailgun://mg.example.com", None, (MAILGUN_KEY,)),
    (f"mailgun://{MAILGUN_KEY}@mg.example.com:8/x", None, (MAILGUN_KEY,)),
    ("mailjet://KEY@", "secret key", ()),
    ("mailjet://KEY:SECRET@api.mailjet.com", "no host", ()),
    ("mandrill://", None, ("s3cr3t",)),
    ("mandrill://:s3cr3t@", None, ("s3cr3t",)),
    ("mandrill://s3cr3t@mandrillapp.com", None, ("s3cr3t",)),
    ("mandrill://s3cr3t@/x", None, ("s3cr3t",)),
    (f"postmark://{POSTMARK_TOKEN}", None, (POSTMARK_TOKEN, POSTMARK_TOKEN.lower())),
    ("postmark://", None, (POSTMARK_TOKEN, POSTMARK_TOKEN.lower())),
    (f"postmark://{POSTMARK_TOKEN}@host", None, (POSTMARK_TOKEN, POSTMARK_TOKEN.lower())),
    ("resend://", None, ("s3cr3t",)),
    ("resend://:s3cr3t@", None, ("s3cr3t",)),
    ("resend://s3cr3t@api.resend.com", None, ("s3cr3t",)),
    ("resend://s3cr3t@/x", None, ("s3cr3t",)),
    (f"sendgrid://{SENDGRID_KEY}", None, (SENDGRID_KEY, SENDGRID_KEY.lower())),
    ("sendgrid://", None, (SENDGRID_KEY, SENDGRID_KEY.lower())),
    (f"sendgrid://x:{SENDGRID_KEY}@", None, (SENDGRID_KEY, SENDGRID_KEY.lower())),
    (f"ses://{SES_AKID}@eu-west-1", "access key id and secret", (SES_SECRET, "abc")),
    ("ses://eu-west-1", "access key id and secret", (SES_SECRET, "abc")),
    (
        f"ses://{SES_AKID}:{SES_SECRET.replace('/', '%2F')}@",
        "region as the host",
        (SES_SECRET, "abc"),
    ),
    (f"ses://{SES_AKID}:abc@eu-west-1/my-set", "configuration_set", (SES_SECRET, "abc")),
    ("sparkpost://KEY@api.example.com", "region", ()),
    ("sparkpost://eu", "API key", ()),
]


@pytest.mark.parametrize(("raw", "words", "secrets"), BAD_URLS)
def test_bad_url_forms_are_config_errors_without_the_secret(
    raw: str, words: str | None, secrets: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        specs_from_urls([raw], "--provider")
    text = str(info.value)
    if words is not None:
        assert words in text
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize(
    ("raw", "values"),
    [
        ("mailersend://mlsn.TOKEN@", {"api_token": "mlsn.TOKEN"}),
        ("mailjet://KEY:SECRET@", {"api_key": "KEY", "secret_key": "SECRET"}),
        ("mailjet://K%40Y:S%3AC@", {"api_key": "K@Y", "secret_key": "S:C"}),
        ("sparkpost://KEY@", {"api_key": "KEY"}),
        ("sparkpost://KEY@eu", {"api_key": "KEY", "region": "eu"}),
    ],
)
def test_url_form_values(raw: str, values: dict[str, str]) -> None:
    url = ProviderURL.parse(raw, "--provider")
    type_ = registry.type_for_scheme(url.scheme)
    assert type_ is not None
    assert registry.get(type_).config_from_url(url) == values


@pytest.mark.parametrize(
    ("raw", "values", "base_url"),
    [
        (
            f"mailgun://{MAILGUN_KEY}@mg.example.com?region=eu",
            {"api_key": MAILGUN_KEY, "domain": "mg.example.com"},
            "https://api.eu.mailgun.net",
        ),
        (
            f"mailgun://api:{MAILGUN_KEY}@mg.example.com?region=eu",
            {"api_key": MAILGUN_KEY, "domain": "mg.example.com"},
            "https://api.eu.mailgun.net",
        ),
        (
            f"ses://{SES_AKID}:abc%2Bdef@ap-northeast-1",
            {},
            "https://email.ap-northeast-1.amazonaws.com",
        ),
        ("sparkpost://KEY@?region=eu", {}, "https://api.eu.sparkpost.com/api/v1"),
    ],
)
def test_url_form_picks_the_regional_host(raw: str, values: dict[str, str], base_url: str) -> None:
    (spec,) = specs_from_urls([raw], "--provider")
    for key, value in values.items():
        assert spec.values[key] == value
    provider = registry.build(spec)
    assert isinstance(provider, HttpProvider) and isinstance(provider, registry.get(spec.type))
    assert provider.base_url == base_url


def test_brevo_url_form_turns_sandbox_on(httpserver: HTTPServer) -> None:
    fake = serve("brevo", httpserver)
    url = fake.url(server_base_url(httpserver)) + "&sandbox=true"
    (spec,) = specs_from_urls([url], "--provider")
    registry.build(spec).send(simple(), timeout=5)
    assert fake.normalize(fake.sent[-1])["sandbox"] is True


def test_postmark_url_form_with_a_stream(httpserver: HTTPServer) -> None:
    fake = serve("postmark", httpserver)
    url = fake.url(server_base_url(httpserver)) + "&message_stream=alerts"
    (spec,) = specs_from_urls([url], "--provider")
    provider = registry.build(spec)
    assert isinstance(provider, PostmarkProvider)
    provider.send(simple(), timeout=5)
    assert fake.sent[0]["MessageStream"] == "alerts"


def test_ses_url_form_carries_region_and_configuration_set(httpserver: HTTPServer) -> None:
    fake = serve("ses", httpserver)
    (spec,) = specs_from_urls([fake.url(server_base_url(httpserver))], "--provider")
    provider = registry.build(spec)
    assert isinstance(provider, SesProvider)
    assert provider.region == "eu-west-1" and provider.configuration_set == SES_CONFIG_SET


def test_ses_url_form_with_session_token(httpserver: HTTPServer) -> None:
    fake = serve("ses", httpserver, session_token=SES_SESSION_TOKEN)
    (spec,) = specs_from_urls([fake.url(server_base_url(httpserver))], "--provider")
    registry.build(spec).send(simple(), timeout=5)
    assert fake.requests[-1].headers["x-amz-security-token"] == SES_SESSION_TOKEN

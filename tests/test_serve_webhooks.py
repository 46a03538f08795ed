"""POST /v1/webhooks/<provider name> on `mailrelay serve`: each ESP's request (signed as it
signs) handled once, suppressing its recipient for every provider; forged, stale and
replayed requests; the counts in /metrics; the audit log; real gunicorn once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from mailrelay.events import sns
from tests import webhooksigning as sign
from tests.snsstandin import TOPIC, ses_bounce, sns_message, sns_stand_in
from tests.test_e2e import mailrelay
from tests.test_serve import AUTH, Server, config, outbox
from tests.webhookpayloads import BATCHING, TIMESTAMPED, forge, payload

pytest.importorskip("flask")

UNSET = "unused-test-api-key"  # never sent with: the tests only receive webhooks
PROVIDERS: dict[str, dict[str, Any]] = {
    "mailgun": {
        "domain": "mg.example.com",
        "api_key": UNSET,
        "webhook_signing_key": sign.MAILGUN_KEY,
    },
    "sendgrid": {"api_key": UNSET, "webhook_signing_key": sign.SENDGRID_PUBLIC},
    "postmark": {"server_token": UNSET, "webhook_basic_auth": ["old:retired-password", sign.BASIC]},
    "mandrill": {"api_key": UNSET, "webhook_signing_key": sign.MANDRILL_KEY},
    "ses": {
        "region": "eu-west-1",
        "access_key_id": UNSET,
        "secret_access_key": UNSET,
        "sns_topic_arns": [TOPIC],
    },
    "sparkpost": {"api_key": UNSET, "webhook_basic_auth": [sign.BASIC]},
    "resend": {"api_key": UNSET, "webhook_signing_key": sign.RESEND_KEY},
    "brevo": {"api_key": UNSET, "webhook_basic_auth": [sign.BASIC]},
    "mailjet": {"api_key": UNSET, "secret_key": UNSET, "webhook_basic_auth": [sign.BASIC]},
    "mailersend": {"api_token": UNSET, "webhook_signing_key": sign.MAILERSEND_KEY},
}
KINDS = [k for k in PROVIDERS if k != "ses"]


def providers(tmp: Path) -> list[dict[str, Any]]:
    return [outbox(tmp)] + [{"name": f"{k}1", "type": k, **v} for k, v in PROVIDERS.items()]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    settings = load_settings(
        config(tmp_path, providers(tmp_path), log_file=str(tmp_path / "audit.log"))
    )
    app = create_app(settings, state=str(tmp_path / "data" / "state.toml"), log=False)
    with app.test_client() as c:
        yield c


def post(client: Any, kind: str, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(f"/v1/webhooks/{kind}1", data=body, headers=headers)


def hook_url(kind: str) -> str:
    return f"http://localhost/v1/webhooks/{kind}1"


@pytest.mark.parametrize("kind", KINDS)
def test_a_bounce_suppresses_once_and_a_replay_is_a_duplicate(
    client: Any, kind: str, tmp_path: Path
) -> None:
    body, headers = payload(kind, ["gone@example.org"], url=hook_url(kind))
    first = post(client, kind, body, headers)
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"events": 1, "duplicates": 0, "suppressed": ["gone@example.org"]}
    again = post(client, kind, body, headers)
    assert again.status_code == 200
    assert again.get_json()["duplicates"] == 1 and again.get_json()["events"] == 0
    logged = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    [record] = [r for r in logged if r["event"] == "provider_event"]
    assert record["provider"] == f"{kind}1" and record["suppressed"] == "bounced"
    # the list is the CLI's too
    listed = mailrelay(
        "--config",
        str(tmp_path / "config.toml"),
        "--state",
        str(tmp_path / "data" / "state.toml"),
        "suppressions",
        "list",
        "--json",
    )
    [entry] = json.loads(listed.stdout)["suppressions"]
    assert entry["address"] == "gone@example.org" and entry["provider"] == f"{kind}1"


@pytest.mark.parametrize("kind", KINDS)
def test_a_forged_request_is_401_and_acts_on_nothing(client: Any, kind: str) -> None:
    body, headers = forge(kind, *payload(kind, ["gone@example.org"], url=hook_url(kind)))
    answer = post(client, kind, body, headers)
    assert answer.status_code == 401
    assert "forged" in answer.get_json()["title"]
    page = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert f'mailrelay_webhooks_refused_total{{provider="{kind}1",reason="forged"}} 1\n' in page
    assert "mailrelay_events_total{" not in page


@pytest.mark.parametrize("kind", TIMESTAMPED)
def test_a_stale_request_is_401(client: Any, kind: str) -> None:
    body, headers = payload(kind, ["gone@example.org"], at=time.time() - 3600, url=hook_url(kind))
    answer = post(client, kind, body, headers)
    assert answer.status_code == 401 and "stale" in answer.get_json()["title"]


@pytest.mark.parametrize("kind", BATCHING)
def test_a_batch_is_split_and_counted_per_event(client: Any, kind: str) -> None:
    rcpts = ["a@example.org", "b@example.org", "c@example.org"]
    answer = post(client, kind, *payload(kind, rcpts, url=hook_url(kind)))
    assert answer.get_json() == {"events": 3, "duplicates": 0, "suppressed": ["a@example.org"]}
    page = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert f'mailrelay_events_total{{provider="{kind}1",event="bounced"}} 1\n' in page
    assert f'mailrelay_events_total{{provider="{kind}1",event="delivered"}}' in page or (
        f'mailrelay_events_total{{provider="{kind}1",event="sent"}}' in page
    )


def test_ses_through_sns_with_the_stand_in(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sns_stand_in(tmp_path) as server:
        monkeypatch.setenv("MAILRELAY_TEST_SNS_HOSTS", server.host)
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        sns._cache.clear()
        confirm = post(client, "ses", sns_message(server.host, "SubscriptionConfirmation"), {})
        assert confirm.status_code == 200 and confirm.get_json()["subscription"] == "confirmed"
        body = sns_message(server.host, message=ses_bounce(["gone@example.org"]))
        assert post(client, "ses", body, {}).get_json()["suppressed"] == ["gone@example.org"]
        foreign = sns_message(
            server.host,
            message=ses_bounce(["x@example.org"]),
            cert_url="https://sns.eu-west-1.amazonaws.com.example.net/SimpleNotificationService-1.pem",
        )
        assert post(client, "ses", foreign, {}).status_code == 401


def test_unknown_or_unconfigured_providers_are_404_and_need_no_token(client: Any) -> None:
    assert client.post("/v1/webhooks/nobody", data=b"{}").status_code == 404
    assert client.post("/v1/webhooks/box", data=b"{}").status_code == 404  # outbox: no webhooks
    assert client.head("/v1/webhooks/mandrill1").status_code == 200


def test_send_is_refused_after_a_bounce_event_through_the_installed_mailrelay(
    client: Any, tmp_path: Path
) -> None:
    body, headers = payload("postmark", ["gone@example.org"])
    assert post(client, "postmark", body, headers).status_code == 200
    args = [
        "--config",
        str(tmp_path / "config.toml"),
        "--state",
        str(tmp_path / "data" / "state.toml"),
    ]
    sent = mailrelay(
        *args, "send", "--via", "box", "-s", "hi", "--text", "x", "gone@example.org", input=None
    )
    assert sent.returncode == 65, sent.stderr
    assert "gone@example.org is suppressed (bounced by postmark1" in sent.stderr
    assert not list((tmp_path / "outbox").glob("*.eml"))


def test_through_gunicorn_a_bounce_then_the_send_api_answers_422(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        [outbox(tmp_path), {"name": "postmark1", "type": "postmark", **PROVIDERS["postmark"]}],
    )
    server = Server(tmp_path, cfg)
    try:
        body, headers = payload("postmark", ["gone@example.org"])
        hook = requests.post(
            server.url + "/v1/webhooks/postmark1", data=body, headers=headers, timeout=30
        )
        assert hook.status_code == 200, hook.text
        refused = server.post(doc={"to": ["gone@example.org"], "subject": "s", "text": "t"})
        assert refused.status_code == 422, refused.text
        assert "gone@example.org is suppressed" in refused.json()["detail"]
        mixed = server.post(
            doc={"to": ["gone@example.org", "ok@example.org"], "subject": "s", "text": "t"}
        )
        assert mixed.status_code == 200, mixed.text
        assert [s["address"] for s in mixed.json()["suppressed"]] == ["gone@example.org"]
        bad = requests.post(
            server.url + "/v1/webhooks/postmark1",
            data=body,
            headers={**headers, **sign.basic_header("hook:nope")},
            timeout=30,
        )
        assert bad.status_code == 401
    finally:
        assert server.stop() == 0


def test_a_key_that_cannot_be_read_is_a_500_naming_it_not_a_traceback(tmp_path: Path) -> None:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    hook = {"name": "pm", "type": "postmark", "server_token": UNSET}
    cfg = config(tmp_path, [outbox(tmp_path), hook])
    cfg.write_text(
        cfg.read_text() + 'webhook_basic_auth = [{ env = "MAILRELAY_TEST_NO_SUCH_VAR" }]\n'
    )
    app = create_app(load_settings(cfg), state=str(tmp_path / "state.toml"), log=False)
    answer = app.test_client().post("/v1/webhooks/pm", data=b"{}", headers=sign.basic_header())
    assert answer.status_code == 500
    assert answer.get_json()["title"] == "Webhook misconfigured"
    assert "MAILRELAY_TEST_NO_SUCH_VAR is not set" in answer.get_json()["detail"]
    assert "pm" in answer.get_json()["detail"]


def test_new_events_are_forwarded_signed_to_events_url(httpserver: Any, tmp_path: Path) -> None:
    import hashlib
    import hmac

    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    got: list[Any] = []

    def receive(request: Any) -> Any:
        from werkzeug import Response

        got.append((dict(request.headers), request.get_data()))
        return Response("ok")

    httpserver.expect_request("/hooks", method="POST").respond_with_handler(receive)
    hook = {
        "name": "pm",
        "type": "postmark",
        "server_token": UNSET,
        "webhook_basic_auth": [sign.BASIC],
    }
    cfg = config(tmp_path, [outbox(tmp_path), hook])
    text = cfg.read_text().replace(
        "[serve]\n",
        f'[serve]\nevents_url = "{httpserver.url_for("/hooks")}"\n'
        'events_secret = "our-forwarding-secret"\n',
    )
    cfg.write_text(text)
    app = create_app(load_settings(cfg), state=str(tmp_path / "state.toml"), log=False)
    client = app.test_client()
    body, headers = payload("postmark", ["gone@example.org"])
    assert client.post("/v1/webhooks/pm", data=body, headers=headers).status_code == 200
    assert client.post("/v1/webhooks/pm", data=body, headers=headers).get_json()["duplicates"] == 1
    app.extensions["mailrelay.event_sinks"].forward.drain()
    [(got_headers, got_body)] = got  # the replay was not forwarded
    stamp = got_headers["X-Mailrelay-Timestamp"]
    mac = hmac.new(b"our-forwarding-secret", stamp.encode() + b"." + got_body, hashlib.sha256)
    assert got_headers["X-Mailrelay-Signature"] == "v1=" + mac.hexdigest()
    [event] = json.loads(got_body)["events"]
    assert event["event"] == "bounced" and event["recipient"] == "gone@example.org"

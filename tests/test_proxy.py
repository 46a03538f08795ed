"""Proxies from the environment, through a real proxy on loopback (tests/proxyserver.py).

Every HTTP provider sends through the one client (providers/httpclient.py), so Postmark's
fake stands for all of them: an https:// target is reached through a CONNECT tunnel (TLS with
a trustme certificate, end to end), an http:// target is asked of the proxy by its absolute
URI, NO_PROXY goes around the proxy, and the proxy's own failures get an outcome class like
any connection failure. Credentials in the proxy URL never show in any output.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pytest_httpserver import HTTPServer

from mailrelay.message import Address, Message
from mailrelay.providers import httpapi, httpclient, registry
from mailrelay.providers.base import Outcome, Provider, ProviderError
from mailrelay.providers.options import ProviderSpec
from tests.esp.fake_postmark import FakePostmark
from tests.esp.fakebase import server_base_url
from tests.proxyserver import ProxyServer, proxy_server
from tests.smtpserver import shared_ca, shared_server
from tests.test_e2e import mailrelay, write_config

PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)
SECRET = "pr0xy-s3cret-7f2a"
WRONG = "wr0ng-pa55-91c3"


@pytest.fixture(autouse=True)
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No proxy variable at all (conftest names NO_PROXY=127.0.0.1 for every other test), a
    fresh connection pool, and TLS contexts built again from the environment."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(httpapi, "_pool", None)
    monkeypatch.setattr(httpclient, "_tls_context", None)
    yield
    httpapi.shared_pool().close()


@pytest.fixture
def ca_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trustme CA the HTTPS fake's certificate comes from, trusted by the client."""
    path = tmp_path / "ca.pem"
    shared_ca().cert_pem.write_to_path(str(path))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(path))
    return path


def https_server(ca: trustme.CA) -> HTTPServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return HTTPServer(host="127.0.0.1", port=0, ssl_context=ctx)


@pytest.fixture
def https_fake(ca_file: Path) -> Iterator[tuple[FakePostmark, HTTPServer]]:
    with https_server(shared_ca()) as server:
        fake = FakePostmark()
        fake.install(server)
        yield fake, server


@pytest.fixture
def http_fake() -> Iterator[tuple[FakePostmark, HTTPServer]]:
    with HTTPServer(host="127.0.0.1", port=0) as server:
        fake = FakePostmark()
        fake.install(server)
        yield fake, server


def postmark(fake: FakePostmark, server: HTTPServer) -> Provider:
    table: dict[str, Any] = fake.config(server_base_url(server))
    return registry.build(ProviderSpec("postmark", "postmark", table, "test"))


def message() -> Message:
    return Message(
        sender=Address("ops@example.com", "Ops"),
        to=[Address("a@example.com")],
        subject="Disk full",
        text="disk 91% full\n",
    )


def send_error(provider: Provider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        provider.send(message(), timeout=10)
    return info.value


def with_credentials(proxy: ProxyServer, user: str = "ops", password: str = SECRET) -> str:
    return f"http://{user}:{password}@127.0.0.1:{proxy.port}"


# --- routing --------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
def test_an_https_target_goes_through_a_connect_tunnel(
    variable: str, https_fake: tuple[FakePostmark, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = https_fake
    with proxy_server() as proxy:
        monkeypatch.setenv(variable, proxy.url)
        monkeypatch.setenv("NO_PROXY", "")  # conftest's list would name the fake's 127.0.0.1
        receipt = postmark(fake, server).send(message(), timeout=10)
    assert receipt.message_id
    assert len(fake.sent) == 1
    assert len(proxy.request_lines) == 1
    assert proxy.request_lines[0].startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.")
    # the provider saw a TLS request of its own, not the proxy's headers
    assert fake.requests[0].scheme == "https"
    assert "Proxy-Authorization" not in fake.requests[0].headers


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_an_http_target_is_asked_of_the_proxy_by_its_absolute_uri(
    variable: str, http_fake: tuple[FakePostmark, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = http_fake
    with proxy_server() as proxy:
        monkeypatch.setenv(variable, proxy.url)
        receipt = postmark(fake, server).send(message(), timeout=10)
    assert receipt.message_id
    assert len(fake.sent) == 1
    assert proxy.request_lines == [f"POST http://127.0.0.1:{server.port}/email HTTP/1.1"]


def test_an_https_proxy_variable_does_not_take_http_targets(
    http_fake: tuple[FakePostmark, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = http_fake
    with proxy_server() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        postmark(fake, server).send(message(), timeout=10)
    assert proxy.request_lines == []
    assert len(fake.sent) == 1


@pytest.mark.parametrize(
    ("variable", "value", "proxied"),
    [
        ("NO_PROXY", "127.0.0.1", False),
        ("no_proxy", "127.0.0.1", False),
        ("NO_PROXY", "*", False),
        ("NO_PROXY", "mail.example.com, 127.0.0.1", False),
        ("NO_PROXY", "{target}", False),  # host:port of the fake
        ("NO_PROXY", "localhost", True),  # another name for the host does not count
        ("NO_PROXY", "mail.example.com", True),
    ],
)
def test_no_proxy_goes_around_the_proxy(
    variable: str,
    value: str,
    proxied: bool,
    https_fake: tuple[FakePostmark, HTTPServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, server = https_fake
    with proxy_server() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv(variable, value.format(target=f"127.0.0.1:{server.port}"))
        postmark(fake, server).send(message(), timeout=10)
    assert len(fake.sent) == 1
    assert len(proxy.request_lines) == (1 if proxied else 0)


# --- credentials ------------------------------------------------------------------------


def test_credentials_in_the_proxy_url_are_sent_to_the_proxy_only(
    https_fake: tuple[FakePostmark, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = https_fake
    with proxy_server(credentials=("ops@corp", SECRET)) as proxy:
        # a user with an "@" is percent-encoded in the URL, as curl and requests take it
        monkeypatch.setenv("HTTPS_PROXY", with_credentials(proxy, user="ops%40corp"))
        postmark(fake, server).send(message(), timeout=10)
    assert len(fake.sent) == 1
    assert proxy.authorizations == [proxy_authorization("ops@corp", SECRET)]
    assert all("Proxy-Authorization" not in r.headers for r in fake.requests)


def test_credentials_go_with_an_absolute_uri_request_too(
    http_fake: tuple[FakePostmark, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = http_fake
    with proxy_server(credentials=("ops", SECRET)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", with_credentials(proxy))
        postmark(fake, server).send(message(), timeout=10)
    assert len(fake.sent) == 1
    assert proxy.authorizations == [proxy_authorization("ops", SECRET)]


def proxy_authorization(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


# --- the proxy's own failures -----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "setup", "outcome", "words"),
    [
        # wrong credentials / the proxy's policy: time will not mend them
        (
            "https",
            {"credentials": ("ops", "not-this")},
            Outcome.PROVIDER,
            "refused the tunnel: 407",
        ),
        ("https", {"refuse": 403}, Outcome.PROVIDER, "refused the tunnel: 403"),
        # the proxy could not reach the provider: try another, later this one again
        ("https", {"refuse": 502}, Outcome.TRANSIENT, "refused the tunnel: 502"),
        (
            "http",
            {"credentials": ("ops", "not-this")},
            Outcome.PROVIDER,
            "refused the request: 407",
        ),
        # an http:// target's 502 is the proxy's answer in the provider's place
        ("http", {"refuse": 502}, Outcome.TRANSIENT, "HTTP 502"),
    ],
)
def test_a_proxy_refusing_is_classified(
    target: str,
    setup: dict[str, Any],
    outcome: Outcome,
    words: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, server = request.getfixturevalue(f"{target}_fake")
    with proxy_server(**setup) as proxy:
        monkeypatch.setenv(f"{target.upper()}_PROXY", with_credentials(proxy))
        err = send_error(postmark(fake, server))
    assert err.outcome is outcome, err.message
    assert words in err.message
    assert SECRET not in err.message
    assert fake.sent == []  # nothing reached the provider
    assert len(proxy.request_lines) == 1


def test_a_dead_proxy_is_transient(
    https_fake: tuple[FakePostmark, HTTPServer], dead_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = https_fake
    monkeypatch.setenv("HTTPS_PROXY", f"http://ops:{SECRET}@127.0.0.1:{dead_port}")
    provider = postmark(fake, server)
    err = send_error(provider)
    assert err.outcome is Outcome.TRANSIENT
    assert f"proxy 127.0.0.1:{dead_port}" in err.message
    assert SECRET not in err.message
    health = provider.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.TRANSIENT
    assert SECRET not in health.detail


@pytest.mark.parametrize(
    ("variable", "url", "words"),
    [
        ("HTTPS_PROXY", f"socks5://ops:{SECRET}@127.0.0.1:1080", "only http:// proxies"),
        ("ALL_PROXY", f"socks5h://ops:{SECRET}@127.0.0.1:1080", "only http:// proxies"),
        ("HTTPS_PROXY", f"https://ops:{SECRET}@127.0.0.1:3129", "(got https://)"),
        ("HTTPS_PROXY", f"http://ops:{SECRET}@127.0.0.1:99999", "bad port"),
    ],
)
def test_a_proxy_the_client_cannot_use_is_a_configuration_error(
    https_fake: tuple[FakePostmark, HTTPServer],
    variable: str,
    url: str,
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailrelay.engine import Engine
    from mailrelay.errors import ExitCode
    from mailrelay.policy import Policy
    from mailrelay.state import TomlStateStore

    fake, server = https_fake
    monkeypatch.setenv(variable, url)
    engine = Engine([postmark(fake, server)], TomlStateStore(tmp_path / "state.toml"), Policy())
    result = engine.send(message())
    (attempt,) = result.attempts
    assert attempt.outcome is Outcome.PROVIDER and attempt.config_error
    assert attempt.detail.startswith(f"{variable} in the environment: ") and words in attempt.detail
    assert SECRET not in attempt.detail
    assert result.exit_code == ExitCode.CONFIG  # not 75: waiting will not mend it
    assert fake.sent == []


# --- the installed command ------------------------------------------------------------------


def run_send(tmp_path: Path, providers: list[dict[str, Any]], env: dict[str, str]) -> Any:
    cfg = write_config(tmp_path / "config.toml", providers)
    state = tmp_path / "state.toml"
    r = mailrelay(
        "--config", str(cfg), "--state", str(state), "-v", "send", "--json", "-s", "deploy done",
        "a@example.com", env=env,
    )  # fmt: skip
    assert SECRET not in r.stdout + r.stderr
    return r


def test_a_dead_proxy_fails_over_to_the_next_provider(
    tmp_path: Path,
    https_fake: tuple[FakePostmark, HTTPServer],
    ca_file: Path,
    dead_port: int,
) -> None:
    fake, server = https_fake
    with shared_server() as relay:
        smtp = {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": relay.port}
        smtp |= {"security": "none", "timeout": 5}
        proxy = f"http://ops:{SECRET}@127.0.0.1:{dead_port}"
        r = run_send(
            tmp_path,
            [fake.config(server_base_url(server)), smtp],
            {"HTTPS_PROXY": proxy, "NO_PROXY": "", "REQUESTS_CA_BUNDLE": str(ca_file)},
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert [a["outcome"] for a in doc["attempts"]] == ["transient", "accepted"]
        assert f"proxy 127.0.0.1:{dead_port}" in doc["attempts"][0]["detail"]
        assert len(relay.messages) == 1
    assert fake.sent == []


def test_a_socks_proxy_fails_over_and_alone_is_exit_78(
    tmp_path: Path, https_fake: tuple[FakePostmark, HTTPServer], ca_file: Path
) -> None:
    fake, server = https_fake
    env = {
        "HTTPS_PROXY": f"socks5://ops:{SECRET}@127.0.0.1:1080",
        "NO_PROXY": "",
        "REQUESTS_CA_BUNDLE": str(ca_file),
    }
    for where in ("both", "alone"):
        (tmp_path / where).mkdir()
    with shared_server() as relay:
        smtp = {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": relay.port}
        smtp |= {"security": "none", "timeout": 5}
        r = run_send(tmp_path / "both", [fake.config(server_base_url(server)), smtp], env)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert [a["outcome"] for a in doc["attempts"]] == ["provider", "accepted"]
        assert "HTTPS_PROXY in the environment" in doc["attempts"][0]["detail"]
        assert len(relay.messages) == 1
    alone = run_send(tmp_path / "alone", [fake.config(server_base_url(server))], env)
    assert alone.returncode == 78, alone.stderr
    (attempt,) = json.loads(alone.stdout)["attempts"]
    assert attempt["outcome"] == "provider" and "only http:// proxies" in attempt["detail"]
    assert fake.sent == []


@pytest.mark.parametrize("target", ["https", "http"])
def test_a_proxy_echoing_the_credentials_cannot_put_them_in_the_output(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The error text the client builds names no credential; a proxy's own words might (here
    in a 407's reason phrase), and those are scrubbed before they are shown or stored."""
    fake, server = request.getfixturevalue(f"{target}_fake")
    with proxy_server(refuse=407, echo=True) as proxy:
        env = {f"{target.upper()}_PROXY": with_credentials(proxy), "NO_PROXY": ""}
        r = run_send(tmp_path, [fake.config(server_base_url(server))], env)
    token = proxy_authorization("ops", SECRET).split()[1]
    assert proxy.authorizations == [f"Basic {token}"]
    assert r.returncode == 69, r.stderr
    assert json.loads(r.stdout)["attempts"][0]["outcome"] == "provider"
    assert token not in r.stdout + r.stderr
    state = (tmp_path / "state.toml").read_text()
    assert "407" in state and token not in state and SECRET not in state


@pytest.mark.parametrize("password", [SECRET, WRONG])
def test_the_command_sends_through_a_proxy_and_never_shows_its_password(
    password: str,
    tmp_path: Path,
    https_fake: tuple[FakePostmark, HTTPServer],
    ca_file: Path,
) -> None:
    fake, server = https_fake
    with proxy_server(credentials=("ops", SECRET)) as proxy:
        r = run_send(
            tmp_path,
            [fake.config(server_base_url(server))],
            {
                "HTTPS_PROXY": with_credentials(proxy, password=password),
                "NO_PROXY": "",
                "REQUESTS_CA_BUNDLE": str(ca_file),
            },
        )
    assert proxy.request_lines[0].startswith(f"CONNECT 127.0.0.1:{server.port} ")
    doc = json.loads(r.stdout)
    if password == SECRET:
        assert r.returncode == 0, r.stderr
        assert len(fake.sent) == 1
    else:
        assert r.returncode == 69, r.stderr  # a configuration fault, not a passing one
        assert doc["attempts"][0]["outcome"] == "provider"
        assert "407" in doc["attempts"][0]["detail"]
        assert WRONG not in r.stdout + r.stderr
        assert fake.sent == []

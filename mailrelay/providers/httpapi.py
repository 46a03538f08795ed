"""The base of the HTTP API adapters: build request → post → read reply → classify.

An adapter fills in only what differs, each hook a pure function of its input:
`build_send` (endpoint, auth, field mapping), `parse_success` (where the message id is),
`build_check` (the read-only health endpoint) and, where the provider's error body says more
than the status, `outcome_for` (its error codes → an outcome) and `error_words` (its words).
The base builds every error once: transport failures and error responses alike.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final
from urllib.parse import urlsplit

from mailrelay import __version__
from mailrelay.datarecord import field, record, replace
from mailrelay.errors import ConfigError
from mailrelay.providers.base import (
    Capability,
    Health,
    Outcome,
    Provider,
    ProviderError,
    Receipt,
    parse_retry_after,
)
from mailrelay.providers.httpclient import (
    ConnectFailure,
    Pool,
    Response,
    SendFailure,
)
from mailrelay.providers.httperrors import coded_words as coded_words
from mailrelay.providers.httperrors import error_text as error_text
from mailrelay.providers.httperrors import json_body as json_body
from mailrelay.ratelimit.learn import observe
from mailrelay.secrets import remember_auth

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL
    from mailrelay.secrets import Secret

CONNECT_TIMEOUT = 10.0  # seconds to establish TCP+TLS; a dead host costs at most this
USER_AGENT = f"mailrelay/{__version__}"

HttpResponse = Response  # what adapters read: status_code, reason, headers, content, json()

_pool: Pool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> Pool:
    """One pool of keep-alive connections per process (the standard-library client)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool(USER_AGENT)
        return _pool


@record
class HttpRequest:
    """One request to make, relative to the provider's base URL."""

    method: str
    path: str
    json: Any = None
    data: Any = None
    files: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    """Basic auth (user, password); a signature goes in `headers` (SES signs its own)."""
    params: dict[str, str] | None = None


def status_outcome(status: int) -> Outcome:
    """The outcome class a bare HTTP status implies, where the body says nothing more."""
    if status == 429 or status >= 500:
        return Outcome.TRANSIENT
    if status in (401, 403, 404):  # bad key, no permission, unknown domain/endpoint
        return Outcome.PROVIDER
    if status in (400, 422):  # the provider validated the message and refused it
        return Outcome.PERMANENT
    return Outcome.REJECTED  # 413 (limits differ between providers), 409, 405...


class HttpProvider(Provider):
    """Base of the transactional-email HTTP API adapters."""

    default_base_url: ClassVar[str]
    """The documented API root, e.g. "https://api.postmarkapp.com"."""
    # an API on the internet cannot reach root@localhost or ops@[127.0.0.1]
    reaches_local_addresses: ClassVar[bool] = False
    success_body: ClassVar[Literal["", "json", "json-if-any"]] = ""
    """What a 2xx body must be for the adapter to read it: "json" (always a JSON object),
    "json-if-any" (empty, or a JSON object). A 2xx the adapter cannot read (a captive
    proxy's HTML page, say) is `ambiguous`: the message may or may not have been sent."""
    rate_headers: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        *,
        timeout: float | None = None,
        base_url: str | None = None,
        sandbox: bool = False,
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.sandbox = sandbox

    @classmethod
    def common_options(cls, cfg: ProviderConfig, *, sandbox: bool = True) -> dict[str, Any]:
        """`base_url`, `timeout` and (where the provider has one) `sandbox`."""
        options: dict[str, Any] = {
            "timeout": cfg.get_timeout(cls.default_timeout),
            "base_url": cls.resolve_base_url(cfg),
        }
        if sandbox:
            options["sandbox"] = cfg.get_bool("sandbox")
        return options

    @classmethod
    def resolve_base_url(cls, cfg: ProviderConfig) -> str | None:
        """`base_url` replaces the scheme and host (and port) of the documented API root."""
        base = cfg.get_str("base_url")
        if base is None:
            return None
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise cfg.error("base_url", f"must be an http(s) URL, got {base!r}")
        default = urlsplit(cls.default_base_url)
        path = parts.path.rstrip("/") or default.path.rstrip("/")
        return f"{parts.scheme}://{parts.netloc}{path}"

    @classmethod
    def credential_from_url(cls, url: ProviderURL, key: str) -> dict[str, Any]:
        """`<type>://CREDENTIAL@`: the one credential as the user part, no host or path."""
        if url.host or url.port or url.path.strip("/") or url.password is not None:
            # the label leaves the host out: a key written without its "@" would land there
            raise ConfigError(
                f"takes no host, port, path or password: expected {url.scheme}://"
                f"{key.upper()}@ (?base_url= for another endpoint)",
                source=url.source,
                provider=f"{url.scheme}://…",
            )
        if not url.username:
            label = key.replace("api_", "API ").replace("_", " ")
            raise ConfigError(
                f"the {label} is missing: {url.scheme}://{key.upper()}@",
                source=url.source,
                provider=f"{url.scheme}://…",
            )
        return {key: url.username}

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def describe(self) -> dict[str, str]:
        info = {"endpoint": self.base_url}
        if self.sandbox:
            info["sandbox"] = "on"
        return info

    # --- what adapters implement -------------------------------------------------------

    @abstractmethod
    def build_send(self, message: Message) -> HttpRequest:
        """The request that sends the message."""

    @abstractmethod
    def parse_success(self, resp: Response, message: Message) -> Receipt:
        """The receipt from a 2xx; raise ProviderError when the body says nobody got it."""

    @abstractmethod
    def build_check(self) -> HttpRequest:
        """A read-only request that proves the credentials work. Never sends mail."""

    def outcome_for(self, resp: Response) -> Outcome | None:
        """The outcome the provider's own error codes give this response; None when they say
        nothing more than the status (`status_outcome` decides)."""
        return None

    def limit_kind(self, resp: Response) -> str | None:
        """ "rate" when the answer says "too fast" (429), "quota" when a daily or monthly
        quota is spent (420, SparkPost's; adapters name their quota 429s), else None. The
        outcome class is unchanged: this only tells the engine it is no outage."""
        if resp.status_code == 420:
            return "quota"
        return "rate" if resp.status_code == 429 else None

    def error_words(self, resp: Response) -> str | None:
        """The provider's words for this error, where its body has a form of its own; None
        for the generic reading (`error_text`)."""
        return None

    @final
    def classify_error(self, resp: Response) -> ProviderError:
        """The one ProviderError for an error response (or a 2xx whose body says nobody
        got the message): the adapter's `outcome_for`, else the status's class."""
        outcome = self.outcome_for(resp)
        return ProviderError(
            status_outcome(resp.status_code) if outcome is None else outcome,
            self.error_message(resp),
            status=resp.status_code,
            retry_after=self.retry_after(resp),
            limited=self.limit_kind(resp),
            rate=observe(resp.headers),
        )

    def error_message(self, resp: Response, text: str | None = None) -> str:
        """ "HTTP 503 from api.example.com: <the provider's words>"."""
        words = text or self.error_words(resp) or error_text(resp)
        return f"HTTP {resp.status_code} from {self.host}: {words}"

    def retry_after(self, resp: Response) -> float | None:
        return parse_retry_after(resp.headers.get("Retry-After"))

    def check_response(self, resp: Response) -> Health:
        """The health from the check request's response; adapters may look deeper."""
        if 200 <= resp.status_code < 300:
            return Health(True, f"HTTP {resp.status_code} from {self.host}")
        err = self.classify_error(resp)
        return Health(False, err.message, err.outcome)

    # --- the pipeline ------------------------------------------------------------------

    def perform(self, req: HttpRequest, timeout: float) -> Response:
        """Make the request, turning every transport failure into a classified ProviderError.

        Refused, DNS, TLS or connect timeout: nothing was sent → transient. A read timeout or
        a connection lost after the request went out → ambiguous (it may have been taken).
        """
        connect_timeout = min(CONNECT_TIMEOUT, timeout)
        auth = req.auth
        if auth is not None:
            remember_auth(*auth)  # a server that echoes the Authorization header
        try:
            return shared_pool().request(
                req.method,
                self.base_url + req.path,
                json_body=req.json,
                data=req.data,
                files=req.files,
                headers=req.headers,
                auth=auth,
                params=req.params,
                connect_timeout=connect_timeout,
                read_timeout=timeout,
            )
        except ConnectFailure as exc:
            if exc.timeout:
                raise ProviderError(
                    Outcome.TRANSIENT, f"{self.host}: no connection within {connect_timeout:g} s"
                ) from None
            if exc.tls:
                raise ProviderError(Outcome.TRANSIENT, f"{self.host}: {exc}") from None
            if exc.proxy_status is not None and exc.proxy_status < 500:
                # 407/403: the proxy's credentials or policy; time will not mend it
                raise ProviderError(Outcome.PROVIDER, f"{self.host}: {exc}") from None
            raise ProviderError(Outcome.TRANSIENT, f"{self.host}: cannot connect: {exc}") from None
        except SendFailure as exc:
            if exc.timeout:
                raise self._no_answer(timeout) from None
            raise self._lost(str(exc)) from None

    def _no_answer(self, timeout: float) -> ProviderError:
        return ProviderError(
            Outcome.AMBIGUOUS,
            f"{self.host}: no answer within {timeout:g} s after the request was sent "
            "(it may have been accepted)",
        )

    def _lost(self, reason: str) -> ProviderError:
        return ProviderError(
            Outcome.AMBIGUOUS,
            f"{self.host}: connection lost after the request was sent "
            f"(it may have been accepted): {reason}",
        )

    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        resp = self.perform(self.build_send(message), timeout)
        if 200 <= resp.status_code < 300:
            self._check_success_body(resp)
            receipt = self.parse_success(resp, message)
            seen = observe(resp.headers)  # the pace its header fields tell (ratelimit/)
            if seen is None:
                return receipt
            return replace(receipt, rate=seen)  # the adapter's receipt, with the pace
        raise self.classify_error(resp)

    def _check_success_body(self, resp: Response) -> None:
        if not self.success_body:
            return
        if not resp.content.strip() and self.success_body == "json-if-any":
            return
        if isinstance(json_body(resp), dict):
            return
        kind = resp.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
        raise ProviderError(
            Outcome.AMBIGUOUS,
            f"{self.host}: HTTP {resp.status_code} with a body that is not {self.type}'s JSON "
            f"({kind}, {len(resp.content)} bytes; a proxy's page?); it may have been sent",
            status=resp.status_code,
        )

    def check(self, *, timeout: float) -> Health:
        try:
            resp = self.perform(self.build_check(), timeout)
        except ProviderError as exc:
            return Health(False, exc.message, exc.outcome)
        return self.check_response(resp)


class ApiKeyProvider(HttpProvider):
    """An HTTP provider whose one credential is a key or token, named `credential_key` in
    the configuration (the user part of the URL form `<type>://KEY@`)."""

    credential_key: ClassVar[str] = "api_key"

    def __init__(self, name: str, *, credential: Secret, **options: Any) -> None:
        super().__init__(name, **options)
        self.credential = credential

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> Provider:
        return cls(
            cfg.name,
            credential=cfg.get_required_secret(cls.credential_key),
            **cls.options_from_config(cfg),
            **cls.common_options(cfg, sandbox=Capability.SANDBOX in cls.capabilities),
        )

    @classmethod
    def options_from_config(cls, cfg: ProviderConfig) -> dict[str, Any]:
        """The adapter's own settings beyond the credential and `common_options` (a keyword
        argument of its constructor each); none here."""
        return {}

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        return cls.credential_from_url(url, cls.credential_key)

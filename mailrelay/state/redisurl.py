"""Where a Redis server is and how to log in: `Target`, read from a URL by `parse_url`.

The forms redis-py reads: `redis://[user[:password]@]host[:port][/db]`, `rediss://...` (TLS),
`unix:///path/redis.sock`; query options `db`, `username`, `password`, `ssl_cert_reqs`
(`required`, the default, `optional` or `none`) and `ssl_ca_certs` (a CA file). And Redis
Sentinel as Celery and Kombu spell it: `redis+sentinel://host:26379,host2:26379/mymaster/0`
(https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/). Anything else is
refused, so a typo never goes unnoticed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from mailrelay.errors import ConfigError
from mailrelay.secrets import REDACTED, remember, scrub

DEFAULT_PORT = 6379
SENTINEL_PORT = 26379
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_PREFIX = "mailrelay"
_OPTIONS = ("db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs")
_CERT_REQS = ("required", "optional", "none")
_SECRET_OPTIONS = ("password", "sentinel_password")


class Target:
    """Where the server is and how to log in: what `parse_url` read from a URL.

    A plain class, not a dataclass: building one at import costs a cron send milliseconds.
    """

    __slots__ = _FIELDS = (
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "tls",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "sentinels",
        "service",
        "sentinel_password",
    )

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        path: str | None = None,  # a unix socket instead of host and port
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ssl_cert_reqs: str = "required",
        ssl_ca_certs: str | None = None,
        sentinels: tuple[tuple[str, int], ...] = (),  # ask these where the master is
        service: str | None = None,  # the master's name the sentinels monitor
        sentinel_password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.ssl_cert_reqs = ssl_cert_reqs
        self.ssl_ca_certs = ssl_ca_certs
        self.sentinels = sentinels
        self.service = service
        self.sentinel_password = sentinel_password

    def replace(self, **changes: Any) -> Target:
        fields = {name: getattr(self, name) for name in self._FIELDS}
        return Target(**{**fields, **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never the password
        return f"Target({self.address!r}, db={self.db}, tls={self.tls})"

    @property
    def address(self) -> str:
        if self.path is not None:
            return self.path
        if self.sentinels:
            hosts = ",".join(_hostport(h, p) for h, p in self.sentinels)
            return f"sentinel {hosts} ({self.service})"
        return _hostport(self.host, self.port)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_url(url: str) -> Target:
    """The server a `redis://`, `rediss://`, `unix://` or `redis+sentinel://` URL names;
    ValueError if it names none.

    The user and password in the authority are percent-decoded and win over `?username=` and
    `?password=`; the db in the path wins over `?db=` only when the query has none (as redis-py).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == SENTINEL_SCHEME:
        return _parse_sentinel(url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"the scheme must be redis://, rediss://, unix:// or {SENTINEL_SCHEME}://")
    query = _query(parts.query, _OPTIONS)
    username = unquote(parts.username) if parts.username else query.get("username") or None
    password = unquote(parts.password) if parts.password else query.get("password") or None
    db_text = query.get("db")
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
        fields: dict[str, Any] = {"path": unquote(parts.path)}
    else:
        try:
            port = parts.port  # ValueError when it is not a number in 0-65535
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        fields = {"host": parts.hostname or "127.0.0.1", "port": port or DEFAULT_PORT}
        path = unquote(parts.path).strip("/")
        if db_text is None and path:
            db_text = path
    try:
        db = int(db_text or 0)
    except ValueError:
        raise ValueError(f"the db must be a number, not {db_text!r}") from None
    if db < 0:
        raise ValueError("the db must not be negative")
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    return Target(
        **fields,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss",
        ssl_cert_reqs=reqs,
        ssl_ca_certs=query.get("ssl_ca_certs") or None,
    )


def _query(text: str, known: tuple[str, ...]) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key not in known:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(known)})")
        query[key] = value
    return query


def _parse_sentinel(url: str) -> Target:
    """`redis+sentinel://[user:password@]host:26379[,host2:26379...]/SERVICE[/db]`: the
    sentinels to ask where SERVICE's master is; the user and password log in to the master,
    `?sentinel_password=` to the sentinels. (Celery and Kombu spell it this way.)"""
    rest = url.split("://", 1)[1]
    rest, _, query_text = rest.partition("?")
    authority, _, path = rest.partition("/")
    auth, at, hosts = authority.rpartition("@")
    query = _query(query_text, ("db", "username", "password", "sentinel_password"))
    username = password = None
    if at:
        user_text, colon, password_text = auth.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    username = username or query.get("username") or None
    password = password or query.get("password") or None
    sentinels = []
    for item in hosts.split(","):
        host, port = _sentinel_host(item.strip())
        sentinels.append((host, port))
    names = [unquote(p) for p in path.split("/") if p]
    if not names:
        raise ValueError(
            f"name the master after the hosts: {SENTINEL_SCHEME}://HOST:26379/mymaster"
        )
    if len(names) > 2:
        raise ValueError("the path is /SERVICE or /SERVICE/DB")
    db_text = names[1] if len(names) == 2 else query.get("db", "0")
    if not db_text.isdigit():
        raise ValueError(f"the db must be a number, not {db_text!r}")
    return Target(
        db=int(db_text),
        username=username,
        password=password,
        sentinels=tuple(sentinels),
        service=names[0],
        sentinel_password=query.get("sentinel_password") or None,
    )


def _sentinel_host(item: str) -> tuple[str, int]:
    if not item:
        raise ValueError("a sentinel's host is missing")
    if item.startswith("["):  # [::1]:26379
        host, _, tail = item[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"a sentinel's port must be a number from 1 to 65535, not {port_text!r}")
    return host, int(port_text)


def masked(url: str) -> str:
    """The URL without its password (in the authority or as ?password=), for every message
    that names the store."""
    parts = urlsplit(url)
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in _SECRET_OPTIONS for key, _ in pairs):
        shown = [(k, REDACTED if k in _SECRET_OPTIONS else v) for k, v in pairs]
        url = f"{base}?{urlencode(shown, safe='*/')}"
    if parts.password is None:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return url.replace(parts.netloc, f"{user}:{REDACTED}@{host}", 1)


def split_prefix(url: str) -> tuple[str, str]:
    """(the URL for the client, the key prefix): `?prefix=NAME` is ours, not the server's."""
    base, _, query = url.partition("?")  # not urlunsplit: it drops unix:///'s empty host
    prefix = DEFAULT_PREFIX
    rest = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError(f"state URL {masked(url)}: prefix must be non-empty, without {{ or }}")
    return (f"{base}?{urlencode(rest)}" if rest else base), prefix


def server_of(url: str, password: str | None, what: str) -> tuple[Target, str]:
    """(the server, the key prefix) of a `what` ("state", "spool") URL, `password` used when
    the URL has none; both passwords are remembered as secrets, so that no message shows them."""
    target, prefix = split_prefix(url)
    try:
        server = parse_url(target)
    except ValueError as exc:
        raise ConfigError(f"{what} URL {masked(url)}: {scrub(str(exc))}") from None
    if server.password is None and password is not None:
        server = server.replace(password=password)
    for secret in (server.password, server.sentinel_password):
        if secret:
            remember(secret)
            remember(quote(secret, safe=""))
    return server, prefix

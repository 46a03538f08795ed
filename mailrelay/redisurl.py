"""Where a Redis server is and how to log in, from a URL (`mailrelay.redisclient` uses it).

`parse_url` reads the URL forms redis-py reads: `redis://[user[:password]@]host[:port][/db]`,
`rediss://...` (TLS), `unix:///path/redis.sock`; query options `db`, `username`, `password`,
`ssl_cert_reqs` (`required`, the default, `optional` or `none`) and `ssl_ca_certs` (a CA
file). Anything else is refused, so a typo never goes unnoticed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
_OPTIONS = ("db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs")
_CERT_REQS = ("required", "optional", "none")


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

    def replace(self, **changes: Any) -> Target:
        fields = {name: getattr(self, name) for name in self._FIELDS}
        return Target(**{**fields, **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never the password
        where = self.path or f"{self.host}:{self.port}"
        return f"Target({where!r}, db={self.db}, tls={self.tls})"

    @property
    def address(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    """The server a `redis://`, `rediss://` or `unix://` URL names; ValueError if it names none.

    The user and password in the authority are percent-decoded and win over `?username=` and
    `?password=`; the db in the path wins over `?db=` only when the query has none (as redis-py).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        query[key] = value
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

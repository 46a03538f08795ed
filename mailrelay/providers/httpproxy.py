"""The proxy the environment names for an HTTP target, as requests and urllib read it
(`urllib.request.getproxies()`: `https_proxy`, `http_proxy`, `all_proxy`, the lowercase name
winning over the uppercase one; `no_proxy` through `urllib.request.proxy_bypass()`, with `*`
for every host). The client (httpclient.py) reaches an https:// target through a CONNECT
tunnel (`HTTPSConnection.set_tunnel`, TLS end to end with the provider) and asks the proxy
for an http:// target by its absolute URL. `user:password` in the proxy URL becomes a
Proxy-Authorization header and never appears in an error.
"""

from __future__ import annotations

import base64
import os
from urllib.parse import unquote, urlsplit

from mailrelay.errors import ConfigError

PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def proxy_in_environment() -> bool:
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in PROXY_VARIABLES)


class Proxy:
    """A proxy from the environment: where it listens and its Proxy-Authorization."""

    def __init__(self, host: str, port: int, authorization: str | None) -> None:
        self.host = host
        self.port = port
        self.authorization = authorization

    @property
    def label(self) -> str:
        """host:port, never the credentials."""
        return f"{self.host}:{self.port}"


def proxy_for(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy the environment names for this target, or None (none set, or no_proxy)."""
    if not proxy_in_environment():
        return None  # the common case costs no urllib.request import
    import urllib.request

    proxies = urllib.request.getproxies()
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    if urllib.request.proxy_bypass(host) or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None
    if "://" not in url:
        url = "http://" + url  # "proxy:3128", as curl and requests take it
    # a proxy this client cannot use is the environment's configuration, not an outage: it
    # fails over like an unset secret, outcome "provider" (exit 78 when nothing else took the
    # message, not 75 as if the servers were down); the URL is not shown (it may hold a
    # password)
    where = f"{scheme.upper()}_PROXY" if proxies.get(scheme) else "ALL_PROXY"
    parts = urlsplit(url)
    try:
        proxy_port = parts.port or 80
    except ValueError:
        raise ConfigError(f"{where} in the environment: the proxy URL has a bad port") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise ConfigError(
            f"{where} in the environment: only http:// proxies are supported "
            f"(got {parts.scheme}://{'' if parts.hostname else ' without a host'})"
        )
    authorization = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        from mailrelay.secrets import remember, remember_auth

        remember(password)
        remember_auth(user, password)  # a proxy's page that echoes the header
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(parts.hostname, proxy_port, authorization)

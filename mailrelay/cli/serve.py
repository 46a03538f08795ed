"""`mailrelay serve`: the HTTP service (mailrelay/serve/) under gunicorn, in the foreground."""

from __future__ import annotations

import importlib.util
import ipaddress

import click

from mailrelay.cli import CliApp, global_options, pass_app
from mailrelay.errors import ConfigError, UsageError

MISSING = (
    "mailrelay serve needs Flask, gunicorn and prometheus-client (not installed: {missing}): "
    "pip install 'mailrelay[serve]'"
)

# module → distribution; looked up, not imported: prometheus_client must first be imported
# in a worker, after the master has named the metrics folder (mailrelay/serve/metrics.py)
SERVE_NEEDS = {"flask": "Flask", "gunicorn": "gunicorn", "prometheus_client": "prometheus-client"}


def split_bind(bind: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) → (host, port); a one-line usage error otherwise."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--bind {bind!r}: give HOST:PORT, e.g. 127.0.0.1:8025 or [::1]:8025")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(context_settings={"max_content_width": 100})
@global_options()
@click.option(
    "--bind",
    metavar="HOST:PORT",
    help="Where to listen (default: bind in [serve], 127.0.0.1:8025).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    metavar="N",
    help="Worker processes (default: workers in [serve], 2).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=256),
    metavar="N",
    help="Threads per worker: requests sent at once by each (default: threads in [serve], 8).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Let anyone in without a token (only on a loopback address).",
)
@pass_app
def serve(
    app: CliApp, bind: str | None, workers: int | None, threads: int | None, no_auth: bool
) -> None:
    """Run the HTTP service: the send API, a status page and metrics (gunicorn).

    POST /v1/messages takes a message as JSON (the schema of 'send --message'), POST
    /v1/messages/raw a whole RFC 5322 message; GET / is a status page, /api the API's
    documentation, /openapi.json its description. Clients authenticate with 'Authorization:
    Bearer TOKEN' (tokens in [serve] of the config). When every provider rests, requests are
    answered 503 (or queued) at once, without contacting them. SIGTERM or Ctrl-C: the sends in
    flight finish, then exit 0. Queued messages are flushed from inside the service.

    \b
    Examples:
      mailrelay serve
      mailrelay serve --bind 0.0.0.0:8025 --workers 4 --threads 16
      mailrelay --provider outbox:///tmp/outbox serve --no-auth
    """
    missing = [name for name in SERVE_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(MISSING.format(missing=", ".join(SERVE_NEEDS[m] for m in missing)))
    settings = app.settings
    conf = settings.serve
    bind = bind or conf.bind
    host, port = split_bind(bind)
    from mailrelay.serve.service import serve_tokens

    tokens = serve_tokens(settings)
    if no_auth:
        if not is_loopback(host):
            raise UsageError(f"--no-auth only on a loopback address (127.0.0.1, ::1), not {host}")
        app.out.warn(f"--no-auth: anyone who can reach {bind} may send mail")
        tokens = []
    elif not tokens:
        where = settings.source or "the config file"
        raise ConfigError(
            f"no token to authenticate clients: add tokens = [...] to [serve] in {where} "
            "(or --no-auth on a loopback address)"
        )
    app.providers()  # a config problem is one line now, not one per worker
    from mailrelay.serve.app import create_app
    from mailrelay.serve.server import ServeApplication, gunicorn_options

    state, log_file, spool = app.state_override, app.log_file, app.spool_override

    def factory() -> object:
        return create_app(settings, state=state, log_file=log_file, tokens=tokens, spool=spool)

    workers = workers or conf.workers
    threads = threads or conf.threads
    grace = settings.timeout + 5  # a send in flight may take the whole --timeout
    queue = app.spool()
    warning = queue.durability_warning()  # once, here: not once per worker
    if warning:
        app.out.warn(warning)
    queue.close()
    app.out.note(
        f"serving on http://{bind} ({workers} workers, {threads} threads each); "
        "SIGTERM or Ctrl-C stops after the sends in flight"
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ServeApplication(
        factory,
        gunicorn_options(address, workers, threads, grace),
        conf.flush_interval,
        (conf.header_timeout, conf.body_timeout),
    ).run()

"""`mailrelay metrics`: the Prometheus text exposition of the state store and the spool."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailrelay.cli import CliApp, global_options, pass_app
from mailrelay.errors import StateError

if TYPE_CHECKING:
    from mailrelay.state import State


@click.command(context_settings={"max_content_width": 100})
@global_options()
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write FILE atomically (for node_exporter's textfile collector) instead of stdout.",
)
@pass_app
def metrics(app: CliApp, output: str | None) -> None:
    """Print Prometheus metrics: attempts, messages, cooldowns, spool depth.

    Counters come from the state store (every process that sent mail added to them) and
    gauges from the state and the spool folders. With --output the file is replaced in one
    rename (mode 0644; it holds no secret), so a scrape never sees half of it.

    \b
    Examples:
      mailrelay metrics
      mailrelay metrics --output /var/lib/node_exporter/textfile/mailrelay.prom
    """
    from mailrelay.metrics import render, write_atomically

    settings = app.settings
    state = app.store().load()
    spool = app.spool().stats()
    text = render(state, spool, providers=[spec.name for spec in settings.providers])
    text += budget_metrics(app, state)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output).expanduser()
    try:
        write_atomically(path, text)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StateError(f"metrics file {path}: cannot write it: {why}") from None


def budget_metrics(app: CliApp, state: State) -> str:
    """The rate-limit families (mailrelay.ratelimit.report), after the rest of the page."""
    from mailrelay.metrics import format_families
    from mailrelay.ratelimit.report import metric_families

    if not app.settings.providers:
        return ""
    providers = app.providers()
    pacer = app.pacer()
    return format_families(metric_families(state, providers, pacer.store if pacer else None))

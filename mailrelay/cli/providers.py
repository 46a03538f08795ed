"""`mailrelay providers` (what is configured and how it has been doing) and `mailrelay status`
(probe every provider now, without sending)."""

from __future__ import annotations

from typing import Any

import click

from mailrelay.cli import CliApp, global_options, json_option, pass_app, probe_timeout_option
from mailrelay.cli.completion import complete_provider_names
from mailrelay.reports import providers_document, status_document


@click.group(invoke_without_command=True, context_settings={"max_content_width": 100})
@click.option(
    "--wide",
    is_flag=True,
    help="On a terminal, show each provider's settings too (as -v does).",
)
@global_options()
@json_option
@pass_app
def providers(app: CliApp, wide: bool, json_mode: bool) -> None:
    """List the configured providers in order, with the state's counters.

    The provider marked "sticky" took the last message; "next" is where the next send starts.
    On a terminal the settings are left out unless --wide or -v; off a terminal every column
    is printed. `mailrelay providers reset NAME...` ends a provider's cooldown.

    \b
    Examples:
      mailrelay providers
      mailrelay --provider smtp://127.0.0.1:2525?security=none providers --json
      mailrelay providers reset postmark
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    out = app.output(json_mode=json_mode)
    doc = providers_document(app)
    rows = doc["providers"]
    if out.json_mode:
        out.emit_json(doc)
        return
    for r in rows:
        if r["config_problem"]:
            out.warn(f"{r['name']} ({r['type']}) is skipped at send time: {r['config_problem']}")
    from mailrelay.cli.output import Styled
    from mailrelay.clock import when_text

    table_rows = []
    for r in rows:
        marks = [m for m, on in (("sticky", r["sticky"]), ("next", r["next"])) if on]
        cool = Styled(when_text(r["cooldown_until"]), "yellow") if r["cooling"] else "-"
        table_rows.append(
            [
                str(r["position"]),
                r["name"],
                r["type"],
                ",".join(marks) or "-",
                str(r["sent"]),
                str(r["failed"]),
                cool,
                " ".join(f"{k}={v}" for k, v in _settings(r).items()) or "-",
                r["last_error"] or "-",
            ]
        )
    out.table(
        f"providers (policy {doc['policy']}, state {doc['state_file']})",
        ["#", "name", "type", "mark", "sent", "failed", "cooldown until", "settings", "last error"],
        table_rows,
        long=["last error"],
        wide_only=["settings"],
        wide=wide or app.verbose > 0,
    )


@providers.command("reset", context_settings={"max_content_width": 100})
@click.argument(
    "names", nargs=-1, required=True, metavar="NAME...", shell_complete=complete_provider_names
)
@global_options()
@pass_app
def reset(app: CliApp, names: tuple[str, ...]) -> None:
    """Clear the cooldown and consecutive failures of the named providers ("it is fixed, use
    it again"), in whichever store the state is: the file or Redis.

    \b
    Examples:
      mailrelay providers reset postmark
      mailrelay --state redis://state.example.internal:6379/0 providers reset relay1 relay2
    """
    from mailrelay.clock import utcnow
    from mailrelay.errors import UsageError
    from mailrelay.state import reset_delta

    out = app.output(json_mode=False)
    store = app.store()
    known = [p.name for p in app.providers()]
    unknown = [n for n in names if n not in known and n not in store.load().providers]
    if unknown:
        raise UsageError(f"unknown provider {unknown[0]!r}; configured: {', '.join(known)}")
    store.update(reset_delta(list(dict.fromkeys(names)), utcnow()))
    for name in dict.fromkeys(names):
        out.data(f"{name}: cooldown cleared, consecutive failures 0 (state {store.location})")


@click.command(context_settings={"max_content_width": 100})
@click.argument("names", nargs=-1, metavar="[NAME]...", shell_complete=complete_provider_names)
@probe_timeout_option("How long each probe may take (they run at once).")
@click.option(
    "--message",
    "message_id",
    metavar="ID",
    help="Show what became of the message ID (sent through serve): per recipient, probing none.",
)
@global_options()
@json_option
@pass_app
def status(
    app: CliApp, names: tuple[str, ...], timeout: float, message_id: str | None, json_mode: bool
) -> None:
    """Probe every provider (or those NAMEd) without sending and say who is healthy.

    SMTP: connect, EHLO, TLS, AUTH, NOOP, QUIT. HTTP APIs: a read-only request that proves
    the credentials. outbox: the folder is writable. sendmail: the command is executable.
    Exit status: 0 all healthy, 1 degraded, 69 none healthy.

    \b
    Examples:
      mailrelay status
      mailrelay status --json --timeout 5
      mailrelay status backup
      mailrelay status --message '<20261204.1a2b@example.com>'
    """
    out = app.output(json_mode=json_mode)
    if message_id is not None:
        from mailrelay.cli.messagestatus import show_message_status

        show_message_status(app, message_id)
        return
    app.via = list(names)
    doc = status_document(app, timeout)
    rows = doc["providers"]
    healthy, code = doc["healthy"], doc["exit_code"]
    if out.json_mode:
        out.emit_json(doc)
    else:
        from mailrelay.cli.output import health_cell
        from mailrelay.clock import when_text

        out.table(
            f"status: {healthy} of {doc['total']} healthy",
            [
                "name",
                "type",
                "health",
                "latency",
                "detail",
                "last success",
                "last failure",
                "last error",
            ],
            [
                [
                    r["provider"],
                    r["type"],
                    health_cell(_health_text(r), ok=r["healthy"], cooling=r["cooling"]),
                    f"{r['latency_ms']:.0f} ms",
                    r["detail"] or "-",
                    when_text(r["last_success"]),
                    when_text(r["last_failure"]),
                    r["last_error"] or "-",
                ]
                for r in rows
            ],
            long=["detail", "last error"],
        )
        held = len(app.spool().held_keys())
        if held:  # sendmail mode keeps these until the configuration is mended
            out.warn(
                f"{held} message(s) held until the configuration allows sending them; "
                "'mailrelay queue list' says why, 'mailrelay queue flush' sends them"
            )
    click.get_current_context().exit(int(code))


def _health_text(row: dict[str, Any]) -> str:
    if not row["healthy"]:
        return f"FAILING ({row['outcome'] or 'error'})"
    held = row["budget"]["held"]
    if held is not None:  # e.g. "healthy, quota spent until 00:00 UTC"
        return f"healthy, {held['text']}"
    return "healthy, cooling" if row["cooling"] else "healthy"


def _settings(row: dict[str, Any]) -> dict[str, str]:
    """The provider's settings, with its budget: "budget=20/s (18 left)", what holds it."""
    settings = dict(row["settings"])
    budget = row["budget"]
    if budget["limits"]:
        left = ", ".join(f"{v:.0f}" for v in budget["remaining"].values())
        unit = " recipients" if budget["unit"] == "recipients" else ""
        settings["budget"] = ",".join(budget["limits"]) + unit + (f" ({left} left)" if left else "")
    if budget["held"] is not None:
        settings["held"] = budget["held"]["text"]
    return settings

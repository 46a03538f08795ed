"""`mailrelay providers` (what is configured and how it has been doing) and `mailrelay status`
(probe every provider now, without sending)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import App, json_option, pass_app
from mailrelay.errors import StatusExit

if TYPE_CHECKING:
    from mailrelay.state import ProviderState


def _state_fields(entry: ProviderState | None) -> dict[str, Any]:
    if entry is None:
        return {
            "sent": 0,
            "failed": 0,
            "consecutive_failures": 0,
            "last_success": None,
            "last_failure": None,
            "last_error": None,
            "cooldown_until": None,
        }
    return {
        "sent": entry.sent,
        "failed": entry.failed,
        "consecutive_failures": entry.consecutive_failures,
        "last_success": entry.last_success,
        "last_failure": entry.last_failure,
        "last_error": entry.last_error,
        "cooldown_until": entry.cooldown_until,
    }


def providers_document(app: App) -> dict[str, Any]:
    """The `providers --json` document (also `GET /v1/providers` of `serve`)."""
    engine = app.engine()
    state = engine.store.load()
    plan = engine.plan(state)
    first = plan[0].name if plan else None
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(engine.providers, 1):
        rows.append(
            {
                "position": i,
                "name": p.name,
                "type": p.type,
                "sticky": p.name == state.last_provider,
                "next": p.name == first,
                "settings": p.describe(),
                **_state_fields(state.providers.get(p.name)),
                "cooling": engine.cooling_until(state, p) is not None,
            }
        )
    return {
        "policy": engine.policy.order,
        "config_file": app.settings.source,
        "state_file": engine.store.location,
        "last_provider": state.last_provider,
        "providers": rows,
    }


def status_document(app: App, timeout: float) -> dict[str, Any]:
    """The `status --json` document (also `GET /v1/status`): every provider probed at once."""
    from mailrelay.engine import probe

    engine = app.engine()
    state = engine.store.load()
    probes = probe(engine.providers, timeout)
    healthy = sum(1 for p in probes if p.health.ok)
    if healthy == len(probes):
        code = StatusExit.HEALTHY
    elif healthy:
        code = StatusExit.DEGRADED
    else:
        code = StatusExit.NONE_HEALTHY
    rows = [{**p.to_dict(), **_state_fields(state.providers.get(p.provider))} for p in probes]
    return {"healthy": healthy, "total": len(probes), "exit_code": int(code), "providers": rows}


@click.command(context_settings={"max_content_width": 100})
@json_option
@pass_app
def providers(app: App, json_mode: bool) -> None:
    """List the configured providers in order, with the state's counters.

    The provider marked "sticky" took the last message; "next" is where the next send starts.

    \b
    Examples:
      mailrelay providers
      mailrelay --provider smtp://127.0.0.1:2525?security=none providers --json
    """
    out = app.output(json_mode=json_mode)
    doc = providers_document(app)
    rows = doc["providers"]
    if out.json_mode:
        out.emit_json(doc)
        return
    from mailrelay.output import fmt_time

    table_rows = []
    for r in rows:
        marks = [m for m, on in (("sticky", r["sticky"]), ("next", r["next"])) if on]
        cool = fmt_time(r["cooldown_until"]) if r["cooling"] else "-"
        table_rows.append(
            [
                str(r["position"]),
                r["name"],
                r["type"],
                ",".join(marks) or "-",
                str(r["sent"]),
                str(r["failed"]),
                cool,
                " ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-",
                r["last_error"] or "-",
            ]
        )
    out.table(
        f"providers (policy {doc['policy']}, state {doc['state_file']})",
        ["#", "name", "type", "mark", "sent", "failed", "cooldown until", "settings", "last error"],
        table_rows,
    )


@click.command(context_settings={"max_content_width": 100})
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long each probe may take (they run at once).",
)
@json_option
@pass_app
def status(app: App, timeout: float, json_mode: bool) -> None:
    """Probe every provider without sending and say who is healthy.

    SMTP: connect, EHLO, TLS, AUTH, NOOP, QUIT. HTTP APIs: a read-only request that proves
    the credentials. outbox: the folder is writable. sendmail: the command is executable.
    Exit status: 0 all healthy, 1 degraded, 69 none healthy.

    \b
    Examples:
      mailrelay status
      mailrelay status --json --timeout 5
    """
    out = app.output(json_mode=json_mode)
    doc = status_document(app, timeout)
    rows = doc["providers"]
    healthy, code = doc["healthy"], doc["exit_code"]
    if out.json_mode:
        out.emit_json(doc)
    else:
        from mailrelay.output import fmt_time

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
                    "healthy" if r["healthy"] else f"FAILING ({r['outcome'] or 'error'})",
                    f"{r['latency_ms']:.0f} ms",
                    r["detail"] or "-",
                    fmt_time(r["last_success"]),
                    fmt_time(r["last_failure"]),
                    r["last_error"] or "-",
                ]
                for r in rows
            ],
        )
    click.get_current_context().exit(int(code))

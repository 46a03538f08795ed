"""`mailrelay providers` (what is configured and how it has been doing) and `mailrelay status`
(probe every provider now, without sending)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import App, global_options, json_option, pass_app, probe_timeout_option
from mailrelay.cli.completion import complete_provider_names
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
            "outcomes": {},
        }
    return {
        "sent": entry.sent,
        "failed": entry.failed,
        "consecutive_failures": entry.consecutive_failures,
        "last_success": entry.last_success,
        "last_failure": entry.last_failure,
        "last_error": entry.last_error,
        "cooldown_until": entry.cooldown_until,
        "outcomes": dict(entry.outcomes),
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
                "config_problem": next(filter(None, (s.missing() for s in p.secrets)), None),
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
    """The `status --json` document (also `GET /v1/status`): the providers (those of --via /
    `status NAME`, else all) probed at once."""
    from mailrelay.probes import probe

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
    rows = [
        {
            **p.to_dict(),
            **_state_fields(state.providers.get(p.provider)),
            "cooling": engine.cooling_until(state, provider) is not None,
        }
        for p, provider in zip(probes, engine.providers, strict=True)
    ]
    return {"healthy": healthy, "total": len(probes), "exit_code": int(code), "providers": rows}


@click.group(invoke_without_command=True, context_settings={"max_content_width": 100})
@click.option(
    "--wide",
    is_flag=True,
    help="On a terminal, show each provider's settings too (as -v does).",
)
@global_options()
@json_option
@pass_app
def providers(app: App, wide: bool, json_mode: bool) -> None:
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
    from mailrelay.clock import when_text
    from mailrelay.output import Styled

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
                " ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-",
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
def reset(app: App, names: tuple[str, ...]) -> None:
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
@global_options()
@json_option
@pass_app
def status(app: App, names: tuple[str, ...], timeout: float, json_mode: bool) -> None:
    """Probe every provider (or those NAMEd) without sending and say who is healthy.

    SMTP: connect, EHLO, TLS, AUTH, NOOP, QUIT. HTTP APIs: a read-only request that proves
    the credentials. outbox: the folder is writable. sendmail: the command is executable.
    Exit status: 0 all healthy, 1 degraded, 69 none healthy.

    \b
    Examples:
      mailrelay status
      mailrelay status --json --timeout 5
      mailrelay status backup
    """
    out = app.output(json_mode=json_mode)
    app.via = list(names)
    doc = status_document(app, timeout)
    rows = doc["providers"]
    healthy, code = doc["healthy"], doc["exit_code"]
    if out.json_mode:
        out.emit_json(doc)
    else:
        from mailrelay.clock import when_text
        from mailrelay.output import health_cell

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
        held = len(app.spool().held_files())
        if held:  # sendmail mode keeps these until the configuration is mended
            out.warn(
                f"{held} message(s) held until the configuration allows sending them; "
                "'mailrelay queue list' says why, 'mailrelay queue flush' sends them"
            )
    click.get_current_context().exit(int(code))


def _health_text(row: dict[str, Any]) -> str:
    if not row["healthy"]:
        return f"FAILING ({row['outcome'] or 'error'})"
    return "healthy, cooling" if row["cooling"] else "healthy"

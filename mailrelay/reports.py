"""The documents the front ends show of the providers: `providers_document` (`providers
--json`, `GET /v1/providers`, the status page) and `status_document` (`status --json`, `GET
/v1/status`), and `jsonable`, how their times are written in JSON."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailrelay.errors import StatusExit

if TYPE_CHECKING:
    from mailrelay.app import App
    from mailrelay.state import ProviderState


def jsonable(value: Any) -> Any:
    """`json.dumps`' default: a time as RFC 3339 UTC ("Z")."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


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
    from mailrelay.ratelimit.report import budget_document

    engine = app.engine()
    budgets = engine.pacer.store if engine.pacer is not None else None
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
                "budget": budget_document(budgets, p),
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
    from mailrelay.ratelimit.report import budget_document

    engine = app.engine()
    budgets = engine.pacer.store if engine.pacer is not None else None
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
            "budget": budget_document(budgets, provider),
        }
        for p, provider in zip(probes, engine.providers, strict=True)
    ]
    return {"healthy": healthy, "total": len(probes), "exit_code": int(code), "providers": rows}

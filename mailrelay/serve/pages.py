"""`/`, the status page of the service: rendered on the server, refreshes itself, made here
with nothing from elsewhere (no CDN, no assets). `/api` is in apipage.py.

It speaks as the CLI does: the health words and colours of `mailrelay status` (healthy
green, cooling yellow, FAILING red), the queue in the words of `mailrelay queue list`. A
provider the state knows nothing about is probed when the page loads, once per PROBE_EVERY
for the whole host (the service's probe gate decides which worker probes; the result is kept
in a file beside the gate's, so every worker shows it)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailrelay.clock import when_text
from mailrelay.serve.chart import chart_svg
from mailrelay.spool.listing import FAILED_COLUMNS, QUEUED_COLUMNS, failed_rows, queued_rows

if TYPE_CHECKING:
    from mailrelay.app import App
    from mailrelay.providers.base import Provider
    from mailrelay.serve.service import Service

REFRESH_SECONDS = 10
PROBE_EVERY = 300  # seconds: how often a provider with no history is probed by the page
PROBE_TIMEOUT = 5.0
SHOWN = 50  # queue rows shown per table; the count says how many there are
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}th,td{padding:.35em .8em;
border-bottom:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}
.health{font-weight:600;padding:.1em .5em;border-radius:.3em;color:#fff;white-space:nowrap}
.healthy{background:#2e7d32}.cooling{background:#f9a825;color:#222}.failing{background:#c62828}
.unknown{background:#757575}code{background:#f4f4f4;padding:0 .2em}.when{color:#666}
"""


def health_of(row: dict[str, Any], probed: dict[str, Any] | None = None) -> tuple[str, str]:
    """(CSS class, word) for a provider: the state's view, as `mailrelay status` words it,
    or the page's own probe for a provider the state knows nothing about."""
    if row["cooling"]:
        return "cooling", "cooling"
    if row["sent"] == 0 and row["failed"] == 0:
        if probed is None:
            return "unknown", "unknown"
        if probed["healthy"]:
            return "healthy", "healthy"
        return "failing", f"FAILING ({probed['outcome'] or 'error'})"
    if row["consecutive_failures"]:
        return "failing", f"FAILING ({row.get('last_outcome') or 'error'})"
    return "healthy", "healthy"


def last_error(row: dict[str, Any]) -> str:
    """The last error with when it happened; none once a success is newer."""
    failure, success = row["last_failure"], row["last_success"]
    if not row["last_error"] or (success is not None and (failure is None or success > failure)):
        return "-"
    return f"{escape(row['last_error'])}" + (
        f" <span class=when>({escape(when_text(failure))})</span>" if failure else ""
    )


def probe_unknown(service: Service, providers: list[Provider], now: datetime) -> dict[str, Any]:
    """Probe results for `providers` (those the state knows nothing about), from the file
    another worker or an earlier load left, else probed now by the worker the gate lets."""
    gate = service.engine.probe_gate
    folder = Path(getattr(gate, "path", Path(service.app.spool_dir()))).parent / "page-probes"
    slot = datetime.fromtimestamp(
        int(now.timestamp()) // PROBE_EVERY * PROBE_EVERY, timezone.utc
    ) + timedelta(seconds=PROBE_EVERY)
    results: dict[str, Any] = {}
    due = []
    for p in providers:
        known = _read(folder, p.name, now)
        if known is not None:
            results[p.name] = known
        elif gate.claim(f"page-probe:{p.name}", slot):
            due.append(p)
    if due:
        from mailrelay.probes import probe

        for one in probe(due, PROBE_TIMEOUT):
            results[one.provider] = found = {**one.to_dict(), "at": now.timestamp()}
            _write(folder, one.provider, found)
    return results


def _file(folder: Path, name: str) -> Path:
    return folder / (name.encode("utf-8").hex() + ".json")


def _read(folder: Path, name: str, now: datetime) -> dict[str, Any] | None:
    from mailrelay.fsutil import read_regular_file

    try:
        found: dict[str, Any] = json.loads(read_regular_file(_file(folder, name)))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or now.timestamp() - float(found.get("at", 0)) > PROBE_EVERY:
        return None
    return found


def _write(folder: Path, name: str, found: dict[str, Any]) -> None:
    from mailrelay.fsutil import make_private_dirs, replace_private

    try:
        make_private_dirs(folder)
        replace_private(_file(folder, name), json.dumps(found).encode("utf-8"), sync=False)
    except OSError:
        pass  # the page shows the probe now; the next load probes again


def _provider_rows(service: Service, doc: dict[str, Any], now: datetime) -> str:
    state = service.engine.store.load()
    unknown = [
        p
        for p, r in zip(service.engine.providers, doc["providers"], strict=True)
        if not r["cooling"] and r["sent"] == 0 and r["failed"] == 0
    ]
    probed = probe_unknown(service, unknown, now) if unknown else {}
    rows = []
    for r in doc["providers"]:
        entry = state.providers.get(r["name"])
        r = {**r, "last_outcome": entry.last_outcome if entry else None}
        css, word = health_of(r, probed.get(r["name"]))
        left = "-"
        if r["cooling"] and r["cooldown_until"] is not None:
            left = f"{max(0, int((r['cooldown_until'] - now).total_seconds()))} s"
        detail = probed[r["name"]].get("detail") if r["name"] in probed else None
        rows.append(
            "<tr>"
            f"<td>{r['position']}</td><td class=name>{escape(r['name'])}</td>"
            f"<td>{escape(r['type'])}</td>"
            f'<td><span class="health {css}">{escape(word)}</span>'
            + (f"<br><small>{escape(detail)}</small>" if detail else "")
            + f"</td><td>{left}</td><td>{r['sent']}</td><td>{r['failed']}</td>"
            f"<td>{escape(when_text(r['last_success']))}</td>"
            f"<td class=error>{last_error(r)}</td>"
            f"<td>{chart_svg(r['name'], entry.minutes if entry else {}, now)}</td>"
            "</tr>"
        )
    return "".join(rows)


def _table(ident: str, columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows[:SHOWN]
    )
    more = f"<p>and {len(rows) - SHOWN} more: <code>mailrelay queue list</code></p>"
    return f"<table id={ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" + (
        more if len(rows) > SHOWN else ""
    )


def _queue(app: App) -> tuple[str, str]:
    """(the spool depth for the summary line, the queue's section)."""
    try:
        spool = app.spool()
        entries, held, failed = spool.entries(), spool.held(), spool.entries(failed=True)
        now = spool.now()
    except OSError as exc:
        return "unreadable", f"<h2>Queue</h2><p>the spool cannot be read: {escape(str(exc))}</p>"
    parts = [
        f"<h2>Queue</h2><p><strong id=queued>{len(entries)}</strong> queued, "
        f"<strong id=held>{len(held)}</strong> held, "
        f"<strong id=failed>{len(failed)}</strong> failed "
        f"(<code>{escape(spool.where)}</code>)</p>"
    ]
    if entries or held:
        parts.append(_table("queue", QUEUED_COLUMNS, queued_rows(held, entries, now)))
    if failed:
        parts.append("<h3>Failed</h3>")
        parts.append(_table("failed-messages", FAILED_COLUMNS, failed_rows(failed, now)))
    return str(len(entries) + len(held)), "".join(parts)


def status_page(service: Service) -> str:
    from mailrelay.reports import providers_document
    from mailrelay.secrets import scrub

    app = service.app
    doc = providers_document(app)
    now = datetime.now(timezone.utc)
    depth, queue = _queue(app)
    rows = _provider_rows(service, doc, now)
    return scrub(f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta http-equiv=refresh content={REFRESH_SECONDS}>
<title>mailrelay status</title><style>{_STYLE}</style></head>
<body><h1>mailrelay status</h1>
<p>Policy <code>{escape(doc["policy"])}</code>; last provider
<code>{escape(doc["last_provider"] or "-")}</code>; spool depth
<strong id=spool>{depth}</strong>. This page refreshes every {REFRESH_SECONDS} s
({escape(when_text(now))}). <a href="/api">API</a></p>
<table id=providers><thead><tr><th>#</th><th>provider</th><th>type</th><th>health</th>
<th>cooldown left</th><th>sent</th><th>failed</th><th>last success</th><th>last error</th>
<th>last hour</th></tr></thead><tbody>
{rows}
</tbody></table>
{queue}
</body></html>
""")

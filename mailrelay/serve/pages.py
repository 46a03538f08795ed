"""`/`, the status page of the service: rendered on the server, refreshes itself, made here
with nothing from elsewhere (no CDN, no assets). `/api` is in apipage.py."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrelay.serve.service import Service

REFRESH_SECONDS = 10
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}th,td{padding:.35em .8em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.health{font-weight:600;padding:.1em .5em;border-radius:.3em;color:#fff}
.healthy{background:#2e7d32}.failing{background:#ef6c00}.cooling{background:#c62828}
.unknown{background:#757575}code{background:#f4f4f4;padding:0 .2em}
"""


def health_of(row: dict[str, Any]) -> str:
    """The word (and CSS class) for a provider as the state shows it, without probing."""
    if row["cooling"]:
        return "cooling"
    if row["sent"] == 0 and row["failed"] == 0:
        return "unknown"
    return "failing" if row["consecutive_failures"] else "healthy"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def status_page(service: Service) -> str:
    from mailrelay.cli.providers import providers_document

    app = service.app
    doc = providers_document(app)
    now = datetime.now(timezone.utc)
    try:
        depth = str(len(app.spool().files()))
    except OSError:
        depth = "unreadable"
    rows = []
    for r in doc["providers"]:
        health = health_of(r)
        left = "-"
        if r["cooling"] and r["cooldown_until"] is not None:
            left = f"{max(0, int((r['cooldown_until'] - now).total_seconds()))} s"
        rows.append(
            "<tr>"
            f"<td>{r['position']}</td><td class=name>{escape(r['name'])}</td>"
            f"<td>{escape(r['type'])}</td>"
            f'<td><span class="health {health}">{health}</span></td>'
            f"<td>{left}</td><td>{r['sent']}</td><td>{r['failed']}</td>"
            f"<td>{escape(_when(r['last_success']))}</td>"
            f"<td>{escape(r['last_error'] or '-')}</td>"
            "</tr>"
        )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta http-equiv=refresh content={REFRESH_SECONDS}>
<title>mailrelay status</title><style>{_STYLE}</style></head>
<body><h1>mailrelay status</h1>
<p>Policy <code>{escape(doc["policy"])}</code>; last provider
<code>{escape(doc["last_provider"] or "-")}</code>; spool depth
<strong id=spool>{depth}</strong>. This page refreshes every {REFRESH_SECONDS} s
({escape(_when(now))}). <a href="/api">API</a></p>
<table id=providers><thead><tr><th>#</th><th>provider</th><th>type</th><th>health</th>
<th>cooldown left</th><th>sent</th><th>failed</th><th>last success</th><th>last error</th>
</tr></thead><tbody>
{"".join(rows)}
</tbody></table></body></html>
"""

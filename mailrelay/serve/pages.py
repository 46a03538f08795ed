"""The two pages of the service, made here with nothing from elsewhere (no CDN, no assets):
`/` the status page (rendered on the server, refreshes itself) and `/api`, a small page
whose script renders /openapi.json."""

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
.op{margin:.6em 0;padding:.5em .8em;border:1px solid #ddd;border-radius:.3em}
.method{font-weight:700;text-transform:uppercase;margin-right:.6em}
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
        depth = str(app.spool().depth())
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


def api_page() -> str:
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>mailrelay API</title>
<style>{_STYLE}</style></head>
<body><h1>mailrelay API</h1>
<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
</p><div id=operations>Loading /openapi.json ...</div>
<script>
"use strict";
function el(tag, cls, text) {{
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}}
fetch("/openapi.json").then(r => r.json()).then(doc => {{
  const root = document.getElementById("operations");
  root.textContent = "";
  root.appendChild(el("p", "", doc.info.description || ""));
  for (const [path, item] of Object.entries(doc.paths)) {{
    for (const [method, op] of Object.entries(item)) {{
      const box = el("div", "op");
      box.dataset.operation = op.operationId;
      const head = el("div");
      head.appendChild(el("span", "method", method));
      head.appendChild(el("code", "path", path));
      head.appendChild(el("span", "", " " + (op.summary || "")));
      box.appendChild(head);
      if (op.description) box.appendChild(el("p", "", op.description));
      const list = el("ul");
      for (const [code, resp] of Object.entries(op.responses || {{}})) {{
        list.appendChild(el("li", "", code + ": " + (resp.description || "")));
      }}
      box.appendChild(list);
      root.appendChild(box);
    }}
  }}
}}).catch(err => {{
  document.getElementById("operations").textContent = "could not load /openapi.json: " + err;
}});
</script></body></html>
"""

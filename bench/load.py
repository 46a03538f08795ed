"""HTTP load for the serve scenario: `wrk` when it is installed (a C load generator, so the
client takes little of the CPU the services share), else a small Python one (threads, each
one keep-alive http.client connection, a bounded number of POSTs). Both give requests/s,
latency percentiles and the status codes seen."""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    codes: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def generator() -> str:
    """What `load` will use: "wrk" when it is on PATH, else "python"."""
    return "wrk" if shutil.which("wrk") else "python"


def load(
    port: int, path: str, doc: dict[str, object], token: str, *, connections: int, requests: int
) -> LoadResult:
    """About `requests` POSTs of `doc` over `connections` keep-alive connections."""
    if generator() == "wrk":
        return wrk_load(port, path, doc, token, connections=connections, requests=requests)
    per = max(1, requests // connections)
    return post_load(port, path, doc, token, threads=connections, per_thread=per)


# wrk runs for a time, not a count; each thread keeps its own status counts, summed in done()
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("codes")) do
      table.insert(parts, string.format('"%%d": %%d', code, n))
    end
  end
  io.write(string.format(
    'BENCH {"requests": %%d, "seconds": %%f, "p50_us": %%f, "p99_us": %%f, "codes": [{%%s}]}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    table.concat(parts, "}, {")))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_load(
    port: int, path: str, doc: dict[str, object], token: str, *, connections: int, requests: int
) -> LoadResult:
    # wrk is given a duration: as long as the Python generator's count would take at
    # ~1,000 req/s, at least 2 s
    seconds = max(2, round(requests / 1000))
    script = WRK_SCRIPT % {
        "body": _lua_string(json.dumps(doc)),
        "auth": _lua_string(f"Bearer {token}"),
    }
    with tempfile.TemporaryDirectory(prefix="mailrelay-wrk-") as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(script)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s",
             "-s", str(lua), f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 120, check=True,
        ).stdout  # fmt: skip
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"bench: wrk gave no summary: {out.strip()[:300]}")
    found = json.loads(line[len("BENCH ") :])
    codes: dict[int, int] = {}
    for one in found["codes"]:
        for code, n in one.items():
            codes[int(code)] = codes.get(int(code), 0) + n
    return LoadResult(
        found["requests"], found["seconds"], found["p50_us"] / 1000, found["p99_us"] / 1000, codes
    )


def post_load(
    port: int, path: str, doc: dict[str, object], token: str, *, threads: int, per_thread: int
) -> LoadResult:
    body = json.dumps(doc).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        seen: dict[int, int] = {}
        for _ in range(per_thread):
            start = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - start)
            seen[resp.status] = seen.get(resp.status, 0) + 1
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in seen.items():
                codes[k] = codes.get(k, 0) + v

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - start
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return LoadResult(len(latencies), seconds, p50, p99, codes)

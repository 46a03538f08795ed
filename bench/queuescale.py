"""The `redis_queue_large` scenario: `queue list` and `queue flush --now` of a queue in Redis
at several lengths (10,000, 50,000 and 100,000 messages by default; `--large-sizes`), each
reported as time per 10,000 messages, so a cost that grows faster than the queue (a scan
inside a scan) shows as a per-10,000 time that rises with the length.

The queue is filled in the bench's process through the library (RedisSpool.add, as a failed
first try queues a message), then each command runs as its own process: `queue list` (the
table) and `queue list --json` three times each (the median is reported), then the flush,
once, to the runner's aiosmtpd sink, whose count must grow by exactly the queue's length.
The server runs without persistence (what is measured is the spool's work, not the disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.queue import _fill

if TYPE_CHECKING:
    from bench.__main__ import Bench
    from bench.servers import Server

DEFAULT_SIZES = (10_000, 50_000, 100_000)
QUICK_SIZES = (2_000, 10_000)
LIST_RUNS = 3


def redis_queue_large(bench: Bench, http: Server, smtp: Server) -> None:
    from tests.redisserver import RedisServer, flush

    runner = sys.modules[type(bench).__module__]
    Variant, run_once = runner.Variant, runner.run_once
    binary = bench.redis_binary()
    if binary is None:
        return
    sizes = bench.large_sizes or (QUICK_SIZES if bench.quick else DEFAULT_SIZES)
    cfg = bench.config("queue-large", [bench.smtp(smtp.port)])
    per10k: dict[str, list[float]] = {"list": [], "list --json": [], "flush": []}
    with RedisServer(binary) as server:
        for n in sizes:
            flush(server)
            _fill(server.url, bench.work / "queue-large-fill", n)
            table = Variant(
                f"queue list ({n:,} queued)",
                bench.mr(cfg, "queue", "list", state=server.url),
                env=bench.env,
                per=n,
            )
            listed = Variant(
                f"queue list --json ({n:,} queued)",
                bench.mr(cfg, "queue", "list", "--json", state=server.url),
                env=bench.env,
                per=n,
            )
            for _ in range(LIST_RUNS):  # the median of a few: a listing is quick
                run_once(table, timeout=3600)
                run_once(listed, timeout=3600)
            if bench.large_list_only:
                _rows(bench, per10k, n, (("list", table), ("list --json", listed)))
                continue
            sender = Variant(
                f"queue flush --now ({n:,} queued)",
                bench.mr(cfg, "queue", "flush", "--now", state=server.url),
                env=bench.env,
                per=n,
            )
            before = smtp.count()
            run_once(sender, timeout=3600)
            sent = smtp.count() - before
            if sent != n:
                raise SystemExit(f"bench: the flush of {n} delivered {sent}")
            left = _count(bench, cfg, server.url)
            if left:
                raise SystemExit(f"bench: {left} message(s) left after the flush of {n}")
            _rows(bench, per10k, n, (("list", table), ("list --json", listed), ("flush", sender)))
    small, large = sizes[0], sizes[-1]
    for key, values in per10k.items():
        if not values:
            continue
        ratio = values[-1] / values[0]
        what = f"queue {key}: per 10,000 at {large:,} / at {small:,}"
        bench.check("redis_queue_large", what, ratio, "≤ 1.5 (linear)", ratio <= 1.5)


def _count(bench: Bench, cfg: Path, url: str) -> int:
    argv = bench.mr(cfg, "queue", "list", "--json", state=url)
    out = subprocess.run(argv, capture_output=True, env=bench.env, check=True).stdout
    count: int = json.loads(out)["count"]
    return count


def _rows(bench: Bench, per10k: dict[str, list[float]], n: int, done: Any) -> None:
    runner = sys.modules[type(bench).__module__]
    for key, v in done:
        ms = v.median * 1000 / (n / 10_000)
        per10k[key].append(ms)
        spread = v.spread if len(v.times) > 1 else "1 run"
        note = f"{ms:,.0f} ms per 10,000; {v.rate:,.0f} msg/s"
        bench.rows.append(runner.Row("redis_queue_large", v.label, v.median * 1000, spread, note))

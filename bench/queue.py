"""The `redis_queue` scenario: the queue in Redis beside the local spool folder, in the same
rounds. Each round queues N messages in an outage (`send --batch --queue`, the provider a
port nobody listens on) into each spool, then sends them (`queue flush --now`) to the
aiosmtpd sink; both commands are timed, and so is one `send --queue` of a single message
(its answer waits for the server's fsync; the batch waits once, at its end). The Redis
server runs as advised for a queue: `appendonly yes`, `appendfsync everysec`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.servers import Server, dead_port

if TYPE_CHECKING:
    from bench.__main__ import Bench


def redis_queue(bench: Bench, http: Server, smtp: Server) -> None:
    from tests.redisserver import RedisServer

    runner = sys.modules[type(bench).__module__]  # bench's own module (run as __main__)
    Variant, run_once = runner.Variant, runner.run_once

    binary = bench.redis_binary()
    if binary is None:
        return
    n = 100 if bench.quick else 500
    batch = bench._batch_file(n)
    down = bench.config("queue-down", [{**bench.smtp(dead_port()), "name": "down"}])
    up = bench.config("queue-up", [bench.smtp(smtp.port)])
    folder = bench.work / "queue-spool"
    server = RedisServer(binary)
    server.extra = ["--appendonly", "yes", "--appendfsync", "everysec"]
    with server:
        spools = {"local spool": ["--spool", str(folder)], "Redis": ["--spool", server.url]}
        queue: dict[str, Any] = {}
        flush: dict[str, Any] = {}
        for name, where in spools.items():
            state = "queue-local" if name == "local spool" else server.url
            queue[name] = Variant(
                f"send --batch --queue ({n}), {name}",
                bench.mr(down, *where, "send", "--batch", str(batch), "--queue", state=state),
                env=bench.env,
                per=n,
            )
            flush[name] = Variant(
                f"queue flush --now ({n}), {name}",
                bench.mr(up, *where, "queue", "flush", "--now", state=state),
                env=bench.env,
                per=n,
            )
        one = {
            name: Variant(
                f"send --queue (1 message), {name}",
                bench.mr(down, *where, *bench.send_args(), "--queue", state=state),
                env=bench.env,
            )
            for name, where, state in (
                ("local spool", spools["local spool"], "queue-local"),
                ("Redis", spools["Redis"], server.url),
            )
        }
        runs = 2 if bench.quick else max(3, bench.runs // 2)
        for _ in range(runs):
            for name in spools:
                run_once(queue[name])
                run_once(flush[name])
                left = _queued(bench, up, spools[name])
                if left:
                    raise SystemExit(f"bench: {left} message(s) left in the {name} after a flush")
            for name in spools:
                run_once(one[name])  # what a single queued answer costs (the fsync wait)
    variants = [queue["local spool"], queue["Redis"], flush["local spool"], flush["Redis"]]
    variants += [one["local spool"], one["Redis"]]
    bench.record("redis_queue", variants, Path(binary).name)
    for what, pair in (("queueing", queue), ("flush", flush)):
        ratio = pair["Redis"].median / pair["local spool"].median
        bench.check("redis_queue", f"{what}: Redis / local spool", ratio, "≤ 1.3", ratio <= 1.3)


def _queued(bench: Bench, config: Path, where: list[str]) -> int:
    state = where[-1] if "://" in where[-1] else "queue-local"
    argv = bench.mr(config, *where, "queue", "list", "--json", state=state)
    out = subprocess.run(argv, capture_output=True, env=bench.env, check=True).stdout
    count: int = json.loads(out)["count"]
    return count

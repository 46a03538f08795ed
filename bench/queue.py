"""The `redis_queue` scenario: the queue in Redis beside the local spool folder, in the same
rounds. Each round queues N messages in an outage (`send --batch --queue`, the provider a
port nobody listens on) into each spool, then sends them (`queue flush --now`) to the
aiosmtpd sink; both commands are timed, and so is one `send --queue` of a single message
(its answer waits for the server's fsync; the batch waits once, at its end). The Redis
server runs as advised for a queue: `appendonly yes`, `appendfsync everysec`.
"""

from __future__ import annotations

import json
import shlex
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


def redis_queue_fleet(bench: Bench, http: Server, smtp: Server) -> None:
    """Three hosts flushing one queue in Redis at once, against one host alone, to a relay
    that takes 50 ms to answer each message: the consumer group shares the work out."""
    from tests.redisserver import RedisServer
    from tests.smtpserver import SmtpServer

    runner = sys.modules[type(bench).__module__]
    Variant, run_once = runner.Variant, runner.run_once
    binary = bench.redis_binary()
    if binary is None:
        return
    n = bench.fleet_messages or (150 if bench.quick else 600)
    relay = SmtpServer(data_delay=0.05)
    relay.start()
    try:
        cfg = bench.config("queue-fleet", [bench.smtp(relay.port)])
        with RedisServer(binary) as server:
            flush = bench.mr(cfg, "queue", "flush", "--now", state=server.url)
            one = Variant(f"1 host: queue flush --now ({n})", flush, env=bench.env, per=n)
            script = []
            for i in range(3):
                host = bench.work / f"queue-fleet-host-{i}"
                env = f"HOME={host} XDG_DATA_HOME={host}/data XDG_CONFIG_HOME={host}/config"
                script.append(f"{env} {shlex.join(flush)} &")
            script.append("for job in $(jobs -p); do wait $job || exit 1; done")
            three = Variant(
                f"3 hosts at once: queue flush --now ({n})",
                ["bash", "-ec", "\n".join(script)],
                env=bench.env,
                per=n,
            )
            for _ in range(1 if bench.quick or n > 1000 else 2):  # 3,000: one round
                for v in (one, three):
                    _fill(server.url, bench.work / "queue-fleet-fill", n)
                    before = len(relay.messages)
                    run_once(v)
                    if len(relay.messages) - before != n:
                        got = len(relay.messages) - before
                        raise SystemExit(f"bench: {v.label} delivered {got} of {n}")
    finally:
        relay.stop()
    bench.record("redis_queue_fleet", [one, three], "relay: 50 ms a message")
    ratio = one.median / three.median
    bench.check("redis_queue_fleet", "3 hosts / 1 host (rate)", ratio, "≥ 2.5", ratio >= 2.5)


def _fill(url: str, folder: Path, n: int) -> None:
    """Queue n messages in Redis, as a failed first try would (in this process: quick)."""
    from mailrelay.message import build_message
    from mailrelay.providers.base import Outcome
    from mailrelay.result import Attempt
    from mailrelay.spool import Spool
    from mailrelay.spool.redisspool import RedisSpool

    spool = RedisSpool(url, local=Spool(folder))
    failed = [Attempt("relay", "smtp", Outcome.TRANSIENT, "connection refused")]
    try:
        for i in range(n):
            msg = build_message(
                sender="bench@example.com", to=["ops@example.com"], subject=f"q{i}", text="b"
            )
            spool.add(msg, failed, retry=300, max_retry=300)
    finally:
        spool.close()

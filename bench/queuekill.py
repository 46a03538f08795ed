"""The `redis_queue_kill` scenario: issue 22's kill run at its full size, which the test
(tests/test_fleet_queue.py) runs with 45 requests to stay fast. Three hosts (separate
HOMEs, `mailrelay serve` on gunicorn, each on its own port; one Valkey) take 300 requests
(`--kill-requests`) while the relay is down, so every message is queued; the relay comes
back (aiosmtpd, 100 ms a message), and once the flush is under way one host's whole process
tree is SIGKILLed and its HOME deleted. The other two flush the rest, including what the
dead host held once it has been idle its claim time (the hosts' `timeout`, 3 s, + 15 s).
Reported: messages delivered, the ones delivered twice, and the entries the killed host
held at the kill (the only ones that may go twice).
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.__main__ import Bench
    from bench.servers import Server

KILL_AFTER = 0.1  # of the messages delivered before the kill


def redis_queue_kill(bench: Bench, http: Server, smtp: Server) -> None:
    from tests.redisserver import RedisServer
    from tests.smtpserver import SmtpServer
    from tests.test_fleet_queue import Host, held_by, subjects, wait_until

    runner = sys.modules[type(bench).__module__]
    binary = bench.redis_binary()
    if binary is None:
        return
    total = bench.kill_requests or (90 if bench.quick else 300)
    relay = SmtpServer(data_delay=0.1)
    relay.start()
    relay.stop()  # down while the requests come in; back on the same port for the flush
    with RedisServer(binary) as server:
        root = bench.work / "queue-kill"
        hosts = [Host(root, name, server.url, relay.port) for name in ("a", "b", "c")]
        try:
            for host in hosts:
                host.serve()
            start = time.perf_counter()
            with ThreadPoolExecutor(6) as pool:  # two clients per host at a time
                answers = list(pool.map(lambda i: hosts[i % 3].post(f"m{i}"), range(total)))
            posted = time.perf_counter() - start
            codes = sorted({a.status_code for a in answers})
            if codes != [202]:
                raise SystemExit(f"bench: the requests were answered {codes}, not all 202")
            queued = hosts[1].queue_count()
            if queued != total:
                raise SystemExit(f"bench: {queued} of {total} queued")
            relay.start()
            back = time.perf_counter()
            wait_until(
                lambda: sum(subjects(relay).values()) >= total * KILL_AFTER, 120, "the flush"
            )
            victim = hosts[0]
            workers = victim.worker_pids()
            victim.kill_tree()  # the master and its workers, no goodbye
            shutil.rmtree(victim.home)
            held = held_by(server, workers)  # entries left pending by the killed host
            limit = 120 + total  # the claim time (timeout 3 s + 15 s), 100 ms a message, room
            wait_until(lambda: len(subjects(relay)) == total, limit, "every message delivered")
            wait_until(lambda: hosts[1].queue_count() == 0, 60, "the queue emptied")
            flushed = time.perf_counter() - back
            seen = subjects(relay)
        finally:
            for host in hosts:
                host.stop()
            relay.stop()
    deliveries = sum(seen.values())
    twice = sum(n - 1 for n in seen.values() if n > 1)
    lost = total - len(seen)
    Row = runner.Row
    bench.rows.append(
        Row("redis_queue_kill", f"{total} requests across 3 hosts, relay down", posted * 1000,
            "1 run", f"all 202, {queued} queued in Redis")
    )  # fmt: skip
    bench.rows.append(
        Row("redis_queue_kill", "relay back until all delivered, one host SIGKILLed",
            flushed * 1000, "1 run",
            f"{len(seen)} of {total} delivered, {deliveries} deliveries, {twice} duplicate(s), "
            f"{held} entry(ies) in flight at the kill")
    )  # fmt: skip
    bench.check("redis_queue_kill", "messages lost", lost, "0", lost == 0)
    extra = twice - held
    bench.check("redis_queue_kill", "duplicates beyond the in-flight entries", extra, "≤ 0",
                extra <= 0)  # fmt: skip

"""Rate-limit benchmarks (issue 23): pacing against a provider that allows N requests/s.

    python -m bench.ratelimit              # the figures of docs/benchmarks.md
    python -m bench.ratelimit --quick      # smaller batches

- `paced_batch`: one `mailrelay send --batch` of 400 messages (concurrency 8) through a fake
  allowing 20 requests/s, answering after 50 ms; `rate_limit = "20/s"` configured. Target:
  >= 0.9 x 20 msg/s, <= 1% 429s.
- `learned_batch`: the same with no limit configured (`rate_limit = []`): the pace is learned
  from the fake's `ratelimit-*` header fields.
- `fleet`: three "hosts" (separate HOMEs) on one Redis-protocol server, 134 messages each,
  all at once: the same total rate.
- `pacing_cost`: in one process, the engine sending to a fast fake (no limit, no latency)
  with the pacer (a budget file read under flock before each send) and without it,
  interleaved; target: the pacer adds <= 2% to a send.

The fake is tests/ratefake.py (Resend's `POST /emails`, fixed one-second windows). Counts
come from the fake; times from the wall clock around the whole command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.ratefake import RateFake

RATE = 20


def _host(root: Path, name: str, fake: RateFake, **keys: Any) -> dict[str, Any]:
    home = root / name
    home.mkdir()
    config = home / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "bench@example.com"\npolicy = "priority"\n'
        + fake.table(**keys)
        + f'[[providers]]\nname = "fallback"\ntype = "outbox"\npath = "{home / "outbox"}"\n'
    )
    config.chmod(0o600)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    return {"home": home, "config": config, "env": env}


def _batch(home: Path, n: int) -> Path:
    path = home / "batch.jsonl"
    line = '{"to": ["ops@example.com"], "subject": "s", "text": "t"}\n'
    path.write_text(line * n)
    return path


def _mailrelay() -> str:
    beside = Path(sys.executable).parent / "mailrelay"
    return str(beside) if beside.exists() else "mailrelay"


def batches(hosts: int, per_host: int, state: str | None, **keys: Any) -> dict[str, float]:
    """`hosts` batches at once through one fake; messages/s, the share of 429s."""
    with tempfile.TemporaryDirectory() as tmp, RateFake(RATE, latency=0.05) as fake:
        machines = [_host(Path(tmp), f"h{i}", fake, **keys) for i in range(hosts)]
        started = time.monotonic()
        procs = []
        for m in machines:
            argv = [_mailrelay(), "--config", str(m["config"])]
            argv += ["--state", state] if state else []
            argv += ["send", "--batch", str(_batch(m["home"], per_host)), "--concurrency", "8"]
            procs.append(subprocess.Popen(argv, env=m["env"], stdout=subprocess.DEVNULL))
        for p in procs:
            p.wait(timeout=600)
        elapsed = time.monotonic() - started
        total = hosts * per_host
        fallback = sum(len(list((m["home"] / "outbox").glob("*.eml"))) for m in machines)
        return {
            "messages": total,
            "seconds": elapsed,
            "rate": total / elapsed,
            "limited_share": fake.limited / total,
            "via_limited": fake.accepted,
            "via_fallback": fallback,
        }


def pacing_cost(sends: int, rounds: int) -> dict[str, float]:
    """Per-send time of the engine with and without the pacer, same provider and fake."""
    from mailrelay.engine import Engine
    from mailrelay.message import Address, Message
    from mailrelay.providers import registry
    from mailrelay.providers.base import Outcome
    from mailrelay.providers.options import ProviderSpec
    from mailrelay.ratelimit.bucket import FileBudgets
    from mailrelay.ratelimit.pacer import Pacer
    from mailrelay.result import Attempt
    from mailrelay.state import TomlStateStore
    from mailrelay.state.buffered import BufferedStore

    with tempfile.TemporaryDirectory() as tmp, RateFake(None) as fake:
        values = {"api_key": "re_ratefake_key", "base_url": fake.base_url, "rate_limit": []}
        provider = registry.build(ProviderSpec("plain", "resend", values, "bench"))
        provider.hold_connections()
        message = Message(
            sender=Address("bench@example.com"),
            to=[Address("ops@example.com")],
            subject="s",
            text="t",
        )
        store = BufferedStore(TomlStateStore(Path(tmp) / "state.toml"), max_pending=100)
        paced = Engine([provider], store, pacer=Pacer(FileBudgets(Path(tmp) / "ratelimit.json")))
        plain = Engine([provider], store)
        times: dict[str, list[float]] = {"with": [], "without": []}
        ratios = []
        variants = [("without", plain), ("with", paced)]
        for round_ in range(rounds):
            took = {}
            for label, engine in variants[:: 1 if round_ % 2 else -1]:  # alternate the order
                started = time.perf_counter()
                for _ in range(sends):
                    assert engine.send(message).delivered
                took[label] = (time.perf_counter() - started) / sends
                times[label].append(took[label])
            ratios.append(took["with"] / took["without"])
        store.flush()
        # the pacing check alone, per send: what the engine adds around each attempt
        pacer = paced.pacer
        assert pacer is not None
        done = Attempt(provider.name, provider.type, Outcome.ACCEPTED, "")
        started = time.perf_counter()
        for _ in range(2000):
            pacer.turn(provider, message, 60.0)
            pacer.observe(provider, done)
        check = (time.perf_counter() - started) / 2000
        without = statistics.median(times["without"])
        return {
            "without_ms": without * 1000,
            "with_ms": statistics.median(times["with"]) * 1000,
            "added": statistics.median(ratios) - 1,
            "check_us": check * 1e6,
            "check_share": check / without,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    args = parser.parse_args(argv)
    n = 100 if args.quick else 400
    ok = True
    for label, result in (
        ("paced_batch", batches(1, n, None, rate_limit="20/s", unit="requests")),
        ("learned_batch", batches(1, n, None, rate_limit=[])),
    ):
        met = result["rate"] >= 0.9 * RATE and result["limited_share"] <= 0.01
        ok &= met or label == "learned_batch"
        print(
            f"| {label} | {result['messages']} | {result['rate']:.1f} msg/s | "
            f"{result['limited_share']:.1%} | {result['via_limited']} / {result['via_fallback']}"
            f" | {'met' if met else 'MISSED'} |"
        )
    from tests.redisserver import RedisServer, server_binary

    binary = server_binary()
    if binary is not None:
        with RedisServer(binary) as server:
            result = batches(3, n // 3 + 1, server.url, rate_limit="20/s", unit="requests")
        met = result["rate"] >= 0.9 * RATE and result["limited_share"] <= 0.01
        ok &= met
        print(
            f"| fleet | {result['messages']} | {result['rate']:.1f} msg/s | "
            f"{result['limited_share']:.1%} | {result['via_limited']} / {result['via_fallback']}"
            f" | {'met' if met else 'MISSED'} |"
        )
    cost = pacing_cost(40, 7 if args.quick else 25)
    met = cost["check_share"] <= 0.02
    ok &= met
    print(
        f"| pacing_cost | {cost['without_ms']:.2f} ms | {cost['with_ms']:.2f} ms | "
        f"{cost['added']:+.1%} | {cost['check_us']:.1f} us = {cost['check_share']:.1%} | "
        f"{'met' if met else 'MISSED'} |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

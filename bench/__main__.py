"""Run every benchmark scenario side by side and print medians, spreads and ratios.

    python -m bench                 # all scenarios, the default number of runs
    python -m bench --quick         # fewer runs and smaller batches (a smoke test)
    python -m bench --only startup,smtp_send --runs 15
    python -m bench --json results.json
    python -m bench --baseline DIR  # also an older checkout's mailrelay, interleaved

With `--baseline DIR` (a checkout of an earlier commit, installed in DIR/.venv), every
mailrelay command of the scenarios runs a second time from DIR, in the same rounds, and each
gets a "before" row and an after/before check (target ≤ 1.05: a change that reshapes the
code must not make a scenario more than 5% slower). The serve scenario is left out of it.

The runner starts its own servers on 127.0.0.1 (a fast HTTP fake of Postmark's /email, an
aiosmtpd sink, a port that accepts and never answers; a Redis-protocol server for the redis_
scenarios, as the tests start it) and never contacts anything else.
Each command runs in a fresh process, in rounds, every variant once per round, so a slow
moment of the machine hits all of them alike. Peers that are not installed (swaks, msmtp,
apprise) are reported as missing and left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.queue import redis_queue, redis_queue_fleet
from bench.queuekill import redis_queue_kill
from bench.queuescale import redis_queue_large
from bench.servers import Server, dead_port, serve

HERE = Path(__file__).resolve().parent
PY = sys.executable
ADDR_FROM = "bench@example.com"
ADDR_TO = "ops@example.com"


def tool(name: str) -> str | None:
    beside = Path(PY).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@dataclass
class Variant:
    label: str
    argv: list[str]
    stdin: bytes | None = None
    env: dict[str, str] | None = None
    per: int = 1  # messages one run sends (throughput = per / seconds)
    times: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> str:
        lo, hi = min(self.times), max(self.times)
        return f"{lo * 1000:.0f}-{hi * 1000:.0f} ms"

    @property
    def rate(self) -> float:
        return self.per / self.median


def run_once(v: Variant, *, timeout: float = 600) -> None:
    start = time.perf_counter()
    proc = subprocess.Popen(
        v.argv,
        stdin=subprocess.PIPE if v.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=v.env,
    )
    if v.stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(v.stdin)
        proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"bench: {v.label} failed ({proc.returncode}): {err.strip()[:500]}")
    if elapsed > timeout:
        raise SystemExit(f"bench: {v.label} took {elapsed:.0f} s, over its {timeout:.0f} s bound")
    v.times.append(elapsed)
    v.rss_kb.append(usage.ru_maxrss)


def measure(variants: Sequence[Variant], runs: int, *, warmup: bool = True) -> None:
    if warmup:  # fill the page cache and .pyc files; not counted
        for v in variants:
            run_once(v)
            v.times.clear()
            v.rss_kb.clear()
    for _ in range(runs):
        for v in variants:
            run_once(v)


@dataclass
class Row:
    scenario: str
    label: str
    median_ms: float
    spread: str
    note: str = ""


@dataclass
class Check:
    scenario: str
    what: str
    value: float
    target: str
    ok: bool


class Bench:
    def __init__(self, runs: int, quick: bool, work: Path, baseline: Path | None = None) -> None:
        self.runs = runs
        self.baseline = baseline
        # id(variant) -> (the variant, kept alive so no id is reused; its baseline twin)
        self.twins: dict[int, tuple[Variant, Variant]] = {}
        self.quick = quick
        self.work = work
        self.fleet_messages: int | None = None  # redis_queue_fleet's queue (600; quick 150)
        self.large_sizes: tuple[int, ...] = ()  # redis_queue_large's lengths (10k, 50k, 100k)
        self.large_list_only = False  # redis_queue_large without the flushes
        self.kill_requests: int | None = None  # redis_queue_kill's requests (300; quick 90)
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.missing: list[str] = []
        self.mailrelay = tool("mailrelay")
        if self.mailrelay is None:
            raise SystemExit("bench: the mailrelay command is not installed (pip install -e .)")
        home = work / "home"
        home.mkdir()
        # Installed packages run from compiled bytecode; so must we (a checkout run with
        # PYTHONDONTWRITEBYTECODE would compile mailrelay on every start).
        compiled = [str(HERE.parent / "mailrelay"), str(HERE)]
        if baseline is not None:
            self.before = baseline / ".venv" / "bin" / "mailrelay"
            if not self.before.exists():
                raise SystemExit(f"bench: no {self.before} (pip install -e {baseline} there)")
            compiled.append(str(baseline / "mailrelay"))
        subprocess.run([PY, "-m", "compileall", "-q", *compiled], check=True)
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MAILRELAY_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env = {
            **keep,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
            "PYTHONPATH": str(HERE.parent),
        }

    # --- helpers -------------------------------------------------------------------------

    def measure(self, variants: Sequence[Variant], runs: int, *, warmup: bool = True) -> None:
        """`measure`, with each mailrelay command's baseline twin in the same rounds."""
        every = list(variants)
        for v in variants:
            twin = self.twin(v)
            if twin is not None:
                every.append(twin)
        measure(every, runs, warmup=warmup)

    def twin(self, v: Variant) -> Variant | None:
        """The same command run by the baseline checkout (its own state files), or None."""
        if self.baseline is None or self.mailrelay is None:
            return None
        if not any(self.mailrelay in arg for arg in v.argv) or any("://" in a for a in v.argv):
            return None  # not ours, or a shared Redis state the counts of which it checks
        if id(v) not in self.twins:
            argv = [
                a.replace(self.mailrelay, str(self.before)).replace(
                    ".state.toml", ".before.state.toml"
                )
                for a in v.argv
            ]
            env = {**(v.env or self.env), "PYTHONPATH": str(self.baseline)}
            twin = Variant(f"{v.label} (before)", argv, v.stdin, env, v.per)
            self.twins[id(v)] = (v, twin)
        return self.twins[id(v)][1]

    def config(self, name: str, providers: list[dict[str, Any]], **defaults: Any) -> Path:
        lines = ["[defaults]", f'from = "{ADDR_FROM}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
        for p in providers:
            lines.append("[[providers]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in p.items()]
        path = self.work / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def mr(self, config: Path, *args: str, state: str) -> list[str]:
        """The command line; `state` names a state file in the work dir, or is a URL."""
        assert self.mailrelay is not None
        where = state if "://" in state else str(self.work / f"{state}.state.toml")
        return [self.mailrelay, "--config", str(config), "--state", where, *args]

    def send_args(self) -> list[str]:
        return ["send", "-s", "bench", "--text", "hello from the benchmark", ADDR_TO]

    @staticmethod
    def smtp(port: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": "smtp",
            "type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            **extra,
        }

    @staticmethod
    def postmark(port: int) -> dict[str, Any]:
        return {
            "name": "postmark",
            "type": "postmark",
            "server_token": "bench-token",
            "base_url": f"http://127.0.0.1:{port}",
        }

    def record(self, scenario: str, variants: Sequence[Variant], note: str = "") -> None:
        for v in variants:
            for one in (v, self.twin(v)):
                if one is None or not one.times:
                    continue
                extra = f"{one.rate:,.0f} msg/s" if one.per > 1 else ""
                self.rows.append(
                    Row(scenario, one.label, one.median * 1000, one.spread, extra or note)
                )
        for v in variants:
            twin = self.twin(v)
            if twin is not None and twin.times and v.times:
                ratio = v.median / twin.median
                self.check(scenario, f"{v.label}: after / before", ratio, "≤ 1.05", ratio <= 1.05)

    def check(self, scenario: str, what: str, value: float, target: str, ok: bool) -> None:
        self.checks.append(Check(scenario, what, value, target, ok))

    def peer(self, name: str) -> str | None:
        found = tool(name)
        if found is None and name not in self.missing:
            self.missing.append(name)
        return found

    # --- scenarios -----------------------------------------------------------------------

    def startup(self, http: Server, smtp: Server) -> None:
        floor = Variant("python -c 'import click'", [PY, "-c", "import click"], env=self.env)
        assert self.mailrelay is not None
        helpv = Variant("mailrelay --help", [self.mailrelay, "--help"], env=self.env)
        version = Variant("mailrelay --version", [self.mailrelay, "--version"], env=self.env)
        self.measure([floor, helpv, version], self.runs)
        self.record("startup", [floor, helpv, version])
        for v in (helpv, version):
            ratio = v.median / floor.median
            self.check("startup", f"{v.label} / import click", ratio, "≤ 1.5", ratio <= 1.5)

    def smtp_send(self, http: Server, smtp: Server) -> None:
        cfg = self.config("smtp", [self.smtp(smtp.port)])
        floor = Variant(
            "floor: click + smtplib",
            [
                PY,
                str(HERE / "floor" / "smtp_send.py"),
                "--port",
                str(smtp.port),
                "-r",
                ADDR_FROM,
                "-s",
                "bench",
                "--text",
                "hello from the benchmark",
                ADDR_TO,
            ],
            env=self.env,
        )
        ours = Variant(
            "mailrelay send (smtp)", self.mr(cfg, *self.send_args(), state="smtp"), env=self.env
        )
        variants = [floor, ours]
        swaks = self.peer("swaks")
        if swaks:
            variants.append(
                Variant(
                    "swaks",
                    [
                        swaks,
                        "--server",
                        f"127.0.0.1:{smtp.port}",
                        "--from",
                        ADDR_FROM,
                        "--to",
                        ADDR_TO,
                        "--header",
                        "Subject: bench",
                        "--body",
                        "hello from the benchmark",
                        "--silent",
                        "2",
                    ],
                    env=self.env,
                )
            )
        msmtp = self.peer("msmtp")
        if msmtp:
            variants.append(self._msmtp(msmtp, smtp.port))
        self.measure(variants, self.runs)
        self.record("smtp_send", variants)
        ratio = ours.median / floor.median
        self.check("smtp_send", "mailrelay / click floor", ratio, "≤ 1.3", ratio <= 1.3)

    def _msmtp(self, msmtp: str, port: int) -> Variant:
        mail = f"From: {ADDR_FROM}\nTo: {ADDR_TO}\nSubject: bench\n\nhello from the benchmark\n"
        return Variant(
            "msmtp",
            [
                msmtp,
                "--host=127.0.0.1",
                f"--port={port}",
                "--tls=off",
                "--auth=off",
                f"--from={ADDR_FROM}",
                ADDR_TO,
            ],
            stdin=mail.encode(),
            env=self.env,
        )

    def http_send(self, http: Server, smtp: Server) -> None:
        cfg = self.config("http", [self.postmark(http.port)])
        floor = Variant(
            "floor: click + requests",
            [
                PY,
                str(HERE / "floor" / "http_send.py"),
                "--url",
                f"http://127.0.0.1:{http.port}/email",
                "-r",
                ADDR_FROM,
                "-s",
                "bench",
                "--text",
                "hello from the benchmark",
                ADDR_TO,
            ],
            env=self.env,
        )
        ours = Variant(
            "mailrelay send (postmark API)",
            self.mr(cfg, *self.send_args(), state="http"),
            env=self.env,
        )
        variants = [floor, ours]
        apprise = self.peer("apprise")
        if apprise:
            variants.append(
                Variant(
                    "apprise form://",
                    [
                        apprise,
                        "-t",
                        "bench",
                        "-b",
                        "hello from the benchmark",
                        f"form://127.0.0.1:{http.port}/notify",
                    ],
                    env=self.env,
                )
            )
        self.measure(variants, self.runs)
        self.record("http_send", variants)
        ratio = ours.median / floor.median
        self.check("http_send", "mailrelay / click floor", ratio, "≤ 1.2", ratio <= 1.2)
        if apprise:
            ratio = ours.median / variants[2].median
            self.check("http_send", "mailrelay / apprise", ratio, "≤ 0.4", ratio <= 0.4)

    def dead_provider(self, http: Server, smtp: Server) -> None:
        healthy = self.config("healthy", [self.postmark(http.port)])
        dead = self.config("dead", [self.smtp(dead_port()), self.postmark(http.port)])
        a = Variant(
            "healthy: postmark only", self.mr(healthy, *self.send_args(), state="h"), env=self.env
        )
        b = Variant(
            "dead smtp first, then postmark",
            self.mr(dead, *self.send_args(), state="d"),
            env=self.env,
        )
        self.measure([a, b], self.runs)  # the warm-up run fails over once and records it
        self.record("dead_provider", [a, b])
        ratio = b.median / a.median
        self.check("dead_provider", "later sends / healthy", ratio, "≤ 1.1", ratio <= 1.1)

    def silent_provider(self, http: Server, smtp: Server) -> None:
        with serve("silent") as silent:
            cfg = self.config(
                "silent", [self.smtp(silent.port, timeout=3), self.postmark(http.port)]
            )
            first = Variant(
                "first send (hangs 3 s, then fails over)",
                self.mr(cfg, *self.send_args(), state="s"),
                env=self.env,
            )
            self.measure([first], 1, warmup=False)
            later = Variant(
                "later sends (silent one in cooldown)",
                self.mr(cfg, *self.send_args(), state="s"),
                env=self.env,
            )
            self.measure([later], self.runs, warmup=False)
        self.record("silent_provider", [first, later], note="timeout = 3 s")
        self.check(
            "silent_provider",
            "first send (s)",
            first.median,
            "≈ timeout (3 s)",
            first.median < 3 + 1.5,
        )
        self.check(
            "silent_provider", "later send (s)", later.median, "no timeout paid", later.median < 1.5
        )

    def _batch_file(self, n: int) -> Path:
        path = self.work / f"batch-{n}.jsonl"
        with path.open("w") as fh:
            for i in range(n):
                doc = {
                    "from": ADDR_FROM,
                    "to": f"user{i}@example.com",
                    "subject": f"welcome {i}",
                    "text": f"hello user {i}\n",
                }
                fh.write(json.dumps(doc) + "\n")
        return path

    def batch_http(self, http: Server, smtp: Server) -> None:
        n = 300 if self.quick else 2000
        batch = self._batch_file(n)
        cfg = self.config("batch-http", [self.postmark(http.port)])
        ours = Variant(
            f"mailrelay send --batch ({n})",
            self.mr(cfg, "send", "--batch", str(batch), state="bh"),
            env=self.env,
            per=n,
        )
        floor = Variant(
            f"bare requests.Session loop ({n})",
            [
                PY,
                str(HERE / "floor" / "http_loop.py"),
                f"http://127.0.0.1:{http.port}/email",
                str(batch),
            ],
            env=self.env,
            per=n,
        )
        loop_n = 10 if self.quick else 20
        script = "\n".join(
            shlex.join(self.mr(cfg, *self.send_args(), state="bl")) for _ in range(loop_n)
        )
        shell = Variant(
            f"shell loop of mailrelay send ({loop_n})",
            ["sh", "-ec", script],
            env=self.env,
            per=loop_n,
        )
        runs = max(2, self.runs // 3)
        self.measure([ours, floor], runs)
        self.measure([shell], 1 if self.quick else 2)
        before = http.count()
        run_once(ours)
        sent = http.count() - before
        if sent != n:
            raise SystemExit(f"bench: the batch delivered {sent} of {n}")
        ours.times.pop()
        self.record("batch_http", [ours, floor, shell])
        ratio = ours.rate / floor.rate
        self.check(
            "batch_http", "batch / bare Session loop (throughput)", ratio, "≥ 0.7", ratio >= 0.7
        )
        ratio = ours.rate / shell.rate
        self.check("batch_http", "batch / shell loop (throughput)", ratio, "≥ 50", ratio >= 50)

    def batch_smtp(self, http: Server, smtp: Server) -> None:
        n = 200 if self.quick else 1000
        batch = self._batch_file(n)
        cfg = self.config("batch-smtp", [self.smtp(smtp.port)])
        ours = Variant(
            f"mailrelay send --batch over smtp ({n})",
            self.mr(cfg, "send", "--batch", str(batch), state="bs"),
            env=self.env,
            per=n,
        )
        variants = [ours]
        msmtp = self.peer("msmtp")
        loop_n = 10 if self.quick else 30
        if msmtp:
            one = self._msmtp(msmtp, smtp.port)
            script = "\n".join(
                shlex.join(one.argv) + " <<'EOF'\n" + (one.stdin or b"").decode() + "EOF"
                for _ in range(loop_n)
            )
            variants.append(
                Variant(
                    f"shell loop of msmtp ({loop_n})",
                    ["sh", "-ec", script],
                    env=self.env,
                    per=loop_n,
                )
            )
        self.measure(variants, max(2, self.runs // 3))
        self.record("batch_smtp", variants)
        if msmtp:
            ratio = ours.rate / variants[1].rate
            self.check("batch_smtp", "batch / msmtp loop (throughput)", ratio, "≥ 10", ratio >= 10)

    def serve(self, http: Server, smtp: Server) -> None:
        """mailrelay serve against the floor service, side by side, interleaved rounds;
        then the all-cooling fast path (503 without a provider) against the send path."""
        from bench.load import LoadResult, generator, load

        token = "bench-serve-token"
        workers, threads = "2", "8"
        per_thread = 25 if self.quick else 100
        doc = {"to": [ADDR_TO], "subject": "bench", "text": "hello from the benchmark"}
        sent = self.config("serve", [self.postmark(http.port)])
        cool = self.config(
            "serve-cool",
            [{"name": "dead", "type": "smtp", "host": "127.0.0.1", "port": dead_port(),
              "security": "none", "timeout": 2}],
            cooldown=3600,
        )  # fmt: skip
        for cfg in (sent, cool):
            with cfg.open("a") as f:
                f.write(f'[serve]\ntokens = ["{token}"]\nflush_interval = 3600\n')
        gunicorn = tool("gunicorn")
        if gunicorn is None:
            self.missing.append("gunicorn (pip install '.[serve]')")
            return
        ports = {name: free_tcp_port() for name in ("floor", "serve", "cooling")}
        floor_env = {**self.env, "BENCH_URL": f"http://127.0.0.1:{http.port}/email",
                     "BENCH_TOKEN": token}  # fmt: skip
        procs = {
            "floor": subprocess.Popen(
                [gunicorn, "-k", "gthread", "-w", workers, "--threads", threads, "-b",
                 f"127.0.0.1:{ports['floor']}", "--log-level", "warning",
                 "bench.floor.serve_app:app"],
                env=floor_env, cwd=HERE.parent, stderr=subprocess.DEVNULL,
            ),
            "serve": subprocess.Popen(
                [*self.mr(sent, "serve", state="serve"), "--bind",
                 f"127.0.0.1:{ports['serve']}", "--workers", workers, "--threads", threads],
                env=self.env, stderr=subprocess.DEVNULL,
            ),
            "cooling": subprocess.Popen(
                [*self.mr(cool, "serve", state="serve-cool"), "--bind",
                 f"127.0.0.1:{ports['cooling']}", "--workers", workers, "--threads", threads],
                env=self.env, stderr=subprocess.DEVNULL,
            ),
        }  # fmt: skip
        try:
            for name, port in ports.items():
                wait_for_port(port, procs[name])
            labels = {
                "floor": "floor: Flask + gunicorn gthread + requests",
                "serve": "mailrelay serve (postmark API)",
                "cooling": "mailrelay serve, every provider cooling (503)",
            }
            results: dict[str, list[LoadResult]] = {name: [] for name in ports}
            for port in ports.values():  # warm-up, not counted; cools the dead one
                load(port, "/v1/messages", doc, token, connections=4, requests=20)
            for _ in range(max(1, self.runs // 2)):
                for name, port in ports.items():
                    results[name].append(
                        load(port, "/v1/messages", doc, token, connections=16,
                             requests=16 * per_thread)
                    )  # fmt: skip
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(timeout=60)
        rate = {n: statistics.median(r.rate for r in rs) for n, rs in results.items()}
        p99 = {n: statistics.median(r.p99_ms for r in rs) for n, rs in results.items()}
        gen = generator()
        for name in ports:
            codes = sorted({c for r in results[name] for c in r.codes})
            self.rows.append(
                Row("serve", labels[name], statistics.median(r.p50_ms for r in results[name]),
                    f"p99 {p99[name]:.1f} ms",
                    f"{rate[name]:,.0f} req/s; codes {','.join(map(str, codes))}; load: {gen}")
            )  # fmt: skip
        ratio = rate["serve"] / rate["floor"]
        self.check("serve", "serve / floor (requests/s)", ratio, "≥ 0.9", ratio >= 0.9)
        fast = rate["cooling"] / rate["serve"]
        self.check("serve", "all-cooling 503 / send (requests/s)", fast, "≥ 2", fast >= 2)

    def memory(self, http: Server, smtp: Server) -> None:
        size = 25 * 1024 * 1024
        blob = self.work / "attachment.bin"
        with blob.open("wb") as fh:
            fh.write(os.urandom(size))
        cfg = self.config("mem", [self.smtp(smtp.port)])
        assert self.mailrelay is not None
        base = Variant(
            "mailrelay --version (baseline)", [self.mailrelay, "--version"], env=self.env
        )
        ours = Variant(
            "mailrelay send -a 25 MB (smtp)",
            self.mr(
                cfg,
                "send",
                "-s",
                "big",
                "--text",
                "see attached",
                "-a",
                str(blob),
                ADDR_TO,
                state="m",
            ),
            env=self.env,
        )
        self.measure([base, ours], max(2, self.runs // 3))
        peak = max(ours.rss_kb) * 1024
        self.rows.append(
            Row(
                "memory",
                base.label,
                base.median * 1000,
                base.spread,
                f"peak RSS {max(base.rss_kb) / 1024:.0f} MiB",
            )
        )
        self.rows.append(
            Row(
                "memory",
                ours.label,
                ours.median * 1000,
                ours.spread,
                f"peak RSS {peak / 2**20:.0f} MiB",
            )
        )
        ratio = peak / size
        self.check("memory", "peak RSS / attachment size", ratio, "≤ 4", ratio <= 4)

    def redis_binary(self) -> str | None:
        from tests.redisserver import server_binary

        binary = server_binary()
        if binary is None:
            self.missing.append("redis-server/valkey-server")
        return binary

    def redis_send(self, http: Server, smtp: Server) -> None:
        from tests.redisserver import RedisServer

        binary = self.redis_binary()
        if binary is None:
            return
        cfg = self.config("redis-send", [self.smtp(smtp.port)])
        with RedisServer(binary) as server:
            file = Variant(
                "send (smtp), file state", self.mr(cfg, *self.send_args(), state="rs"),
                env=self.env,
            )  # fmt: skip
            shared = Variant(
                "send (smtp), Redis state",
                self.mr(cfg, *self.send_args(), state=server.url),
                env=self.env,
            )
            self.measure([file, shared], self.runs)
        self.record("redis_send", [file, shared], Path(binary).name)
        ratio = shared.median / file.median
        self.check("redis_send", "Redis state / file state", ratio, "≤ 1.1", ratio <= 1.1)

    def redis_fleet(self, http: Server, smtp: Server) -> None:
        """Two hosts x 8 senders at once, each a loop of single sends, on one Redis."""
        import redis

        from tests.redisserver import RedisServer

        binary = self.redis_binary()
        if binary is None:
            return
        per = 3 if self.quick else 10  # sends per sender
        senders = 16
        cfg = self.config("redis-fleet", [self.smtp(smtp.port)])
        with RedisServer(binary) as server:
            script = []
            for i in range(senders):
                host = self.work / f"fleet-host-{i % 2}"
                env = f"HOME={host} XDG_DATA_HOME={host}/data XDG_CONFIG_HOME={host}/config"
                one = shlex.join(self.mr(cfg, *self.send_args(), state=server.url))
                script.append(f"(for n in $(seq {per}); do {env} {one} || exit 1; done) &")
            script.append("for job in $(jobs -p); do wait $job || exit 1; done")
            fleet = Variant(
                f"2 hosts x 8 senders x {per} sends",
                ["bash", "-ec", "\n".join(script)],
                env=self.env,
                per=senders * per,
            )
            runs = max(2, self.runs // 3)
            self.measure([fleet], runs, warmup=False)
            client = redis.Redis(host="127.0.0.1", port=server.port)
            sent = int(client.hget("{mailrelay}:provider:smtp", "sent") or 0)
            client.close()
        self.record("redis_fleet", [fleet])
        lost = runs * senders * per - sent
        self.check("redis_fleet", "lost updates", lost, "0", lost == 0)


SCENARIOS: dict[str, Callable[[Bench, Server, Server], None]] = {
    "startup": Bench.startup,
    "smtp_send": Bench.smtp_send,
    "http_send": Bench.http_send,
    "dead_provider": Bench.dead_provider,
    "silent_provider": Bench.silent_provider,
    "batch_http": Bench.batch_http,
    "batch_smtp": Bench.batch_smtp,
    "memory": Bench.memory,
    "redis_send": Bench.redis_send,
    "redis_fleet": Bench.redis_fleet,
    "redis_queue": redis_queue,
    "redis_queue_fleet": redis_queue_fleet,
    "redis_queue_large": redis_queue_large,
    "redis_queue_kill": redis_queue_kill,
    "serve": Bench.serve,
}


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: a service on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"bench: nothing listens on port {port} after {limit:g} s")


def report(bench: Bench) -> str:
    out = ["| scenario | variant | median | spread (min-max) | note |", "|---|---|---|---|---|"]
    for r in bench.rows:
        out.append(f"| {r.scenario} | {r.label} | {r.median_ms:,.0f} ms | {r.spread} | {r.note} |")
    out += ["", "| scenario | ratio | value | target | met |", "|---|---|---|---|---|"]
    for c in bench.checks:
        out.append(
            f"| {c.scenario} | {c.what} | {c.value:.2f} | {c.target} | {'yes' if c.ok else 'NO'} |"
        )
    if bench.missing:
        out += ["", f"Not installed, left out: {', '.join(bench.missing)}."]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per variant (7)")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios: " + ", ".join(SCENARIOS)
    )
    parser.add_argument("--quick", action="store_true", help="3 runs, small batches")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="an earlier checkout (installed in DIR/.venv) to run side by side",
    )
    parser.add_argument(
        "--fleet-messages",
        metavar="N",
        type=int,
        help="messages redis_queue_fleet queues (600; --quick 150)",
    )
    parser.add_argument(
        "--large-sizes",
        metavar="N,N,...",
        default="",
        help="queue lengths of redis_queue_large (10000,50000,100000; --quick 2000,10000)",
    )
    parser.add_argument(
        "--large-list-only",
        action="store_true",
        help="redis_queue_large times queue list only (no flush of each length)",
    )
    parser.add_argument(
        "--kill-requests",
        metavar="N",
        type=int,
        help="requests redis_queue_kill sends across three hosts (300; --quick 90)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    runs = args.runs or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="mailrelay-bench-") as tmp:
        bench = Bench(
            runs, args.quick, Path(tmp), args.baseline.resolve() if args.baseline else None
        )
        bench.fleet_messages = args.fleet_messages
        bench.kill_requests = args.kill_requests
        bench.large_list_only = args.large_list_only
        bench.large_sizes = tuple(int(n) for n in args.large_sizes.split(",") if n)
        with serve("http") as http, serve("smtp") as smtp:
            for name in names:
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                SCENARIOS[name](bench, http, smtp)
    print(report(bench))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": [r.__dict__ for r in bench.rows],
                    "checks": [c.__dict__ for c in bench.checks],
                    "missing": bench.missing,
                    "runs": runs,
                    "python": sys.version,
                },
                indent=2,
            )
        )
    return 0 if all(c.ok for c in bench.checks) else 1


if __name__ == "__main__":
    sys.exit(main())

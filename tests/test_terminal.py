"""On a terminal, batches and queue flushes show a progress bar and a summary; off a terminal
(cron, pipes) they do not. The installed command runs under a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

from tests.smtpserver import shared_server
from tests.test_e2e import mailrelay, mailrelay_command
from tests.test_queue import config


def on_terminal(*args: str, timeout: float = 60, columns: int = 100) -> tuple[int, str]:
    """Run mailrelay with stdout and stderr on a pseudo-terminal `columns` wide; its exit
    code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [mailrelay_command(), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm"},
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=timeout)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def batch_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "batch.jsonl"
    lines = [
        json.dumps({"from": "a@example.com", "to": f"u{i}@example.com", "subject": f"s{i}"})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_batch_on_a_terminal_shows_progress_and_a_summary(tmp_path: Path) -> None:
    batch = batch_file(tmp_path, 5)
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        code, output = on_terminal("--config", str(cfg), "send", "--batch", str(batch))
        assert len(server.messages) == 5
    assert code == 0, output
    assert "sending" in output and "5/5" in output  # the bar, finished
    assert "batch: 5 sent, 0 queued, 0 failed, 0 bad lines" in output
    # the same batch off a terminal (as under cron): silent
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "send", "--batch", str(batch), input=None)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_a_flush_on_a_terminal_shows_progress(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    for i in range(3):
        r = mailrelay("--config", str(cfg), "send", "--queue", "-s", f"q{i}", "ops@example.com")
        assert r.returncode == 0, r.stderr
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        code, output = on_terminal("--config", str(cfg), "queue", "flush", "--now")
        assert len(server.messages) == 3
    assert code == 0, output
    assert "flushing the queue" in output and "100%" in output  # the bar, finished
    assert "queue flush: 3 sent" in output


def test_send_on_a_terminal_reads_the_body_until_ctrl_d(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            mailrelay_command(),
            "--provider",
            f"outbox://{outbox}",
            "send",
            "-r",
            "o@example.com",
            "-s",
            "typed",
            "a@example.com",
        ],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        os.write(master, b"typed on the terminal\n\x04")
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert err.decode().count("\n") == 1 and "Ctrl-D" in err.decode()
    [eml] = list(outbox.glob("*.eml"))
    assert b"typed on the terminal" in eml.read_bytes()

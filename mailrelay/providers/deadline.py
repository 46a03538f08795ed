"""Reading a server's answer under one deadline for the whole attempt.

A socket timeout bounds each read, not the answer: a server that sends one byte every
0.4 s, or greeting lines without end, would hold an attempt for as long as it likes. A
`DeadlineReader` gives each read only what is left of the attempt's deadline, so the whole
answer — status line, headers, body, every SMTP reply line — ends by it.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from typing import IO

MAX_ANSWER = 64 * 1024  # bytes of a reply body or an SMTP reply that mailrelay reads


class DeadlineReader(io.RawIOBase):
    """The socket's incoming bytes, each read bounded by what is left until `deadline()`
    (a time.monotonic() value; a kept SMTP session moves it); past it, TimeoutError.
    Closing it leaves the socket open."""

    def __init__(
        self, sock: socket.socket, deadline: Callable[[], float], holds: IO[bytes] | None = None
    ) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline
        self.holds = holds  # a socket file it stands for, closed with it (its close ends
        # the socket once its owner has closed it too, as http.client expects)

    def close(self) -> None:
        if self.holds is not None:
            self.holds.close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        left = self.deadline() - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


def deadline_file(
    sock: socket.socket, deadline: Callable[[], float], holds: IO[bytes] | None = None
) -> io.BufferedReader:
    return io.BufferedReader(DeadlineReader(sock, deadline, holds))

"""BufferedStore in front of a real TomlStateStore file: changes seen at once in memory,
written in a few locked folds, counters adding up across threads and processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mailrelay.errors import StateError
from mailrelay.state import State, TomlStateStore
from mailrelay.state.buffered import BufferedStore

pytestmark = pytest.mark.timeout(60)


class CountingStore(TomlStateStore):
    """The real file store, counting the locked writes it makes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.updates = 0

    def update(self, change: Callable[[State], None]) -> State:
        self.updates += 1
        return super().update(change)


def sent_one(name: str) -> Callable[[State], None]:
    def change(state: State) -> None:
        state.provider(name).sent += 1
        state.last_provider = name

    return change


def on_disk(path: Path, name: str) -> int:
    entry = TomlStateStore(path).load().providers.get(name)
    return entry.sent if entry else 0


def test_changes_show_at_once_and_are_written_in_one_fold(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    inner = CountingStore(path)
    store = BufferedStore(inner, max_pending=1000, max_delay=3600)
    for _ in range(25):
        view = store.update(sent_one("pm"))
    assert view.providers["pm"].sent == 25
    assert store.load().providers["pm"].sent == 25 and store.load().last_provider == "pm"
    assert not path.exists() and inner.updates == 0 and store.pending == 25
    store.flush()
    assert inner.updates == 1 and store.writes == 1 and store.pending == 0
    assert on_disk(path, "pm") == 25
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store.flush()  # nothing pending: no write
    assert inner.updates == 1


def test_load_is_a_copy(tmp_path: Path) -> None:
    store = BufferedStore(TomlStateStore(tmp_path / "s.toml"))
    store.update(sent_one("pm"))
    view = store.load()
    view.providers["pm"].sent = 99
    assert store.load().providers["pm"].sent == 1


def test_written_every_max_pending_changes(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    inner = CountingStore(path)
    store = BufferedStore(inner, max_pending=10, max_delay=3600)
    for i in range(1, 26):
        store.update(sent_one("pm"))
        assert on_disk(path, "pm") == (i // 10) * 10
    assert inner.updates == 2
    with store:  # close() writes the rest
        pass
    assert on_disk(path, "pm") == 25 and inner.updates == 3


def test_written_after_max_delay(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "state.toml"
    store = BufferedStore(TomlStateStore(path), max_pending=1000, max_delay=5, clock=lambda: now[0])
    store.update(sent_one("pm"))
    now[0] = 4.0
    store.update(sent_one("pm"))
    assert not path.exists()
    now[0] = 5.0
    store.update(sent_one("pm"))
    assert on_disk(path, "pm") == 3


def test_starts_from_what_is_on_disk_and_picks_up_other_writers(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    TomlStateStore(path).update(sent_one("pm"))
    store = BufferedStore(TomlStateStore(path), max_pending=1000, max_delay=3600)
    assert store.load().providers["pm"].sent == 1
    store.update(sent_one("pm"))
    TomlStateStore(path).update(sent_one("mg"))  # another process, meanwhile
    store.flush()
    state = store.load()
    assert state.providers["pm"].sent == 2 and state.providers["mg"].sent == 1
    assert on_disk(path, "pm") == 2


def test_a_failed_write_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    store = BufferedStore(TomlStateStore(blocker / "state.toml"), max_pending=3)
    store.update(sent_one("pm"))
    store.update(sent_one("pm"))
    with pytest.raises(StateError):
        store.update(sent_one("pm"))
    assert store.pending == 3 and store.load().providers["pm"].sent == 3
    store.inner = TomlStateStore(path)  # the problem is fixed
    store.flush()
    assert on_disk(path, "pm") == 3 and store.pending == 0


def test_threads_sharing_one_store_add_up(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    inner = CountingStore(path)
    store = BufferedStore(inner, max_pending=16, max_delay=3600)

    def work() -> None:
        for _ in range(100):
            store.update(sent_one("pm"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    store.flush()
    assert on_disk(path, "pm") == 800 and store.load().providers["pm"].sent == 800
    assert inner.updates <= 800 // 16 + 1


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mailrelay.state.buffered import BufferedStore
    from mailrelay.state import TomlStateStore

    def change(state):
        state.provider(sys.argv[2]).sent += 1
        state.provider("shared").sent += 1

    store = BufferedStore(TomlStateStore(Path(sys.argv[1])), max_pending=7, max_delay=3600)
    for _ in range(int(sys.argv[3])):
        store.update(change)
    store.close()
    """
)


def test_two_processes_writing_the_same_file_add_up(tmp_path: Path) -> None:
    path = tmp_path / "state.toml"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "150"])
        for name in ("a", "b")
    ]
    for p in procs:
        assert p.wait(timeout=50) == 0
    state = TomlStateStore(path).load()
    assert state.providers["a"].sent == 150 and state.providers["b"].sent == 150
    assert state.providers["shared"].sent == 300

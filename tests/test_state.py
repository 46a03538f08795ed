"""The TOML state store, on real files, with real concurrent processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailrelay.errors import ExitCode, StateError
from mailrelay.state import (
    SCHEMA,
    ProviderState,
    State,
    StateStore,
    TomlStateStore,
    default_state_path,
    state_path,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
UTC = timezone.utc


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


@pytest.fixture
def warnings() -> Warnings:
    return Warnings()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "state.toml"


@pytest.fixture
def store(path: Path, warnings: Warnings) -> TomlStateStore:
    return TomlStateStore(path, warn=warnings, lock_timeout=2.0)


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def fill(state: State) -> None:
    state.last_provider = "postmark"
    state.last_index = 1
    pm = state.provider("postmark")
    pm.sent += 41
    pm.failed += 2
    pm.last_success = datetime(2026, 11, 22, 9, 14, 3, 987654, tzinfo=UTC)
    # a non-UTC offset is stored as UTC
    pm.last_failure = datetime(2026, 11, 21, 23, 1, 10, tzinfo=timezone(timedelta(hours=1)))
    pm.last_error = 'transient: HTTP 503 from api.postmarkapp.com "quoted"\nsecond line'
    pm.last_outcome = "transient"
    pm.cooldown_until = datetime(2026, 11, 21, 22, 2, 10, 123456, tzinfo=UTC)
    state.provider("relay.example.com")
    state.provider("my smtp").sent += 1
    pm.outcomes.update(accepted=41, transient=2)


# -- round trip and format ------------------------------------------------------------------


def test_store_satisfies_the_protocol(store: TomlStateStore, path: Path) -> None:
    as_protocol: StateStore = store
    assert as_protocol.location == str(path)


def test_missing_file_is_empty_state_and_load_writes_nothing(
    store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    assert store.load() == State()
    assert not path.parent.exists()
    assert warnings == []


def test_round_trip(store: TomlStateStore, path: Path, warnings: Warnings) -> None:
    returned = store.update(fill)
    loaded = TomlStateStore(path).load()
    assert loaded == returned
    assert loaded.last_provider == "postmark"
    assert loaded.last_index == 1
    assert list(loaded.providers) == ["postmark", "relay.example.com", "my smtp"]
    pm = loaded.providers["postmark"]
    assert (pm.sent, pm.failed, pm.consecutive_failures) == (41, 2, 0)
    # whole seconds, except cooldown_until which keeps milliseconds; all in UTC
    assert pm.last_success == datetime(2026, 11, 22, 9, 14, 3, tzinfo=UTC)
    assert pm.last_failure == datetime(2026, 11, 21, 22, 1, 10, tzinfo=UTC)
    assert pm.cooldown_until == datetime(2026, 11, 21, 22, 2, 10, 123000, tzinfo=UTC)
    assert pm.last_success.utcoffset() == timedelta(0)
    assert pm.last_error == 'transient: HTTP 503 from api.postmarkapp.com "quoted"\nsecond line'
    assert pm.last_outcome == "transient"
    assert pm.outcomes == {"accepted": 41, "transient": 2}
    assert loaded.providers["relay.example.com"] == ProviderState()
    assert loaded.providers["my smtp"].sent == 1
    assert warnings == []


def test_layout_matches_design(store: TomlStateStore, path: Path) -> None:
    store.update(fill)
    text = path.read_text()
    assert text.startswith(f"schema = {SCHEMA}\n")
    assert "[failover]\n" in text
    assert 'last_provider = "postmark"\n' in text
    assert "[providers.postmark]\n" in text
    assert '[providers."relay.example.com"]\n' in text
    assert '[providers."my smtp"]\n' in text
    assert "last_success = 2026-11-22T09:14:03Z\n" in text
    assert "last_failure = 2026-11-21T22:01:10Z\n" in text
    assert "cooldown_until = 2026-11-21T22:02:10.123Z\n" in text
    # None fields are omitted
    empty = text.split('[providers."relay.example.com"]\n')[1].split("\n\n")[0]
    assert "last_" not in empty and "cooldown" not in empty
    doc = tomllib.loads(text)
    assert doc["schema"] == SCHEMA
    assert set(doc) == {"schema", "failover", "providers"}


def test_unknown_keys_ignored_and_unconfigured_providers_kept(
    store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    path.write_text(
        textwrap.dedent(
            """\
            schema = 1
            future_top = "x"
            [failover]
            last_provider = "old"
            [providers.old]
            sent = 3
            future_field = [1, 2]
            [providers.old.future_table]
            a = 1
            """
        )
    )
    state = store.load()
    assert state.last_provider == "old"
    assert state.providers["old"].sent == 3

    def bump(s: State) -> None:
        s.provider("new").sent += 1

    store.update(bump)
    again = store.load()
    assert again.providers["old"].sent == 3
    assert again.providers["new"].sent == 1
    assert warnings == []


def test_update_increments_on_what_is_on_disk(store: TomlStateStore, path: Path) -> None:
    other = TomlStateStore(path)

    def bump(s: State) -> None:
        s.provider("a").sent += 1

    store.update(bump)
    other.update(bump)
    assert store.update(bump).providers["a"].sent == 3


def test_change_that_raises_leaves_file_untouched_and_lock_free(
    store: TomlStateStore, path: Path
) -> None:
    store.update(fill)
    before = path.read_bytes()

    def boom(s: State) -> None:
        s.provider("postmark").sent = 0
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError):
        store.update(boom)
    assert path.read_bytes() == before
    store.update(lambda s: None)  # the lock was released


def test_invalid_change_is_refused_before_writing(store: TomlStateStore, path: Path) -> None:
    store.update(fill)
    before = path.read_bytes()

    def negative(s: State) -> None:
        s.provider("postmark").sent = -1

    with pytest.raises(ValueError, match="negative"):
        store.update(negative)
    assert path.read_bytes() == before


# -- corrupt and unreadable files ----------------------------------------------------------

CORRUPT = {
    "garbage bytes": b"\xff\xfe\x00\x81garbage\x00",
    "invalid toml": b"schema = 1\n[failover\nlast_provider = ",
    "wrong type": b'schema = 1\n[providers.a]\nsent = "many"\n',
    "bool counter": b"schema = 1\n[providers.a]\nfailed = true\n",
    "provider not a table": b"schema = 1\n[providers]\na = 3\n",
    "local datetime": b"schema = 1\n[providers.a]\nlast_success = 2026-01-01T00:00:00\n",
    "negative counter": b"schema = 1\n[providers.a]\nconsecutive_failures = -2\n",
    "date out of range": b"schema = 1\n[providers.a]\nlast_failure = 0001-01-01T00:00:00+01:00\n",
    "nested too deeply": b"schema = 1\nx = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "schema 99": b"schema = 99\n",
    "no schema": b'[failover]\nlast_provider = "a"\n',
    "empty": b"",
    "outcomes not a table": b"schema = 1\n[providers.a]\noutcomes = 3\n",
    "outcome not a counter": b'schema = 1\n[providers.a.outcomes]\naccepted = "x"\n',
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=list(CORRUPT))
def test_corrupt_file_is_moved_aside_on_load(
    content: bytes, store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    path.write_bytes(content)
    assert store.load() == State()
    assert not path.exists()
    [aside] = path.parent.glob("state.toml.corrupt-*")
    assert aside.read_bytes() == content
    assert len(warnings) == 1
    assert warnings[0].startswith(f"state file {path} was unreadable (")
    assert warnings[0].endswith(f"; moved to {aside}; starting afresh")
    assert "\n" not in warnings[0]

    # the next update starts afresh and works
    state = store.update(lambda s: setattr(s.provider("a"), "sent", 1))
    assert state.providers["a"].sent == 1
    assert store.load().providers["a"].sent == 1
    assert len(warnings) == 1


def test_corrupt_reasons_are_specific(
    store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    for content, reason in [
        (CORRUPT["garbage bytes"], "(not UTF-8)"),
        (CORRUPT["invalid toml"], "(not valid TOML: "),
        (CORRUPT["wrong type"], "(providers.a.sent: expected an integer)"),
        (CORRUPT["schema 99"], "(schema 99 is not supported (expected 1))"),
        (CORRUPT["negative counter"], "(providers.a.consecutive_failures: negative (-2))"),
        (CORRUPT["outcome not a counter"], "(providers.a.outcomes.accepted: expected an integer)"),
    ]:
        path.write_bytes(content)
        store.load()
        assert reason in warnings[-1]
    # several in the same second do not overwrite each other
    assert len(list(path.parent.glob("state.toml.corrupt-*"))) == 6


def test_corrupt_file_is_moved_aside_on_update(
    store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    path.write_bytes(CORRUPT["schema 99"])
    state = store.update(lambda s: setattr(s, "last_provider", "b"))
    assert state == State(last_provider="b")
    assert len(warnings) == 1 and "moved to" in warnings[0]
    assert len(list(path.parent.glob("state.toml.corrupt-*"))) == 1
    assert store.load().last_provider == "b"


def test_corrupt_file_while_locked_is_not_moved_but_load_still_works(
    path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    path.write_bytes(CORRUPT["invalid toml"])
    store = TomlStateStore(path, warn=warnings, lock_timeout=0.3)
    with hold_lock(path):
        assert store.load() == State()
    assert path.exists()
    assert len(warnings) == 1
    assert "could not move it aside" in warnings[0] and "locked" in warnings[0]


@pytest.mark.skipif(IS_ROOT, reason="root reads any file")
def test_unreadable_file_warns_and_gives_empty_state(
    store: TomlStateStore, path: Path, warnings: Warnings
) -> None:
    path.parent.mkdir()
    path.write_text("schema = 1\n")
    path.chmod(0)
    assert store.load() == State()
    assert warnings == [f"state file {path} is unreadable (Permission denied); starting afresh"]


def test_state_path_is_a_directory(path: Path, store: TomlStateStore, warnings: Warnings) -> None:
    path.mkdir(parents=True)
    assert store.load() == State()
    assert warnings and str(path) in warnings[0]
    with pytest.raises(StateError) as info:
        store.update(lambda s: None)
    assert str(path) in str(info.value)
    assert path.is_dir()


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0, 0o022, 0o277])
def test_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "a" / "b" / "state.toml"
    old = os.umask(umask)
    try:
        TomlStateStore(path).update(fill)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700
    lock = path.with_name("state.toml.lock")
    assert lock.exists()
    assert mode(lock) == 0o600
    # no temp file is left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.toml", "state.toml.lock"]


def test_existing_directory_mode_is_left_alone(tmp_path: Path, umask0: None) -> None:
    tmp_path.joinpath("shared").mkdir(mode=0o755)
    TomlStateStore(tmp_path / "shared" / "state.toml").update(fill)
    assert mode(tmp_path / "shared") == 0o755


def test_stale_temp_files_are_cleaned(store: TomlStateStore, path: Path) -> None:
    path.parent.mkdir()
    stale = path.parent / ".state.toml.999.deadbeef.tmp"
    stale.write_text("half a write")
    store.update(fill)
    assert not stale.exists()


# -- write failures ---------------------------------------------------------------------------


def test_path_under_a_regular_file_is_a_state_error(tmp_path: Path, warnings: Warnings) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "sub" / "state.toml"
    store = TomlStateStore(path, warn=warnings)
    assert store.load() == State()  # reading never fails
    with pytest.raises(StateError) as info:
        store.update(fill)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert info.value.exit_code == ExitCode.CANTCREAT == 73


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only directories")
def test_unwritable_directory_is_a_state_error(tmp_path: Path, umask0: None) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    path = directory / "state.toml"
    directory.chmod(0o500)
    try:
        with pytest.raises(StateError) as info:
            TomlStateStore(path).update(fill)
    finally:
        directory.chmod(0o700)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# -- locking and concurrency ------------------------------------------------------------------

LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin (or dies)
"""


class hold_lock:
    """Another process holding the exclusive lock of the state at `path`."""

    def __init__(self, path: Path) -> None:
        self.lock = path.with_name(path.name + ".lock")

    def __enter__(self) -> subprocess.Popen[str]:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(self.lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "locked\n"
        return self.proc

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def test_lock_held_past_timeout_is_a_state_error(path: Path) -> None:
    store = TomlStateStore(path, lock_timeout=0.3)
    with hold_lock(path):
        started = time.monotonic()
        with pytest.raises(StateError) as info:
            store.update(fill)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    message = str(info.value)
    assert str(path) in message and "locked" in message and "\n" not in message
    assert not path.exists()
    store.update(fill)  # free again once the other process lets go
    assert store.load().last_provider == "postmark"


def test_update_waits_for_a_lock_released_in_time(path: Path) -> None:
    store = TomlStateStore(path, lock_timeout=5.0)
    holder = hold_lock(path)
    holder.__enter__()
    try:
        # release the lock from a thread shortly after update() starts waiting
        timer = threading.Timer(0.2, holder.__exit__, (None, None, None))
        timer.start()
        started = time.monotonic()
        store.update(fill)
        assert time.monotonic() - started >= 0.15
        timer.join()
    finally:
        if holder.proc.poll() is None:
            holder.__exit__(None, None, None)
    assert store.load().providers["postmark"].sent == 41


INCREMENTER = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from mailrelay.state import TomlStateStore

store = TomlStateStore(Path(sys.argv[1]), lock_timeout=60.0)
me = sys.argv[2]

def bump(state):
    state.provider("shared").sent += 1
    state.provider(me).sent += 1
    state.provider("shared").last_success = datetime.now(timezone.utc)
    state.last_provider = me

for _ in range(10):
    store.update(bump)
"""


def test_twenty_concurrent_processes_add_up(path: Path, warnings: Warnings) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, str(path), f"p{i}"],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(20)
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err.decode()
            assert err == b""  # no warning: the file was never seen corrupt
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    doc = tomllib.loads(path.read_text())
    assert doc["providers"]["shared"]["sent"] == 200
    state = TomlStateStore(path, warn=warnings).load()
    assert warnings == []
    assert state.providers["shared"].sent == 200
    assert all(state.providers[f"p{i}"].sent == 10 for i in range(20))
    assert state.last_provider in {f"p{i}" for i in range(20)}
    assert not list(path.parent.glob("*.tmp"))
    assert not list(path.parent.glob("*.corrupt-*"))


# -- where the state lives ------------------------------------------------------------------


def test_default_state_path_is_in_user_data_dir(isolated_user_dirs: Path) -> None:
    expected = isolated_user_dirs / ".local" / "share" / "mailrelay" / "state.toml"
    if sys.platform.startswith("linux"):
        assert default_state_path() == expected
    assert default_state_path().name == "state.toml"


def test_state_path_precedence(tmp_path: Path, isolated_user_dirs: Path) -> None:
    configured = tmp_path / "configured.toml"
    env = {"MAILRELAY_STATE": str(tmp_path / "env.toml")}
    assert state_path(str(tmp_path / "cli.toml"), env, configured) == tmp_path / "cli.toml"
    assert state_path(None, env, configured) == tmp_path / "env.toml"
    assert state_path(None, {}, configured) == configured
    assert state_path(None, {"MAILRELAY_STATE": ""}, configured) == configured
    assert state_path(None, {}, None) == default_state_path()
    assert state_path("~/s.toml", {}, None) == isolated_user_dirs / "s.toml"
    assert state_path(None, {"MAILRELAY_STATE": "~/e.toml"}, None) == isolated_user_dirs / "e.toml"


# -- changes as data (StateDelta): what the engine hands every store ---------------------


def test_a_delta_applies_in_order_and_a_reset_keeps_the_history(store: TomlStateStore) -> None:
    from mailrelay.state import Changes, ProviderChange, StateDelta, reset_delta

    at = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    fail = ProviderChange(
        "p",
        add={"failed": 1, "consecutive_failures": 1},
        count="transient",
        stamp=("last_failure",),
        texts={"last_error": "transient: 503"},
        cooldowns=(60.0, 120.0),
    )
    store.update(Changes([StateDelta(at, [fail]), StateDelta(at, [fail])]))
    entry = store.load().providers["p"]
    assert entry.consecutive_failures == 2 and entry.outcomes == {"transient": 2}
    assert entry.cooldown_until == at + timedelta(seconds=120)  # the 2nd step
    store.update(Changes([StateDelta(at, [fail])]))
    assert store.load().providers["p"].cooldown_until == at + timedelta(seconds=120)  # the last
    store.update(reset_delta(["p"], at))
    entry = store.load().providers["p"]
    assert (entry.consecutive_failures, entry.cooldown_until) == (0, None)
    assert (entry.failed, entry.last_error) == (3, "transient: 503")


def test_changes_are_data_only_when_every_one_is_a_delta() -> None:
    from mailrelay.state import Changes, StateDelta

    delta = StateDelta(datetime(2026, 11, 22, tzinfo=timezone.utc))
    assert Changes([delta, Changes([delta])]).deltas() == [delta, delta]
    assert Changes([delta, lambda state: None]).deltas() is None


def test_cooldown_steps_follow_cooldown_for_up_to_the_cap() -> None:
    from mailrelay.policy import Policy
    from mailrelay.providers.base import Outcome

    policy = Policy(jitter=0.0, cooldown=60, max_cooldown=300)
    assert policy.cooldown_steps(Outcome.TRANSIENT, None) == (60, 120, 240, 300)
    assert policy.cooldown_steps(Outcome.TRANSIENT, 200) == (200, 200, 240, 300)
    assert policy.cooldown_steps(Outcome.REJECTED, None) == ()
    assert Policy(jitter=0.0, cooldown=0).cooldown_steps(Outcome.TRANSIENT, None) == (0,)

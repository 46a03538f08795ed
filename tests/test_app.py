"""The library's App, beneath both front ends: its warnings go to the callback the front end
gives it (serve's log, the CLI's Output of the moment), never to an Output of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrelay.app import App
from mailrelay.config import load_settings


def corrupt_state(tmp_path: Path) -> Path:
    state = tmp_path / "state.toml"
    state.write_text("this is [not toml\n")
    state.chmod(0o600)
    return state


def test_the_apps_warnings_go_to_the_front_ends_callback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = corrupt_state(tmp_path)
    heard: list[str] = []
    app = App(
        config=None,
        state=str(state),
        providers=(),
        debug=False,
        warn=heard.append,
        settings=load_settings(None, [f"outbox://{tmp_path}/outbox"]),
    )
    app.store().load()
    assert len(heard) == 1 and str(state) in heard[0] and "unreadable" in heard[0]
    assert capsys.readouterr() == ("", "")  # nothing printed by the library itself


def test_the_clis_warnings_follow_its_output_of_the_moment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailrelay.cli import CliApp

    state = corrupt_state(tmp_path)
    app = CliApp(
        config=None,
        state=str(state),
        providers=[f"outbox://{tmp_path}/outbox"],
        verbose=0,
        quiet=False,
        debug=False,
    )
    app.output(json_mode=True)  # a command asked for --json: warnings still go to stderr
    app.merge("quiet", True)  # `-q` after the command word: its Output says nothing
    app.store().load()
    assert capsys.readouterr().err == ""
    app.merge("verbose", 1)
    app.quiet = False
    app.output(json_mode=True)
    corrupt_state(tmp_path)  # the first load moved the corrupt file aside
    app.store().load()
    err = capsys.readouterr().err
    assert err.startswith("mailrelay: warning: state file ") and app.out.json_mode

"""Path options complete file names: a real interactive bash, on a pseudo-terminal, with the
checked-in completion script sourced, turns `mailrelay send -a rep<TAB>` into report.pdf."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_e2e import mailrelay, mailrelay_command

REPO = Path(__file__).resolve().parent.parent
PATH_OPTIONS = [
    ("send", "-a"),
    ("send", "--attach"),
    ("send", "--text-file"),
    ("send", "--html-file"),
    ("send", "--eml"),
    ("send", "--message"),
    ("send", "--batch"),
    ("send", "--config"),
    ("send", "--state"),
    ("send", "--log-file"),
    ("queue", "list", "--config"),
]


class Bash:
    """An interactive bash on a pty: type into it, read what it shows (bounded waits)."""

    def __init__(self, cwd: Path) -> None:
        self.master, slave = pty.openpty()
        env = {
            "PATH": f"{Path(mailrelay_command()).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(cwd),
            "TERM": "dumb",
            "PS1": "$ ",
            "INPUTRC": "/dev/null",
        }
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, pattern: str, limit: float = 30.0) -> re.Match[str]:
        """Read until `pattern` shows (a bound against hanging, not a timing assertion)."""
        end = time.monotonic() + limit
        while True:
            text = self.seen.decode(errors="replace").replace("\r", "")
            found = re.search(pattern, text, re.MULTILINE)
            if found:
                self.seen = text[found.end() :].encode()  # the next wait starts after it
                return found
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"bash never showed {pattern!r}; it showed:\n{text}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # bash went away
                    raise AssertionError(f"bash ended; it showed:\n{text}") from None

    def close(self) -> None:
        self.type("exit\n")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def bash(tmp_path: Path) -> Iterator[Bash]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n")
    (tmp_path / "other.txt").write_text("x\n")
    shell = Bash(tmp_path)
    shell.type(f"source {REPO / 'completions' / 'mailrelay.bash'}; echo SOURCED\n")
    shell.wait_for(r"^SOURCED$")
    yield shell
    shell.close()


def completed_line(bash: Bash, typed: str) -> str:
    """Type `typed`, press TAB, then run `echo LINE:<the line as completed>`; that line."""
    bash.type(f"{typed}\t")
    bash.type("\x01echo LINE:\n")  # Ctrl-A: to the start of the line, then print it
    return bash.wait_for(r"^LINE:(.*)$").group(1).strip()


def test_attach_rep_tab_completes_report_pdf_in_a_real_bash(bash: Bash) -> None:
    assert completed_line(bash, "mailrelay send -a rep") == "mailrelay send -a report.pdf"


def test_config_after_the_command_word_completes_a_file_in_a_real_bash(bash: Bash) -> None:
    line = completed_line(bash, "mailrelay send --config oth")
    assert line == "mailrelay send --config other.txt"


@pytest.mark.parametrize("words", PATH_OPTIONS, ids=" ".join)
def test_every_path_option_asks_the_shell_for_file_names(
    words: tuple[str, ...], tmp_path: Path
) -> None:
    env = {
        "_MAILRELAY_COMPLETE": "bash_complete",
        "COMP_WORDS": " ".join(["mailrelay", *words, "rep"]),
        "COMP_CWORD": str(len(words) + 1),
    }
    r = mailrelay(env=env, input=None)
    assert r.returncode == 0 and r.stdout.split() == ["file,rep"], r.stdout + r.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_checked_in_scripts_hand_file_and_dir_items_to_the_shell(shell: str) -> None:
    script = (REPO / "completions" / f"mailrelay.{shell}").read_text()
    handled = {
        "bash": ("compopt -o default", "compopt -o dirnames"),
        "zsh": ("_path_files -f", "_path_files -/"),
        "fish": ("__fish_complete_path", "__fish_complete_directories"),
    }[shell]
    for line in handled:
        assert line in script, (shell, line)

"""What ships with mailrelay stays true to the CLI: completion scripts, the man page, the
README's examples, and the wheel's data files.

Each check fails with what to do about it, since the usual cause is a new option or command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailrelay.cli import cli
from mailrelay.cli.completion import SHELLS, complete_provider_names, completion_script
from mailrelay.errors import EXIT_CODE_DOC, ExitCode, StatusExit

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "mailrelay.1"
README = ROOT / "README.md"
GROFF = "/usr/bin/groff"

# wheel path -> file in the repo (pyproject.toml, [tool.hatch.build.targets.wheel.shared-data])
SHARED_DATA = {
    "share/man/man1/mailrelay.1": "man/mailrelay.1",
    "share/bash-completion/completions/mailrelay": "completions/mailrelay.bash",
    "share/zsh/site-functions/_mailrelay": "completions/mailrelay.zsh",
    "share/fish/vendor_completions.d/mailrelay.fish": "completions/mailrelay.fish",
}


# --- the CLI, walked -------------------------------------------------------------------------


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path below `command`: (), ("send",), ... (groups recursively)."""
    yield path
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from walk(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, name
        command = sub
    return command


def test_the_lazy_command_table_matches_the_commands() -> None:
    """`mailrelay --help` lists commands from LAZY_COMMANDS without importing them; each
    line must be the first paragraph of that command's own help."""
    from mailrelay.cli import LAZY_COMMANDS

    for name, (_, _, line) in LAZY_COMMANDS.items():
        command = command_at((name,))
        assert command.name == name
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert line == first, name


COMMAND_PATHS = list(walk(cli))
SUBCOMMANDS = [p for p in COMMAND_PATHS if p]


def long_flags(command: click.Command, *, with_help: bool = True) -> list[str]:
    ctx = click.Context(command)
    help_option = command.get_help_option(ctx)
    flags: list[str] = []
    for param in command.get_params(ctx):
        if param is help_option and not with_help:
            continue
        if isinstance(param, click.Option):
            flags += [f for f in (*param.opts, *param.secondary_opts) if f.startswith("--")]
    return flags


def ident(path: tuple[str, ...]) -> str:
    return " ".join(path) or "mailrelay"


def test_the_walk_finds_the_commands() -> None:
    names = {p[-1] for p in SUBCOMMANDS}
    assert {"send", "providers", "status", "completion"} <= names


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=ident)
def test_every_command_and_option_has_help(path: tuple[str, ...]) -> None:
    command = command_at(path)
    assert (command.help or "").strip(), f"'{ident(path)}' has no help text (its docstring)"
    assert command.get_short_help_str().strip()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"'{ident(path)}' option {param.opts} has no help="


# --- completion scripts ------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_checked_in_completion_matches_the_cli(shell: str) -> None:
    checked_in = ROOT / "completions" / f"mailrelay.{shell}"
    regenerate = f"mailrelay completion {shell} > completions/mailrelay.{shell}"
    assert checked_in.is_file(), f"{checked_in} is missing; run: {regenerate}"
    # click.echo adds the newline, as `_MAILRELAY_COMPLETE=<shell>_source mailrelay` does
    assert checked_in.read_text() == completion_script(shell) + "\n", (
        f"{checked_in.relative_to(ROOT)} drifted from the CLI; run: {regenerate}"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_script(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert result.output == completion_script(shell) + "\n"
    assert "_MAILRELAY_COMPLETE" in result.output


def test_completion_command_refuses_an_unknown_shell() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "tcsh" in result.output


def installed_mailrelay() -> Path:
    beside = Path(sys.executable).parent / "mailrelay"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("mailrelay")
    if found is None:
        pytest.fail("the mailrelay console script is not installed (pip install -e .)")
    return Path(found)


def bash_complete(*words: str) -> list[str]:
    """COMPREPLY of the checked-in bash completion for a command line ending in words[-1]."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed for the completion test")
    script = ROOT / "completions" / "mailrelay.bash"
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in ("mailrelay", *words))
    program = (
        f"source '{script}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; COMPREPLY=()\n"
        "_mailrelay_completion mailrelay\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ)
    env["PATH"] = f"{installed_mailrelay().parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completes_a_command() -> None:
    assert bash_complete("se") == ["send", "sendmail", "serve"]


def test_bash_completes_an_option_of_send() -> None:
    assert bash_complete("send", "--su") == ["--subject"]


def test_bash_completes_every_command() -> None:
    assert set(bash_complete("")) == {p[0] for p in SUBCOMMANDS}


# --- provider-name completion ----------------------------------------------------------------


def provider_names(config: str | None, incomplete: str = "", urls: tuple[str, ...] = ()) -> list:
    ctx = click.Context(cli)
    ctx.params = {"config": config, "providers": urls}
    option = click.Option(["--to-provider"])
    return [(i.value, i.help) for i in complete_provider_names(ctx, option, incomplete)]


def test_provider_names_come_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[providers]]\nname = "primary"\ntype = "smtp"\nhost = "127.0.0.1"\n'
        'password = "s3cret-never-read"\n\n'
        '[[providers]]\ntype = "outbox"\npath = "/nonexistent/is/fine/here"\n\n'
        '[[providers]]\nname = "off"\ntype = "smtp"\nenabled = false\n'
    )
    assert provider_names(str(config)) == [("primary", "smtp"), ("outbox", "outbox")]
    assert provider_names(str(config), "pr") == [("primary", "smtp")]


def test_provider_names_from_provider_urls() -> None:
    urls = ("outbox:///tmp/x?name=local", "smtp://127.0.0.1:2525")
    assert provider_names(None, urls=urls) == [("local", "outbox"), ("smtp", "smtp")]


@pytest.mark.parametrize(
    "text",
    [
        "not [ toml",
        "[[providers]]\ntype = 3\n",
        '[defaults]\npolicy = "sideways"\n',
        "providers = 1\n",
    ],
)
def test_provider_names_offer_nothing_on_a_bad_config(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    assert provider_names(str(config)) == []
    assert provider_names(str(tmp_path / "missing.toml")) == []
    assert provider_names(None, urls=("nope://x",)) == []


# --- the man page ------------------------------------------------------------------------------


def man_source() -> str:
    assert MAN.is_file(), f"{MAN} is missing"
    return MAN.read_text()


def unescape(text: str) -> str:
    """groff source -> plain text, enough to compare with option names and the exit table."""
    text = text.replace("\\-", "-").replace("\\(dq", '"').replace("\\(ti", "~")
    text = text.replace("\\e", "\\").replace("\\&", "")
    return re.sub(r"\\f[BIRP]", "", text)


def man_sections(level: str) -> dict[str, str]:
    """Heading -> unescaped body, for every `.SH` or `.SS` heading."""
    parts = re.split(rf"^\.{level} +(.*)$", man_source(), flags=re.MULTILINE)
    return {
        unescape(h).strip('"'): unescape(body)
        for h, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def command_section(path: tuple[str, ...]) -> str:
    subsections = man_sections("SS")
    if not path:
        assert "Global options" in subsections, 'man page: no .SS "Global options"'
        return subsections["Global options"]
    title = f"mailrelay {' '.join(path)}"
    found = [body for head, body in subsections.items() if f"{head} ".startswith(f"{title} ")]
    assert found, f'man page: no subsection .SS "{title} ..." under COMMANDS'
    return found[0]


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=ident)
def test_man_page_documents_every_command_and_option(path: tuple[str, ...]) -> None:
    section = command_section(path)
    # -h/--help and the global options (which every command also takes after its word)
    # are described once, under "Global options"
    flags = long_flags(command_at(path), with_help=not path)
    if path:
        flags = [flag for flag in flags if flag not in long_flags(cli)]
    missing = [flag for flag in flags if not mentions(section, flag)]
    assert not missing, f"man/mailrelay.1, section for '{ident(path)}', lacks {missing}"
    assert mentions(unescape(man_source()), ident(path))


def test_man_page_has_the_standard_sections() -> None:
    sections = man_sections("SH")
    for name in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "CONFIGURATION",
        "FAILOVER",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert name in sections, f"man/mailrelay.1 has no .SH {name}"
    environment = sections["ENVIRONMENT"]
    for var in ("MAILRELAY_CONFIG", "MAILRELAY_STATE", "MAILRELAY_PROVIDERS", "NO_COLOR"):
        assert var in environment, f"man page ENVIRONMENT lacks {var}"


def test_man_page_names_every_provider_type() -> None:
    from mailrelay.providers import registry

    configuration = man_sections("SH")["CONFIGURATION"]
    for type_ in registry.BUILTIN:
        assert re.search(rf"^\.TP\n\.B {type_}\n", configuration, re.MULTILINE), type_
    for scheme in registry.url_schemes():
        assert f"{scheme}://" in configuration, f"man page: no URL form for {scheme}://"


def exit_tables() -> list[dict[int, str]]:
    """The `.TP / .B code / text` lists of EXIT STATUS, one dict per paragraph."""
    section = man_sections("SH")["EXIT STATUS"]
    tables = []
    for paragraph in re.split(r"^\.PP$", section, flags=re.MULTILINE):
        entries = re.findall(r"^\.TP\n\.B (\d+)\n(.*?)(?=^\.TP|\Z)", paragraph, re.M | re.S)
        if entries:
            tables.append({int(code): text for code, text in entries})
    return tables


def plain(text: str) -> str:
    text = re.sub(r"^\.[A-Z]+ ?", "", text, flags=re.MULTILINE)
    return " ".join(text.split()).rstrip(".").lower()


def test_man_page_exit_status_is_the_whole_table() -> None:
    tables = exit_tables()
    main = next((t for t in tables if ExitCode.CONFIG in t), None)
    assert main is not None, "man page EXIT STATUS has no table with 78"
    assert sorted(main) == sorted(EXIT_CODE_DOC), "man page EXIT STATUS codes != errors.py"
    assert set(main) == {int(c) for c in ExitCode}
    for code, doc in EXIT_CODE_DOC.items():
        assert plain(main[code]) == doc.lower(), f"man page says for {code}: {plain(main[code])}"
    status = next((t for t in tables if StatusExit.DEGRADED in t), None)
    assert status is not None, "man page EXIT STATUS lacks status's own codes"
    assert set(status) == {int(c) for c in StatusExit}


def test_groff_reports_no_warnings() -> None:
    if not Path(GROFF).is_file():
        pytest.fail(f"{GROFF} is missing: install groff (apt-get install groff-base)")
    proc = subprocess.run(
        [GROFF, "-man", "-ww", "-z", str(MAN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# --- the README --------------------------------------------------------------------------------


def readme_code() -> str:
    """The README's code: fenced blocks and inline `code` spans."""
    text = README.read_text()
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return "\n".join(blocks + re.findall(r"`([^`\n]+)`", rest))


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=ident)
def test_readme_shows_every_command(path: tuple[str, ...]) -> None:
    # `mailrelay [global options] <command>` on one line, in a code block or a code span
    words = r"\s+".join(map(re.escape, path))
    example = rf"\bmailrelay\b(?:[ \t]+-[^\s]+(?:[ \t]+[^\s-][^\s]*)?)*[ \t]+{words}(?![\w-])"
    assert re.search(example, readme_code()), (
        f"README.md has no example of 'mailrelay {' '.join(path)}' in a code block or code span"
    )


# --- the wheel -----------------------------------------------------------------------------------


def _ignore(_folder: str, names: list[str]) -> set[str]:
    skip = {".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "dist", "build"}
    return {n for n in names if n in skip or n.endswith(".pyc")}


def test_wheel_installs_man_page_completions_and_typing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_ignore)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = out.glob("mailrelay-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (data,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".data")}
        for installed, repo_file in SHARED_DATA.items():
            member = f"{data}/data/{installed}"
            assert member in names, f"the wheel lacks {installed}"
            assert zf.read(member) == (ROOT / repo_file).read_bytes(), member
        assert "mailrelay/py.typed" in names
        assert "mailrelay/message/message.schema.json" in names  # send --message, mailrelay schema
        assert "mailrelay/cli/completion.py" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\nmailrelay = mailrelay\.cli:main$", text, re.M), text


def test_man_page_synopsis_lists_every_command() -> None:
    synopsis = man_sections("SH")["SYNOPSIS"]
    lines = [" ".join(block.split()) for block in synopsis.split(".SY")]
    for path in SUBCOMMANDS:
        # a command's words in order: `.B queue` then `.BR show ...` on the next line
        pattern = r"\.B[R]? +" + r"\s.*?\.B[R]? +".join(re.escape(w) for w in path) + r"\b"
        assert any(re.search(pattern, line) for line in lines), (
            f"man/mailrelay.1 SYNOPSIS lacks 'mailrelay {ident(path)}'"
        )

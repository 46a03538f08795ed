"""The repository stands alone: no file refers to anything beside or outside the checkout.

A clone must hold everything its code, tests and docs need, so nothing may point at a
sibling folder of the checkout, an internal design note or a path on one machine. Sources
are cited publicly instead (provider docs, RFCs, spec repositories by name and commit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# written so that this file does not match itself
OUTSIDE = re.compile(r"\.\./shared|shared/(?:specs|reference)|DESIGN\.md|/wor[k]/")

# CI knows where it runs: it points MAILRELAY_SPECS_DIR at the published specs beside the
# checkout when they are there (and runs the suite without them too). Nothing else may.
EXEMPT = frozenset({".ci/run"})


def repository_files() -> list[str]:
    """Tracked files, and new files not ignored (so an uncommitted one is caught too)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({name for name in out.decode("utf-8").split("\0") if name})


def test_no_file_refers_outside_the_repository() -> None:
    files = repository_files()
    assert "tests/test_standalone.py" in files  # the listing works
    hits = []
    for name in files:
        path = ROOT / name
        if name in EXEMPT or not path.is_file():
            continue  # a deleted but still tracked file has nothing to say
        text = path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            match = OUTSIDE.search(line)
            if match:
                hits.append(f"{name}:{lineno}: {match.group(0)!r}")
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_is_for() -> None:
    sib = "shared"  # spelt apart so that this file does not match itself
    for text in (f"see ../{sib}/x", f"in {sib}/specs/a.yaml", f"{sib}/reference/p.md §1"):
        assert OUTSIDE.search(text), text
    assert OUTSIDE.search("DESIGN" + ".md, table")
    assert OUTSIDE.search("/" + "work/" + sib)
    assert not OUTSIDE.search("docs/architecture.md and shared_pool()")


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match, "README's Tests section lost its command"
    command = match.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    runs = [line.strip() for line in ci.splitlines() if "pytest" in line]
    # in the checkout, then in a fresh clone with nothing beside it
    assert runs.count(command) == 2, (command, runs)
    assert 'git clone -q . "$tmp/mailrelay"' in ci

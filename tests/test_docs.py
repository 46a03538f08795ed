"""Docs that must stay in step with the code: the provider feature matrix and the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from mailrelay.errors import EXIT_CODE_DOC
from mailrelay.providers import registry

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    "cc",
    "bcc",
    "reply_to",
    "headers",
    "attachments",
    "inline",
    "tags",
    "metadata",
    "sandbox",
    "idempotency",
)


def render_matrix() -> str:
    head = ["provider", *(c.replace("_", "-") for c in COLUMNS), "health check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for type_ in registry.BUILTIN:
        cls = registry.get(type_)
        cells = []
        for cap in COLUMNS:
            mark = "yes" if cap in cls.capabilities else "no"
            if cap == "tags" and mark == "yes" and cls.max_tags is not None:
                mark = f"≤{cls.max_tags}"
            cells.append(mark)
        lines.append(f"| `{type_}` | " + " | ".join(cells) + f" | {cls.health_check} |")
    return "\n".join(lines)


def block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"docs/providers.md lost its <!-- {name}:start/end --> markers"
    return match.group(1)


def test_feature_matrix_matches_the_adapters() -> None:
    docs = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8")
    assert block(docs, "matrix") == render_matrix(), (
        "docs/providers.md's matrix drifted from the adapters' capabilities; paste this:\n"
        + render_matrix()
    )


def test_every_provider_has_a_section() -> None:
    docs = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8")
    for type_ in registry.BUILTIN:
        assert f"### `{type_}`" in docs, type_


def test_readme_exit_codes_match_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.M))
    assert {int(k): v for k, v in rows.items()} == EXIT_CODE_DOC


def test_changelog_has_the_current_version() -> None:
    from mailrelay import __version__

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M
    ), f"CHANGELOG.md has no section for version {__version__}"


def test_pyproject_version_matches_the_package() -> None:
    from mailrelay import __version__

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{__version__}"' in pyproject


def test_benchmarks_doc_covers_every_scenario_and_the_command() -> None:
    import subprocess
    import sys

    from bench.__main__ import SCENARIOS

    text = (ROOT / "docs" / "benchmarks.md").read_text()
    missing = [name for name in SCENARIOS if f"| {name} |" not in text]
    assert missing == [], "docs/benchmarks.md has no results for these scenarios"
    assert "python -m bench" in text
    help_text = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert all(name in help_text for name in SCENARIOS)

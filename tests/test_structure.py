"""The package's shape: modules of one job each (none over the size ceiling) and no import
cycle between its modules, counting imports made inside functions."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailrelay"
CEILING = 500  # lines; the aim is ~400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules that `name` imports anywhere in its body (package re-exports and
    TYPE_CHECKING-only imports included, since both still tie the modules together)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            # the longest prefix that is one of our modules
            parts = target.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_ceiling(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= CEILING, f"{name} has {lines} lines (ceiling {CEILING}): split it by job"


@functools.cache
def _cycles() -> list[list[str]]:
    """One cycle for each back edge of a depth-first walk of the import graph."""
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # a package __init__ re-exporting its submodules is not a cycle with them
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _in_cli(name: str) -> bool:
    return name == "mailrelay.cli" or name.startswith("mailrelay.cli.")


def _outside_the_cli_importing_it() -> list[str]:
    return [
        name
        for name, path in MODULES.items()
        if name != "mailrelay.__main__"  # `python -m mailrelay` runs the CLI
        and not _in_cli(name)
        and any(_in_cli(target) for target in _imports(name, path))
    ]


def test_only_the_cli_imports_the_cli() -> None:
    """The library (App, the documents, serve) stands beneath both front ends: nothing outside
    mailrelay/cli/ imports from it, so serve never pulls in click or the CLI's Output."""
    offenders = _outside_the_cli_importing_it()
    assert offenders == [], f"outside mailrelay/cli/, these import it: {offenders}"


def test_config_and_the_providers_do_not_import_each_other() -> None:
    """Config is data: the providers' side never imports config.py (the registry builds)."""
    providers = [n for n in MODULES if n.startswith("mailrelay.providers")]
    offenders = [n for n in providers if "mailrelay.config" in _imports(n, MODULES[n])]
    assert offenders == []


def test_the_walk_sees_imports_inside_functions_and_under_type_checking() -> None:
    """The cycle check can fail: it counts the imports a function makes (serve's app
    imports the library's App inside create_app) and those made only for type hints."""
    found = _imports("mailrelay.serve.app", MODULES["mailrelay.serve.app"])
    assert "mailrelay.app" in found
    assert "mailrelay.config" in found  # only for the Settings type hint

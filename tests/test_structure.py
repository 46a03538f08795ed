"""The package's shape: modules of one job each (none over the module ceiling, no function
over the function ceiling), private names kept inside their module, and no import cycle
between its modules, counting imports made inside functions."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailrelay"
CEILING = 400  # lines of a module
FUNCTION_CEILING = 80  # lines of a function, from its `def` (decorators apart) to its end

# Nothing is over a ceiling now; an entry here ("module" or "module:function") would be a
# debt written down where the test can see it.
OVERSIZE_ALLOWED: set[str] = set()
LONG_FUNCTIONS_ALLOWED: set[str] = set()


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
    if name in OVERSIZE_ALLOWED:
        pytest.skip(f"{name}: allowed for now ({lines} lines)")
    assert lines <= CEILING, f"{name} has {lines} lines (ceiling {CEILING}): split it by job"


def _long_functions(name: str, path: Path) -> list[str]:
    """`module:function (n lines)` for each function of `path` over FUNCTION_CEILING, nested
    functions and methods included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > FUNCTION_CEILING and f"{name}:{node.name}" not in LONG_FUNCTIONS_ALLOWED:
                found.append(f"{name}:{node.name} ({lines} lines)")
    return found


def test_no_function_over_the_ceiling() -> None:
    found = [f for name, path in MODULES.items() for f in _long_functions(name, path)]
    assert found == [], f"over {FUNCTION_CEILING} lines, split by job: {found}"


def test_the_function_ceiling_can_fail(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_CEILING))
    path = tmp_path / "long.py"
    path.write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    assert _long_functions("long", path) == [f"long:long ({FUNCTION_CEILING + 1} lines)"]


def _private_imports(name: str, path: Path) -> list[str]:
    """`from X import _name` in `name`, where X is another module of the package: a name
    one module shares with another deserves a public name (and one home)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        if base.partition(".")[0] != "mailrelay" or base == name:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{name}:{node.lineno} imports {alias.name} from {base}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    found = [f for name, path in MODULES.items() for f in _private_imports(name, path)]
    assert found == [], "private names imported across modules:\n" + "\n".join(found)


def test_the_private_import_check_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(
        "from mailrelay.spool.entry import QueuedMessage, _hidden\n"
        "from .store import _also\n"
        "from os import _exit\n"
        "def f():\n    from mailrelay.clock import _later\n"
    )
    found = _private_imports("mailrelay.spool.x", path)
    assert [f.split(" imports ")[1] for f in found] == [
        "_hidden from mailrelay.spool.entry",
        "_also from mailrelay.spool.store",
        "_later from mailrelay.clock",
    ]


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


def test_a_provider_with_one_key_only_names_it() -> None:
    """`ApiKeyProvider` reads the key (named by `credential_key`) and its URL form once; an
    adapter adds its own settings through `options_from_config`, never a copy of them."""
    import importlib

    from mailrelay.providers.httpapi import ApiKeyProvider
    from mailrelay.providers.registry import BUILTIN

    classes = []
    for target in BUILTIN.values():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, ApiKeyProvider):
            classes.append(cls)
    assert {c.type for c in classes} >= {"postmark", "mailersend", "sendgrid"}
    copies = [
        f"{c.__name__}.{method}"
        for c in classes
        for method in ("from_config", "config_from_url")
        if method in vars(c)
    ]
    assert copies == []


LITERAL_EXIT_CODES_ALLOWED: set[str] = set()  # none left


def _literal_exit_codes(name: str, path: Path) -> list[str]:
    """Exit codes written as numbers where ExitCode names them: compared with something
    called `code`/`exit_code`, or given to `sys.exit`."""
    from mailrelay.errors import ExitCode

    codes = {int(c) for c in ExitCode if c}

    def numbers(node: ast.expr) -> list[int]:
        items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
        return [
            i.value
            for i in items
            if isinstance(i, ast.Constant) and type(i.value) is int and i.value in codes
        ]

    def is_code(node: ast.expr) -> bool:
        word = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
        return word in ("code", "exit_code", "returncode") or word.endswith("_code")

    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(is_code(s) for s in sides) and any(numbers(s) for s in sides):
                found.append(f"{name}:{node.lineno}")
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "sys.exit"
            and node.args
            and numbers(node.args[0])
        ):
            found.append(f"{name}:{node.lineno}")
    return found


def test_exit_codes_are_named() -> None:
    found = [
        f
        for name, path in MODULES.items()
        if name not in LITERAL_EXIT_CODES_ALLOWED
        for f in _literal_exit_codes(name, path)
    ]
    assert found == [], f"use ExitCode's names: {found}"


def test_the_exit_code_check_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "codes.py"
    path.write_text(
        "import sys\n"
        "if exc.exit_code in (73, 75): pass\n"
        "if code == 65: pass\n"
        "if resp.status_code == 420: pass\n"  # an HTTP status, not an exit code
        "sys.exit(70)\n"
        "sys.exit(ExitCode.SOFTWARE)\n"
    )
    assert _literal_exit_codes("codes", path) == ["codes:2", "codes:3", "codes:5"]

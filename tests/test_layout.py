"""The layout holds: no import cycle, no private name used across modules, the
receiver's imports stay within its room, and no module or class grows past what
one person can hold in their head.

These read the source with :mod:`ast`; nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import dnsmaster

PACKAGE = Path(dnsmaster.__file__).resolve().parent
PROJECT = PACKAGE.parent
TESTS = PROJECT / "tests"

#: Lines a module may have, and a class: about 600 and 300, past which a reader can no
#: longer hold one in their head.
MAX_MODULE_LINES = 650
MAX_CLASS_LINES = 320

#: The rooms the slave's receiver may import from (it runs once per push on every
#: slave, with nothing but the standard library and these).
SLAVE_MAY_IMPORT = ("dnsmaster.core", "dnsmaster.protocol", "dnsmaster.fsutil", "dnsmaster.errors")

#: Private names of the standard library (and of pytest) that are public in all
#: but name.
FOREIGN_PRIVATE = frozenset(
    {
        "_exit",
        "_getframe",
        "_replace",
        "_asdict",
        "_fields",
        "_make",
        "_SubParsersAction",
        "_current_frames",
        "_actions",
        "_Decompress",
        "_name_",
        "_value_",
        "_missing_",
    }
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


MODULES = {_module_name(p): p for p in _sources(PACKAGE)}

#: The C extensions: private modules of their package, imported by a sibling only.
EXTENSIONS = {_module_name(p): p for p in PACKAGE.rglob("_*.c")}


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every dnsmaster module a file imports, anywhere in it (TYPE_CHECKING too)."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {m for m, _ in _imports(path) if m in MODULES and m != name}
    return graph


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("dnsmaster.slave")))
def test_the_slave_imports_only_its_allowed_rooms(name: str) -> None:
    path = MODULES[name]
    wrong = sorted(
        f"{path.relative_to(PROJECT)}:{line}: {module}"
        for module, line in _imports(path)
        if module.startswith("dnsmaster.")
        and not module.startswith(("dnsmaster.slave", *SLAVE_MAY_IMPORT))
    )
    assert not wrong, "the receiver's room imports outside it:\n" + "\n".join(wrong)


def _defined(tree: ast.Module) -> set[str]:
    """Every private name a file defines: functions, classes, attributes, globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}


def _own_module(test: Path) -> Path | None:
    """The module a test file is the own test file of (tests/core/test_cdb.py: core/cdb.py)."""
    if not test.name.startswith("test_"):
        return None
    candidate = PACKAGE.joinpath(*test.relative_to(TESTS).parts[:-1], test.name[5:])
    return candidate if candidate.exists() else None


_DOTTED_PRIVATE = re.compile(r"\bdnsmaster(?:\.\w+)*\.(_[a-zA-Z]\w*)")


def _shown(path: Path) -> Path:
    return path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path


def _private_imports(path: Path, node: ast.ImportFrom, own: Path | None) -> Iterator[str]:
    module = node.module or ""
    if not module.startswith("dnsmaster"):
        return
    for alias in node.names:
        if (
            f"{module}.{alias.name}" in EXTENSIONS
            and _module_name(path).rpartition(".")[0] == module
        ):
            continue  # a package's own C extension, from a sibling module
        theirs = own is None or MODULES.get(module) != own
        if alias.name.startswith("_") and alias.name != "__version__" and theirs:
            yield f"{_shown(path)}:{node.lineno}: from {module} import {alias.name}"


def _private_attribute(node: ast.Attribute, mine: set[str]) -> bool:
    attr = node.attr
    if not attr.startswith("_") or attr.startswith("__") or attr in FOREIGN_PRIVATE:
        return False
    if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
        return False
    return attr not in mine


def _private_uses(path: Path) -> Iterator[str]:
    tree = _tree(path)
    mine = _defined(tree)
    own = _own_module(path) if path.is_relative_to(TESTS) else None
    if own is not None:
        mine |= _defined(_tree(own))
    where = _shown(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield from _private_imports(path, node, own)
        elif isinstance(node, ast.Attribute) and _private_attribute(node, mine):
            yield f"{where}:{node.lineno}: .{node.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _DOTTED_PRIVATE.finditer(node.value):
                if match.group(1) not in mine and match.group(0) not in EXTENSIONS:
                    yield f"{where}:{node.lineno}: {match.group(0)}"


@pytest.mark.parametrize(
    "path",
    [*_sources(PACKAGE), *(p for p in _sources(TESTS) if p.name != "test_layout.py")],
    ids=lambda p: str(p.relative_to(PROJECT)),
)
def test_no_private_name_crosses_a_module(path: Path) -> None:
    uses = sorted(set(_private_uses(path)))
    assert not uses, "private names of other modules:\n" + "\n".join(uses)


@pytest.mark.parametrize("path", _sources(PACKAGE), ids=lambda p: str(p.relative_to(PROJECT)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    big = [f"{lines} lines"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ClassDef) and node.end_lineno:
            size = node.end_lineno - node.lineno + 1
            if size > MAX_CLASS_LINES:
                big.append(f"class {node.name}: {size} lines")
    assert not big, f"{path.relative_to(PROJECT)} is too big: " + ", ".join(big)


ARCHITECTURE = PROJECT / "docs" / "internals" / "architecture.rst"


def _rooms_in_the_manual() -> dict[str, str]:
    """The architecture page's "The rooms" section: each room's paragraph, by folder."""
    page = ARCHITECTURE.read_text()
    text = page.split("\nThe rooms\n---------\n", 1)[1].split("\nWhere a change goes\n", 1)[0]
    rooms: dict[str, str] = {}
    room = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            room = "" if line == "Top level" else line.strip("`").rstrip("/")
            rooms[room] = ""
        elif line.strip():
            rooms[room] += line + "\n"
    return rooms


def test_the_architecture_page_names_every_module_in_its_room() -> None:
    rooms = _rooms_in_the_manual()
    files = [
        p
        for p in sorted(PACKAGE.rglob("*"))
        if p.suffix in (".py", ".c", ".h")
        and p.name not in ("__init__.py", "__main__.py")
        and "__pycache__" not in p.parts
    ]
    missing = []
    for path in files:
        folder = path.parent.relative_to(PACKAGE).as_posix()
        room = "" if folder == "." else folder
        if f"``{path.name}``" not in rooms.get(room, ""):
            missing.append(path.relative_to(PROJECT).as_posix())
    assert not missing, f"{ARCHITECTURE.relative_to(PROJECT)} does not name: {', '.join(missing)}"
    gone = sorted(room for room in rooms if room and not (PACKAGE / room).is_dir())
    assert not gone, f"rooms in the manual that the package no longer has: {gone}"


def test_the_private_name_check_sees_a_use(tmp_path: Path) -> None:
    """The check above can fail: a module reaching into another's private names."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from dnsmaster.master import build\n"
        "from dnsmaster.master.archive import _private\n"
        "build.Builder._secret()\n"
        'TARGET = "dnsmaster.master.build._HIDDEN"\n'
    )
    found = {use.split(": ", 1)[1] for use in _private_uses(probe)}
    assert found == {
        "from dnsmaster.master.archive import _private",
        "._secret",
        "dnsmaster.master.build._HIDDEN",
    }

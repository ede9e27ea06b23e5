"""The layout holds: no import cycle, no private name used across modules, the
receiver's imports stay within its room, and no module or class grows past what
one person can hold in their head.

These read the source with :mod:`ast`; nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

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


@dataclass(frozen=True)
class Facts:
    """What the checks below need of one file, read from its AST in one walk.

    The trees themselves are not kept: a few hundred files' ASTs alive made every
    garbage collection of the session walk them, and parsing and walking each file
    once for every check was most of this module's CPU.
    """

    #: Every import: ``(module, names, level, line)``; ``module`` is None for ``import X``.
    imports: tuple[tuple[str | None, tuple[str, ...], int, int], ...]
    #: Every private name the file defines (see :func:`_defined`).
    defined: frozenset[str]
    #: ``(attribute, line)`` of each ``X._name`` where X is not ``self`` or ``cls``.
    attributes: tuple[tuple[str, int], ...]
    #: ``(string, line)`` of each string constant that names a dnsmaster private.
    strings: tuple[tuple[str, int], ...]
    #: ``(name, lines)`` of each class.
    classes: tuple[tuple[str, int], ...]
    #: The file's lines.
    lines: int


@cache
def _facts(path: Path) -> Facts:
    text = path.read_text()
    nodes = list(ast.walk(ast.parse(text, str(path))))
    imports: list[tuple[str | None, tuple[str, ...], int, int]] = []
    attributes: list[tuple[str, int]] = []
    strings: list[tuple[str, int]] = []
    classes: list[tuple[str, int]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            imports.append((None, tuple(a.name for a in node.names), 0, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names)
            imports.append((node.module or "", names, node.level, node.lineno))
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            ):
                attributes.append((node.attr, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _DOTTED_PRIVATE.search(node.value):
                strings.append((node.value, node.lineno))
        elif isinstance(node, ast.ClassDef) and node.end_lineno:
            classes.append((node.name, node.end_lineno - node.lineno + 1))
    return Facts(
        tuple(imports),
        _defined(nodes),
        tuple(attributes),
        tuple(strings),
        tuple(classes),
        len(text.splitlines()),
    )


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


_DOTTED_PRIVATE = re.compile(r"\bdnsmaster(?:\.\w+)*\.(_[a-zA-Z]\w*)")

MODULES = {_module_name(p): p for p in _sources(PACKAGE)}

#: The C extensions: private modules of their package, imported by a sibling only.
EXTENSIONS = {_module_name(p): p for p in PACKAGE.rglob("_*.c")}


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every dnsmaster module a file imports, anywhere in it (TYPE_CHECKING too)."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for module, names, level, line in _facts(path).imports:
        if module is None:
            for name in names:
                yield name, line
            continue
        base = module
        if level:
            parts = package.split(".")
            base = ".".join([*parts[: len(parts) - level + 1], base]).strip(".")
        for name in names:
            full = f"{base}.{name}"
            yield (full if full in MODULES else base), line


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


# The checks below are one test each over every file, not one test a file: a test
# costs pytest several ms of its own, more than reading a file's facts, and the
# message names every file and line that fails.


def test_the_slave_imports_only_its_allowed_rooms() -> None:
    slave = [path for name, path in MODULES.items() if name.startswith("dnsmaster.slave")]
    assert len(slave) > 1, "no modules in the slave's room?"
    wrong = sorted(
        f"{path.relative_to(PROJECT)}:{line}: {module}"
        for path in slave
        for module, line in _imports(path)
        if module.startswith("dnsmaster.")
        and not module.startswith(("dnsmaster.slave", *SLAVE_MAY_IMPORT))
    )
    assert not wrong, "the receiver's room imports outside it:\n" + "\n".join(wrong)


def _defined(nodes: list[ast.AST]) -> frozenset[str]:
    """Every private name a file defines: functions, classes, attributes, globals."""
    names: set[str] = set()
    for node in nodes:
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
    return frozenset(n for n in names if n.startswith("_"))


def _own_module(test: Path) -> Path | None:
    """The module a test file is the own test file of (tests/core/test_cdb.py: core/cdb.py)."""
    if not test.name.startswith("test_"):
        return None
    candidate = PACKAGE.joinpath(*test.relative_to(TESTS).parts[:-1], test.name[5:])
    return candidate if candidate.exists() else None


def _shown(path: Path) -> Path:
    return path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path


def _private_imports(
    path: Path, module: str, names: tuple[str, ...], line: int, own: Path | None
) -> Iterator[str]:
    if not module.startswith("dnsmaster"):
        return
    for name in names:
        if f"{module}.{name}" in EXTENSIONS and _module_name(path).rpartition(".")[0] == module:
            continue  # a package's own C extension, from a sibling module
        theirs = own is None or MODULES.get(module) != own
        if name.startswith("_") and name != "__version__" and theirs:
            yield f"{_shown(path)}:{line}: from {module} import {name}"


def _private_attribute(attr: str, mine: frozenset[str]) -> bool:
    if attr.startswith("__") or attr in FOREIGN_PRIVATE:
        return False
    return attr not in mine


def _private_uses(path: Path) -> Iterator[str]:
    facts = _facts(path)
    mine = facts.defined
    own = _own_module(path) if path.is_relative_to(TESTS) else None
    if own is not None:
        mine |= _facts(own).defined
    where = _shown(path)
    for module, names, _, line in facts.imports:
        if module is not None:
            yield from _private_imports(path, module, names, line, own)
    for attr, line in facts.attributes:
        if _private_attribute(attr, mine):
            yield f"{where}:{line}: .{attr}"
    for text, line in facts.strings:
        for match in _DOTTED_PRIVATE.finditer(text):
            if match.group(1) not in mine and match.group(0) not in EXTENSIONS:
                yield f"{where}:{line}: {match.group(0)}"


def test_no_private_name_crosses_a_module() -> None:
    paths = [*_sources(PACKAGE), *(p for p in _sources(TESTS) if p.name != "test_layout.py")]
    uses = sorted({use for path in paths for use in _private_uses(path)})
    assert not uses, "private names of other modules:\n" + "\n".join(uses)


def test_modules_and_classes_stay_small() -> None:
    big = []
    for path in _sources(PACKAGE):
        facts = _facts(path)
        shown = path.relative_to(PROJECT)
        if facts.lines > MAX_MODULE_LINES:
            big.append(f"{shown}: {facts.lines} lines")
        big += [
            f"{shown}: class {name}: {size} lines"
            for name, size in facts.classes
            if size > MAX_CLASS_LINES
        ]
    assert not big, "too big:\n" + "\n".join(big)


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

"""Imports run one way between the rooms (issue #13).

The rooms are `core` (the package `agentexec` without the three below), `workers`, `projector`
and `api`. Every import of another room is found in the source tree by its syntax, lazy ones
inside functions included, and checked against the table below. `core` reaches another room at
two edges only, and only lazily: the facade (`ax.Pool` through PEP 562 `__getattr__`) and the
command line (each room's commands). Imports under `if TYPE_CHECKING:` never run and are free.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FACADE = "agentexec"
ROOMS = {"agentexec.workers": "workers", "agentexec.projector": "projector", "agentexec.api": "api"}

# The rooms each room may import, at module level or lazily. Anything else is refused.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    # `pool.run()` starts a projector in the pool's process when given a database.
    "workers": frozenset({"core", "projector"}),
    "projector": frozenset({"core"}),
    # The SSE history serves positions Redis no longer holds from the projector's Archive.
    "api": frozenset({"core", "projector"}),
}

# The two modules of core that may import other rooms, lazily (inside a function).
EDGES = {
    "agentexec": "the facade: PEP 562 __getattr__",
    "agentexec.cli": "the command line: each room's commands",
}


@dataclass(frozen=True)
class Crossing:
    """One import (or facade attribute) that reaches another room."""

    path: str
    line: int
    module: str
    target: str
    lazy: bool
    typing_only: bool

    @property
    def source_room(self) -> str:
        return room_of(self.module)

    @property
    def target_room(self) -> str:
        return room_of(self.target)

    def broken_rule(self) -> str | None:
        if self.typing_only or self.target_room in MAY_IMPORT[self.source_room]:
            return None
        if self.source_room == "core" and self.module in EDGES and self.lazy:
            return None
        if self.source_room == "core":
            return "core imports no other room (only the facade and the CLI may, lazily)"
        allowed = ", ".join(sorted(MAY_IMPORT[self.source_room]))
        return f"{self.source_room} may import only {allowed}"

    def __str__(self) -> str:
        how = "typing only" if self.typing_only else "lazily" if self.lazy else "at module level"
        return f"{self.path}:{self.line}: {self.module} imports {self.target} {how}"


def room_of(module: str) -> str:
    for package, room in ROOMS.items():
        if module == package or module.startswith(package + "."):
            return room
    return "core"


def package_dirs(root: Path) -> dict[str, Path]:
    """`agentexec` -> core/, ... as pyproject.toml's setuptools `package-dir` declares them."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {
        name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()
    }


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package, folder in package_dirs(root).items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def facade_names(source: str) -> dict[str, str]:
    """The facade's names and the module each comes from: `Pool` -> `agentexec.workers`.

    Read from its imports, those under TYPE_CHECKING included, which declare its lazy names."""
    names = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                home = f"{FACADE}.{node.module}" if node.module else f"{FACADE}.{alias.name}"
                names[alias.asname or alias.name] = home
    return names


class _Scan(ast.NodeVisitor):
    def __init__(
        self, module: str, is_package: bool, path: str, facade: dict[str, str], known: set[str]
    ) -> None:
        self.module, self.path, self.facade, self.known = module, path, facade, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.typing_only = 0
        self.facade_aliases: set[str] = set()
        self.found: list[Crossing] = []

    def reach(self, node: ast.AST, target: str) -> None:
        if target != FACADE and not target.startswith(FACADE + "."):
            return
        if room_of(target) == room_of(self.module):
            return
        crossing = Crossing(
            self.path, node.lineno, self.module, target, self.depth > 0, self.typing_only > 0
        )
        if crossing not in self.found:
            self.found.append(crossing)

    def resolve(self, name: str) -> str:
        """The module that `name` (a module, or an attribute of one) comes from:
        `agentexec.Pool` -> `agentexec.workers` through the facade."""
        module, _, attribute = name.rpartition(".")
        if module == FACADE and attribute in self.facade:
            return self.facade[attribute]
        return name if name in self.known else module

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.reach(node, alias.name)
            if alias.name == FACADE or (
                alias.asname is None and alias.name.startswith(FACADE + ".")
            ):
                self.facade_aliases.add(alias.asname or FACADE)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
            name = f"{base}.{alias.name}"
            self.reach(node, name if name in self.known else self.resolve(name))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.facade_aliases:
            self.reach(node, self.resolve(f"{FACADE}.{node.attr}"))
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self.typing_only += guarded
        for child in node.body:
            self.visit(child)
        self.typing_only -= guarded
        for child in node.orelse:
            self.visit(child)
        self.visit(node.test)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # Annotations are never evaluated (`from __future__ import annotations`): typing only.
        for child in [node.target, node.value]:
            if child is not None:
                self.visit(child)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators and defaults run at import time, the body when called; annotations never.
        for child in [*getattr(node, "decorator_list", []), *node.args.defaults]:
            self.visit(child)
        for default in node.args.kw_defaults:
            if default is not None:
                self.visit(default)
        self.depth += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef


def scan(root: Path) -> list[Crossing]:
    """Every import of another room under `root`, in file order."""
    found = modules(root)
    facade = facade_names(found[FACADE].read_text())
    crossings = []
    for module, path in sorted(found.items()):
        relative = str(path.relative_to(root))
        scanner = _Scan(module, path.name == "__init__.py", relative, facade, set(found))
        scanner.visit(ast.parse(path.read_text(), str(path)))
        crossings.extend(scanner.found)
    return crossings


def broken(crossings: list[Crossing]) -> list[str]:
    return [f"{c}: breaks '{rule}'" for c in crossings if (rule := c.broken_rule())]


def test_rooms_import_one_way() -> None:
    crossings = scan(ROOT)
    wrong = broken(crossings)
    if wrong:
        allowed = [f"  {c}" for c in crossings if c.target_room != "core" and not c.broken_rule()]
        pytest.fail(
            "\n".join(
                [
                    "imports against the direction of the rooms:",
                    *wrong,
                    "imports of workers, projector or api that the rules allow:",
                    *allowed,
                ]
            )
        )


def test_the_scan_sees_the_edges() -> None:
    """A scan that found nothing would pass the test above for the wrong reason."""
    crossings = scan(ROOT)
    assert ("agentexec", "workers") in {(c.module, c.target_room) for c in crossings}
    lazy = {(c.module, c.target_room) for c in crossings if c.lazy}
    assert {("agentexec.cli", "workers"), ("agentexec.cli", "api")} <= lazy


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("agentexec.pipelines", "from .workers import Pool", "core imports no other room"),
        ("agentexec.pipelines", "def f():\n    from .workers import Pool", "core imports no"),
        ("agentexec.cli", "from agentexec.api.commands import api", "core imports no other room"),
        ("agentexec.cli", "def f():\n    from agentexec.api import commands", None),
        ("agentexec.queue", "if TYPE_CHECKING:\n    from .workers import Pool", None),
        ("agentexec.api.routes", "import agentexec as ax\nax.Pool", "api may import only core"),
        ("agentexec.api.routes", "from agentexec import Pool", "api may import only core"),
        ("agentexec.api.routes", "import agentexec as ax\nax.activity", None),
        ("agentexec.projector.restore", "from ..workers import worker", "projector may import"),
        ("agentexec.workers.pool", "from agentexec.projector import Projector", None),
    ],
)
def test_a_scan_of_one_module(module: str, source: str, rule: str | None) -> None:
    facade = {"Pool": "agentexec.workers", "activity": "agentexec.activity"}
    known = {"agentexec.workers", "agentexec.api.commands", "agentexec.projector"}
    scanner = _Scan(module, False, "x.py", facade, known)
    scanner.visit(ast.parse(source))
    rules = [c.broken_rule() for c in scanner.found]
    if rule is None:
        assert not any(rules)
    else:
        assert any(rules) and all(r.startswith(rule) for r in rules if r)


# What a process of each room imports first: the package and the modules its command runs.
ENTRY_MODULES = {
    "core": ["agentexec", "agentexec.cli", "agentexec.queue", "agentexec.pipelines"],
    "workers": ["agentexec.workers", "agentexec.workers.demo"],
    "projector": ["agentexec.projector", "agentexec.projector.commands"],
    "api": ["agentexec.api", "agentexec.api.commands", "agentexec.api.app"],
}


@pytest.mark.parametrize("room", sorted(ENTRY_MODULES))
def test_a_process_of_a_room_loads_no_room_it_may_not_import(room: str) -> None:
    """What the syntax cannot see: modules imported by name (`importlib`) at import time."""
    program = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
        "print(' '.join(m for m in sys.modules if m.startswith('agentexec')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program, *ENTRY_MODULES[room]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wrong = sorted(m for m in loaded if room_of(m) not in MAY_IMPORT[room] | {room})
    assert not wrong, f"importing {', '.join(ENTRY_MODULES[room])} loads {wrong}"


# Configuration at the edge (issue #13): `ax.CONF` is read by these modules only; everything
# else gets a `Runtime` (or its settings, keys, broker) passed in, see `agentexec.runtime`.
CONF_READERS = {
    "agentexec.config": "defines it",
    "agentexec.runtime": "the edge: `current()` snapshots it",
    "agentexec": "the facade re-exports it as `ax.CONF`",
    "agentexec.cli": "the command line sets it from its options",
    "agentexec.workers.worker": "a worker process's entry mirrors the pool's settings into it",
    "agentexec.workers.demo": "the demo is an application: it sets its Redis and namespace",
}


def conf_references(source: str) -> list[int]:
    """Lines of `source` that name `CONF`: an import of it, the bare name, or `x.CONF`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and any(a.name == "CONF" for a in node.names):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Name) and node.id == "CONF") or (
            isinstance(node, ast.Attribute) and node.attr == "CONF"
        ):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_the_edge_reads_conf() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module} references CONF"
        for module, path in sorted(modules(ROOT).items())
        if module not in CONF_READERS
        for line in conf_references(path.read_text())
    ]
    assert not wrong, (
        "modules below the edge read `CONF`; take a `Runtime` (agentexec.runtime) as a "
        "parameter or attribute instead, or call `current()` at a public entry point:\n"
        + "\n".join(wrong)
    )


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from agentexec.config import CONF\n", [1]),
        ("import agentexec as ax\nx = ax.CONF.key_prefix\n", [2]),
        ("def f():\n    return CONF.block_ms\n", [2]),
        ('"""CONF in a docstring, CONFIG."""\nCONFIG = 1\n', []),
    ],
)
def test_the_conf_scan_sees_each_form(source: str, found: list[int]) -> None:
    assert conf_references(source) == found

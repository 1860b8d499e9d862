"""The shape of swapd: which module may import which (docs/architecture.md draws the picture).

Every module under swapd/ is parsed with ``ast`` and every import counts: those at the top,
those inside functions (lazy imports) and those under ``if TYPE_CHECKING:``. From them the
module import graph is built, and checked for cycles, for arrows that point the wrong way
between the layers, for production code that uses the demo, and for modules grown too long.
(One import is invisible to ``ast``: trainer/models/__init__.py loads its own model modules by
name, inside the package.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "swapd"

# --- the rules, in one place --------------------------------------------------------------
# A unit is a top-level package or module of swapd ("swapd" is the package's own __init__,
# which holds the version). Each unit may import itself and the units listed for it.
GROUND = frozenset({"media", "config", "fsutil", "state", "workspace", "runtime", "errors",
                    "threads", "cgroups", "swapd"})
ALLOWED: dict[str, frozenset[str]] = {
    # Entry points: parse, supervise, show. The CLI starts the service; the service serves the
    # dashboard; the dashboard reads the state store and the workspace, and checks outputs'
    # marks as `swapd verify` does (merger's provenance).
    "__main__": frozenset({"cli"}),
    "cli": frozenset({"daemon", "trainer", "merger", "exporter", "extract", "faces", *GROUND}),
    "daemon": frozenset({"dashboard", "trainer", "merger", "exporter", "extract", "faces",
                         *GROUND}),
    "dashboard": frozenset({"merger", "faces", *GROUND}),
    # The work. trainer and merger use extract (detectors, landmarks); exporter uses trainer
    # (it exports trained models); extract uses neither merger nor trainer.
    "trainer": frozenset({"extract", "faces", *GROUND}),
    "merger": frozenset({"extract", "faces", *GROUND}),
    "exporter": frozenset({"trainer", "faces", *GROUND}),
    "extract": frozenset({"faces", *GROUND}),
    # One reader per face format, alignment and pose maths.
    "faces": GROUND,
    # The ground: video/image I/O, schemas, atomic writes, the state store, onnxruntime.
    "media": frozenset({"errors"}),
    "config": frozenset({"errors"}),
    "fsutil": frozenset({"errors"}),
    "state": frozenset({"errors"}),
    "workspace": frozenset({"errors"}),
    "runtime": frozenset({"errors"}),
    "errors": frozenset(),
    # swapd's __init__ sets OpenMP's wait policy (swapd.threads) before anything loads torch.
    "threads": frozenset({"cgroups"}),
    "cgroups": frozenset(),  # what the control groups allow: memory, CPU time
    "swapd": frozenset({"threads"}),
}
# The demo (synthetic people, clip, demo workspace) may import anything below the entry points;
# only the demo, the tests, the benchmarks and this one lazy import use it.
DEMO_MAY_IMPORT = frozenset(set(ALLOWED) - {"__main__", "cli", "daemon", "dashboard"})
DEMO_LAZY_IMPORT = ("swapd.cli.service", "cmd_demo")  # `swapd demo` prepares its workspace

MAX_LINES = 450  # the project aims at ~400: a module past this is split


# --- the graph ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import statement's target module, and where it stands."""

    source: str  # the importing module
    target: str  # the imported module (the deepest one that exists)
    line: int
    function: str | None  # the enclosing function, for a lazy import


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def swapd_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _deepest(name: str, modules: set[str]) -> str | None:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


class _Imports(ast.NodeVisitor):
    def __init__(self, source: str, is_package: bool, modules: set[str]) -> None:
        self.source, self.modules = source, modules
        self.package = source if is_package else source.rpartition(".")[0]
        self.functions: list[str] = []
        self.found: list[Import] = []

    def _add(self, name: str, node: ast.stmt) -> None:
        target = _deepest(name, self.modules)
        if target is not None and target != self.source:
            function = self.functions[-1] if self.functions else None
            self.found.append(Import(self.source, target, node.lineno, function))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:  # `from swapd.x import y`: y is a module or a name in x
            self._add(f"{module}.{alias.name}", node)


def imports_of(path: Path, modules: set[str], root: Path = REPO) -> list[Import]:
    visitor = _Imports(module_name(path, root), path.name == "__init__.py", modules)
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return visitor.found


def all_imports() -> list[Import]:
    modules = swapd_modules()
    return [i for path in modules.values() for i in imports_of(path, set(modules))]


def unit(module: str) -> str:
    """The top-level package or module a module belongs to ("swapd" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for i in imports:
        edges.setdefault(i.source, set()).add(i.target)
    return edges


def _describe(imports: Iterator[Import] | list[Import]) -> str:
    return "\n".join(f"  {i.source} -> {i.target} (line {i.line})" for i in imports)


# --- the checks ---------------------------------------------------------------------------


def test_the_graph_is_read() -> None:
    """Not vacuous: every module is found, and imports of every kind are seen."""
    modules = swapd_modules()
    imports = all_imports()
    assert {"swapd.cli", "swapd.state", "swapd.demo.painter"} <= set(modules)
    seen = {(i.source, i.target) for i in imports}
    assert ("swapd.daemon.service", "swapd.state") in seen  # top level
    assert ("swapd.cli.service", "swapd.daemon.service") in seen  # inside a function
    assert ("swapd.daemon.ingest", "swapd.extract.detectors.base") in seen  # TYPE_CHECKING
    assert set(ALLOWED) == {unit(m) for m in modules} - {"demo"}, "a unit the table lacks"


def test_no_import_cycles() -> None:
    cycle = find_cycle(_graph(all_imports()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_rules_themselves_point_one_way() -> None:
    table = {u: set(allowed) - {u} for u, allowed in ALLOWED.items()}
    cycle = find_cycle(table)
    assert cycle is None, "ALLOWED has a cycle: " + " -> ".join(cycle or [])


def test_each_layer_imports_only_what_it_may() -> None:
    wrong = [i for i in all_imports()
             if unit(i.source) != unit(i.target) and unit(i.source) != "demo"
             and unit(i.target) != "demo"
             and unit(i.target) not in ALLOWED[unit(i.source)]]
    assert not wrong, "imports against the layers (see ALLOWED):\n" + _describe(wrong)
    demo = [i for i in all_imports() if unit(i.source) == "demo"
            and unit(i.target) not in DEMO_MAY_IMPORT | {"demo"}]
    assert not demo, "the demo imports an entry point:\n" + _describe(demo)


def test_only_the_demo_command_imports_the_demo() -> None:
    """Production code (swapd/ outside swapd/demo/, windows_service/) never imports the demo,
    except `swapd demo`'s own command, lazily; tests and benchmarks may."""
    modules = swapd_modules()
    paths = [p for p in modules.values() if unit(module_name(p)) != "demo"]
    paths += sorted((REPO / "windows_service").glob("*.py"))
    found = [i for p in paths for i in imports_of(p, set(modules))
             if unit(i.target) == "demo" and i.target.startswith("swapd.")]
    wrong = [i for i in found if (i.source, i.function) != DEMO_LAZY_IMPORT]
    assert not wrong, "production code imports swapd.demo:\n" + _describe(wrong)
    assert [i.target for i in found] == ["swapd.demo.workspace"]  # the demo command's


def test_no_module_is_too_long() -> None:
    lengths = {p.relative_to(REPO).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
               for p in PACKAGE.rglob("*.py")}
    too_long = {p: n for p, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"


def test_the_cycle_finder_finds_cycles(tmp_path: Path) -> None:
    """The checks above would pass on a broken parser: it is tested on a made-up package."""
    pkg = tmp_path / "swapd"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from typing import TYPE_CHECKING\n"
                                    "if TYPE_CHECKING:\n    from swapd.b import Thing\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    modules = {module_name(p, tmp_path): p for p in pkg.rglob("*.py")}
    imports = [i for p in modules.values() for i in imports_of(p, set(modules), tmp_path)]
    assert {(i.source, i.target, i.function) for i in imports} == {
        ("swapd.a.x", "swapd.b", None), ("swapd.b", "swapd.a.x", "f")}
    assert find_cycle(_graph(imports)) in (["swapd.a.x", "swapd.b", "swapd.a.x"],
                                           ["swapd.b", "swapd.a.x", "swapd.b"])

"""The layering the folders promise, checked on the code itself.

- Importing calreport's modules opens no data or template file (nothing happens at import time).
- The pure core (calreport/calibration/, calreport/realism.py, calreport/apply.py) loads no file or
  network code, even transitively: checked in a fresh interpreter's sys.modules.
- LAYERS, declared once below, is the order of the layers; no module imports a module of a higher
  layer (imports inside functions count, `if TYPE_CHECKING:` blocks do not), and the package has no
  import cycles. Checking every edge also checks every path, so a pure module cannot reach file
  code through market/.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import calreport

PKG = Path(calreport.__file__).resolve().parent
CORE = PKG / "calibration"

# Bottom to top; a module may import its own layer and the layers below it. A name is a module or
# a package prefix; a module belongs to the longest name that matches it. The market data's pure
# modules (quote parsing, RV arithmetic, the day-file columns) sit below the core; its I/O modules
# (Deribit's HTTP client, the harvest and price files, compaction, Parquet, the sample market's
# writer) sit above the store, whose file primitives (locks, atomic writes, paths) they use.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("bottom", ("calreport", "calreport.model", "calreport.errors", "calreport.numbers", "calreport.timeutil",
                "calreport.fmt", "calreport.jsonio")),
    ("market, pure", ("calreport.market", "calreport.market.quotes", "calreport.market.rv", "calreport.market.daycols")),
    ("core", ("calreport.calibration", "calreport.realism", "calreport.apply")),
    ("store", ("calreport.store",)),
    ("market I/O", ("calreport.market.deribit", "calreport.market.harvest", "calreport.market.prices",
                    "calreport.market.rvsource", "calreport.market.compact", "calreport.market.parquet",
                    "calreport.market.sample")),
    ("engine", ("calreport.engine",)),
    ("report", ("calreport.report",)),
    ("commands", ("calreport.commands", "calreport.__main__")),
]
CORE_PREFIXES = LAYERS[2][1]
# What a fresh interpreter that imported the whole core must not have loaded.
CORE_MUST_NOT_LOAD = (
    "urllib.request", "http.client", "filelock", "calreport.store",
    "calreport.market.deribit", "calreport.market.harvest", "calreport.market.prices",
    "calreport.market.rvsource", "calreport.market.compact", "calreport.market.parquet", "calreport.market.sample",
)
IO_CALLS = {"open", "print", "input"}
IO_METHODS = {"open", "write", "write_text", "write_bytes", "read_text", "read_bytes", "unlink", "mkdir", "touch", "flush"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping `if TYPE_CHECKING:` blocks (they never run)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        yield child
        yield from _walk(child)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """calreport modules `path` imports anywhere (top level or inside functions), plus module names
    written as strings (importlib.import_module dodges the import statement, not the dependency).

    Importing a.b.c first runs a/__init__ and a/b/__init__, so those count too, except the
    packages that contain `path` (they are already being imported when it runs)."""
    me = module_name(path)
    mine = {me.rsplit(".", i)[0] for i in range(me.count(".") + 1)}
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in _walk(ast.parse(path.read_text() if source is None else source, str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            names = [node.value]
        for name in names:
            while name and name not in MODULES:  # `import calreport.x.y` names a module; attributes do not
                name = name.rpartition(".")[0]
            if name.startswith("calreport"):
                out.add(name)
                parent = name.rpartition(".")[0]
                while parent:  # importing a.b.c runs a/__init__ and a/b/__init__ first
                    out.add(parent)
                    parent = parent.rpartition(".")[0]
    return out - mine


# --------------------------------------------------------------------------- nothing happens at import time

IMPORT_ALL = r"""
import importlib, os, sys
pkg = os.path.realpath(sys.argv[1])
here = os.path.realpath(os.getcwd())
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.path.realpath(os.fsdecode(args[0]))
        inside = p.startswith(pkg + os.sep) or p.startswith(here + os.sep)
        if inside and not p.endswith(".pyc") and os.path.exists(p):  # a failed probe is no read
            opened.append(p)
sys.addaudithook(hook)
for name in sys.argv[2:]:
    importlib.import_module(name)
print("\n".join(opened))
"""



def _import_in_fresh_interpreter(names: list[str], cwd: Path, pycache: Path) -> list[str]:
    """The files the second of two fresh imports opens (the first writes the bytecode). The bytecode
    goes beside the sources (every dependency's is there already); only a read-only checkout needs
    a prefix of its own, where every dependency is compiled again (seconds)."""
    env = dict(os.environ)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if not (os.access(PKG, os.W_OK) and os.access(cwd, os.W_OK)):
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-c", IMPORT_ALL, str(PKG), *names]
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True)  # writes the bytecode
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True)
    return [line for line in out.stdout.splitlines() if line]


def test_importing_calreport_modules_opens_no_data_or_template_file(tmp_path: Path) -> None:
    """In a fresh interpreter (a root-like cwd with a config file in it), importing every module
    reads only bytecode: no template, config, history or source file is opened."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "calibration.yaml").write_text("schema_version: 1\n")
    names = sorted(n for n in MODULES if not n.endswith("__main__"))
    assert _import_in_fresh_interpreter(names, tmp_path, tmp_path / "pycache") == []


def test_the_import_probe_sees_a_module_that_reads_a_file_at_import(tmp_path: Path) -> None:
    """The probe can fail: a module that reads a template-like file when imported is caught."""
    (tmp_path / "page.html.j2").write_text("<p>{{ x }}</p>")
    (tmp_path / "reads_at_import.py").write_text("TEXT = open('page.html.j2').read()\n")
    opened = _import_in_fresh_interpreter(["reads_at_import"], tmp_path, tmp_path / "pycache")
    assert any(p.endswith("page.html.j2") for p in opened)


# --------------------------------------------------------------------------- the pure core


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


CORE_MODULES = sorted(n for n in MODULES if _in(n, CORE_PREFIXES) and n != "calreport.calibration")
CORE_FILES = [MODULES[n] for n in CORE_MODULES]

LOADED = r"""
import importlib, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
bad = [m for m in sorted(sys.modules) if any(m == p or m.startswith(p + ".") for p in sys.argv[1].split(","))]
print("\n".join(bad))
"""


def _loaded_by(names: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden modules a fresh interpreter has loaded after importing `names` (and start-up)."""
    cmd = [sys.executable, "-c", LOADED, ",".join(forbidden), *names]
    out = subprocess.run(cmd, cwd=PKG.parent, capture_output=True, text=True, timeout=120, check=True)
    return [line for line in out.stdout.splitlines() if line]


def test_importing_the_whole_core_loads_no_file_or_network_code() -> None:
    """Transitively: not the HTTP client, not the file lock, no store module, no market I/O module."""
    assert len(CORE_MODULES) > 10  # calibration/*, realism, apply
    assert _loaded_by(CORE_MODULES, CORE_MUST_NOT_LOAD) == []


def test_the_loaded_module_probe_sees_file_code_loaded_through_a_dependency() -> None:
    """The probe can fail: market.harvest loads the store's file module and the lock through its imports."""
    assert {"calreport.store.files", "filelock"} <= set(_loaded_by(["calreport.market.harvest"], CORE_MUST_NOT_LOAD))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_the_core_calls_no_file_or_print_io(path: Path) -> None:
    calls = []
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id in IO_CALLS) or (isinstance(f, ast.Attribute) and f.attr in IO_METHODS):
                calls.append(f"line {node.lineno}: {ast.unparse(f)}")
    assert calls == []


def test_the_import_scan_catches_an_import_in_a_function_a_dynamic_one_and_skips_type_checking() -> None:
    """The scans can fail (source text scanned as if it were a core module; nothing is written)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from calreport.store.applied import read_applied\n"
        "from calreport.model import LiveRun\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from calreport.report import render\n"
        "def f():\n"
        "    from ..commands import cli\n"
        "    importlib.import_module('calreport.engine')\n"
        "    print('x')\n"
    )
    found = imported_modules(CORE / "probe.py", source=source)
    assert {"calreport.store.applied", "calreport.commands.cli", "calreport.engine", "calreport.model"} <= found
    assert not any(n.startswith("calreport.report") for n in found)
    assert upward_imports({"calreport.calibration.probe": found}) != []
    tree = ast.parse(source)
    assert [n.func.id for n in _walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)] == ["print"]


# --------------------------------------------------------------------------- the layer order


def layer_of(name: str) -> int | None:
    """The index in LAYERS of the longest prefix that names `name`'s layer (None: in no layer)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if _in(name, (p,)) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer) -> b (higher layer)' for every edge that runs up."""
    out = []
    for name, deps in sorted(graph.items()):
        mine = layer_of(name)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{name} ({LAYERS[mine][0]}) -> {dep} ({LAYERS[theirs][0]})")
    return out


def test_every_module_has_a_layer() -> None:
    assert [n for n in MODULES if layer_of(n) is None] == []


def test_no_module_imports_a_module_of_a_higher_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    assert upward_imports({"calreport.market.quotes": {"calreport.store.files"}}) == [
        "calreport.market.quotes (market, pure) -> calreport.store.files (store)"
    ]
    assert upward_imports({"calreport.market.harvest": {"calreport.store.files", "calreport.market.quotes"}}) == []
    assert layer_of("calreport.market.harvest") > layer_of("calreport.store.files") > layer_of("calreport.calibration.fit")


# --------------------------------------------------------------------------- no import cycles


def import_graph() -> dict[str, set[str]]:
    """module -> the calreport modules it imports (anywhere but under TYPE_CHECKING)."""
    return {name: imported_modules(path) & set(MODULES) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycles_even_through_imports_inside_functions() -> None:
    graph = import_graph()
    assert "calreport.model" in graph["calreport.commands.schema"]  # a top-level import
    assert "calreport.report.render" in graph["calreport.report"]  # an import inside a function
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []

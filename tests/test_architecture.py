"""The layering the folders promise, checked on the code itself.

- Importing calreport's modules opens no data or template file (nothing happens at import time).
- calreport/calibration/ is a pure core: it imports nothing from report, engine or commands, from
  the store only the models (and, until they move, the config models), and calls no file or print I/O.
- The package has no import cycles, counting imports inside functions (which only hide them).
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

# calreport.store.config also loads the YAML (load_config); its pydantic models are allowed here
# until they live apart from that I/O.
CORE_MAY_IMPORT_FROM_STORE = {"calreport.model", "calreport.store.config"}
CORE_MUST_NOT_IMPORT = ("calreport.report", "calreport.engine", "calreport.commands", "calreport.store")
# TEMPORARY (named so it cannot spread): calibration/auto.py's module __getattr__ forwards the old
# name run_auto_calibration to the use case until calreport/commands/demo.py imports it from there.
EXEMPT: set[tuple[str, str]] = set()
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


def imported_modules(path: Path, exempt: set[str] = frozenset(), source: str | None = None) -> set[str]:  # type: ignore[assignment]
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
            if name.startswith("calreport") and name not in exempt:
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
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(pycache)}
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

CORE_FILES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_the_calibration_core_imports_no_report_engine_commands_or_store_io(path: Path) -> None:
    rel = str(path.relative_to(PKG))
    exempt = {name for r, name in EXEMPT if r == rel}
    bad = sorted(
        name
        for name in imported_modules(path, exempt)
        if name.startswith(CORE_MUST_NOT_IMPORT)
        and name not in CORE_MAY_IMPORT_FROM_STORE
        and name != "calreport.store"  # the package itself (store/__init__.py is empty)
    )
    assert bad == []


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_the_calibration_core_calls_no_file_or_print_io(path: Path) -> None:
    calls = []
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id in IO_CALLS) or (isinstance(f, ast.Attribute) and f.attr in IO_METHODS):
                calls.append(f"line {node.lineno}: {ast.unparse(f)}")
    assert calls == []


def test_the_core_scans_catch_a_forbidden_import_a_dynamic_one_and_a_print() -> None:
    """The two scans above can fail (source text scanned as if it were a core module; nothing is written)."""
    source = (
        "from calreport.store.applied import read_applied\n"
        "from calreport.model import LiveRun\n"
        "import importlib\n"
        "def f():\n"
        "    from ..commands import cli\n"
        "    importlib.import_module('calreport.engine')\n"
        "    print('x')\n"
    )
    found = imported_modules(CORE / "probe.py", source=source)
    assert {"calreport.store.applied", "calreport.commands.cli", "calreport.engine", "calreport.model"} <= found
    tree = ast.parse(source)
    assert [n.func.id for n in _walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)] == ["print"]


# --------------------------------------------------------------------------- no import cycles


def import_graph() -> dict[str, set[str]]:
    """module -> the calreport modules it imports; the temporary alias above is a known back edge."""
    return {
        name: imported_modules(path, {n for r, n in EXEMPT if PKG / r == path}) & set(MODULES)
        for name, path in MODULES.items()
    }


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
    assert "calreport.commands.usecases" in graph["calreport.commands.cli"]  # a top-level import
    assert "calreport.report.render" in graph["calreport.report"]  # an import inside a function
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []

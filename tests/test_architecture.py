"""The import rule of ARCHITECTURE.md, checked by reading every module's imports (AST).

- Runtime modules (top-level ``edgefer/*.py``), ``apps/``, ``backends/`` and ``llm/`` never
  import ``edgefer.training`` or ``edgefer.cli``: the runtime must install and run without torch
  and without the command line.
- ``training/`` never imports ``cli/`` (the command line is the top layer).
- No import cycles anywhere, lazy (function-level) imports included.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgefer"
FORBIDDEN = {
    "runtime": ("edgefer.training", "edgefer.cli"),
    "apps": ("edgefer.training", "edgefer.cli"),
    "backends": ("edgefer.training", "edgefer.cli"),
    "llm": ("edgefer.training", "edgefer.cli"),
    "training": ("edgefer.cli",),
    "cli": (),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module == "edgefer.__main__":  # ``python -m edgefer`` is the command line
        return "cli"
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "runtime"


def imported_modules(path: Path, module: str) -> set[str]:
    """Every ``edgefer`` module that ``path`` (the module named ``module``) imports, at module
    level or inside functions, relative imports (``from ..training import x``) resolved."""
    found: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            found.add(source)
            # ``from edgefer.training import train`` imports the submodule edgefer.training.train
            found.update(f"{source}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{source}.{alias.name}".replace(".", "/")).exists()
                         or (PACKAGE.parent / (f"{source}.{alias.name}".replace(".", "/") + ".py")
                             ).exists())
    return {name for name in found if name == "edgefer" or name.startswith("edgefer.")}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path, module_name(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {module for module in import_graph() if layer(module) not in FORBIDDEN
               and module != "edgefer"}
    assert not unknown, f"add these packages to the import rule: {sorted(unknown)}"


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_layer_imports(module: str) -> None:
    forbidden = FORBIDDEN.get(layer(module), ())
    bad = sorted(name for name in import_graph()[module]
                 if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not bad, f"{module} ({layer(module)}) must not import {bad}"


def test_no_import_cycles() -> None:
    graph = {module: {dep for dep in deps if dep in import_graph()}
             for module, deps in import_graph().items()}
    # A package's __init__ is imported by its submodules implicitly; only explicit edges count.
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles found by depth-first search (one per back edge)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rule can fail: a module importing training is reported, in the relative form too
    (``from ..training import export`` in a backend)."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from edgefer.training import train\n")
    assert "edgefer.training" in imported_modules(module, "edgefer.bad")
    module.write_text("def f():\n    from ..training import export\n    from . import base\n")
    assert {"edgefer.training", "edgefer.training.export", "edgefer.backends.base"} <= \
        imported_modules(module, "edgefer.backends.bad")
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_ray_is_imported_only_when_a_ray_run_starts() -> None:
    """``import edgefer``, the command line (``score --help`` included) and the module behind
    ``score --ray`` leave the optional ``ray`` package unimported."""
    import subprocess
    import sys

    code = "\n".join([
        "import contextlib, io, sys",
        "import edgefer, edgefer.apps.distributed",
        "from edgefer.cli.main import build_parser",
        "parser = build_parser()",
        "parser.parse_args(['score', 'in.mp4', '-o', 'out', '--ray'])",
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):",
        "    parser.parse_args(['score', '--help'])",
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""The house rules of the package layout (issue 21), checked on the source: imports run one way, at module level,
and the files that should stay small do."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_deepclean"
# Imports allowed inside functions: an optional extra, or a measured start-up cost (each commented at its site).
LAZY_ALLOWED = ("matplotlib", "hf_deepclean.evaluation.metrics")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement of ``module``, relative ones resolved."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            names = submodules or [base]  # `from . import x` imports the submodule x, not the package's body
        else:
            continue
        found += [(name, id(node) in nested) for name in names]
    return found


def _own(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_imports_run_one_way():
    graph = {m: {_own(n) for n, _ in _imports(m)} - {None, m} for m in MODULES}
    # a package's __init__ re-exporting its own submodules is not a cycle of the data flow
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_imports_are_at_module_level():
    lazy = [(m, name) for m in MODULES for name, inside in _imports(m)
            if inside and not name.startswith(LAZY_ALLOWED)]
    assert not lazy, lazy


@pytest.mark.parametrize("path, limit", [("trainer.py", 350)] + [
    (str(p.relative_to(PACKAGE)), 200) for p in sorted((PACKAGE / "commands").glob("*.py"))])
def test_small_files_stay_small(path, limit):
    lines = len((PACKAGE / path).read_text(encoding="utf-8").splitlines())
    assert lines < limit, f"{path} has {lines} lines (limit {limit}): split it by job"

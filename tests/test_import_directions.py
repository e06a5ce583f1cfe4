"""The package's imports point one way: each room (a sub-package, or a top-level module)
imports only the rooms the table below allows, and the table has no circle.

Imports are read from the source (every `import` and `from ... import`, those inside
functions included: a lazy import is still a dependency), so the test needs no import
of the package. docs/architecture.md draws the same table.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "omni_img"

BASE = {"", "errors", "preflight", "cache", "fields"}  # "": omni_img/__init__.py (its version)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "preflight": {"errors"},
    "cache": set(),
    "fields": {"errors"},
    "compilation": {"cache"},
    "world": {"errors", "preflight"},  # the synthetic world, with its judge
    "text": BASE,
    "sharding": BASE,
    "provenance": BASE,
    "evals.metrics": BASE,  # FID, CLIP score and their reference ports
    "models": BASE | {"text"},
    "sampling": BASE | {"models", "text", "compilation"},
    "config": BASE | {"sharding", "models", "sampling"},
    "data": BASE | {"world"},
    "training": BASE | {"sharding", "config", "data"},
    "stages": BASE | {"models", "text", "sampling", "config", "sharding", "data", "training"},
    "export": BASE
    | {"models", "text", "sampling", "config", "sharding", "training", "stages", "compilation",
       "provenance"},  # fmt: skip
    "evals": BASE
    | {"world", "evals.metrics", "models", "text", "sampling", "config", "data", "stages",
       "export"},  # fmt: skip
    "trainers": BASE
    | {"world", "evals", "evals.metrics", "models", "text", "sampling", "config", "sharding",
       "data", "training", "stages", "compilation"},  # fmt: skip
    "serve": BASE | {"sampling", "text", "export", "compilation", "provenance"},
    "demo": BASE
    | {"world", "data", "config", "sharding", "stages", "trainers", "evals", "export",
       "sampling"},  # fmt: skip
    "cli": {"", "errors"},  # names each command's module as a string, imported on use
    "": set(),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """`omni_img.evals.metrics.fid` -> `evals.metrics`; `omni_img.world.judge` -> `world`."""
    parts = module.split(".")[1:]
    if parts[:2] == ["evals", "metrics"]:
        return "evals.metrics"
    return parts[0] if parts else ""


def imported_modules(module: str) -> set[str]:
    """The omni_img modules `module` imports (a `from pkg import name` of a sub-module
    counts as that sub-module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            found |= submodules
            if len(submodules) < len(node.names):  # some name is defined in `target` itself
                found.add(target)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_room_is_in_the_table():
    assert {room(m) for m in MODULES} <= set(ALLOWED), {room(m) for m in MODULES} - set(ALLOWED)


def test_the_table_has_no_circle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            below == goal or (below not in seen and reaches(below, goal, seen | {below}))
            for below in ALLOWED[start]
        )

    assert not [name for name in ALLOWED if reaches(name, name, set())]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_table(module):
    upward = sorted(
        f"{dep} ({room(dep)})"
        for dep in GRAPH[module]
        if room(dep) != room(module) and room(dep) not in ALLOWED[room(module)]
    )
    assert not upward, f"{module} ({room(module)}) imports rooms the table puts above it: {upward}"


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("omni_img"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                offenders += [f"{module}: {name} from {node.module}"
                              for name in private if not name.startswith("__")]  # fmt: skip
    assert not offenders, offenders


def test_no_circle_between_modules():
    """Within a room too: a circle of modules (even through lazy imports) is a room that
    should be one module, or a definition in the wrong place."""
    state: dict[str, str] = {}
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not circles, circles

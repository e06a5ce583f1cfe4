"""No test module imports another test module (tests/**/test_*.py) or a conftest.py:
helpers shared by several test modules live in tests/support (see its __init__.py)."""

import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent


def _forbidden(module: str) -> bool:
    """A test module or a conftest, by its dotted name (`tests.x.test_y`, `conftest`)."""
    last = module.rpartition(".")[2]
    return last == "conftest" or last.startswith("test_")


def _imported(path: pathlib.Path, node: ast.AST) -> list[str]:
    """The dotted names of the modules an import statement may bring in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against the importing file's package
        package = path.relative_to(TESTS.parent).parent.parts
        package = package[: len(package) - (node.level - 1)]
        base = ".".join((*package, *([node.module] if node.module else [])))
    else:
        base = node.module or ""
    # `from tests.x import test_y` imports the module tests.x.test_y (a name of a module
    # file, not a function called test_...).
    folder = TESTS.parent.joinpath(*base.split("."))
    modules = [a.name for a in node.names if folder.joinpath(f"{a.name}.py").is_file()]
    return [base, *(f"{base}.{name}" for name in modules)]


def forbidden_imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        for module in _imported(path, node):
            if _forbidden(module):
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} imports {module}")
    return found


def test_no_test_module_imports_a_test_module_or_a_conftest():
    found = [line for path in sorted(TESTS.rglob("*.py")) for line in forbidden_imports(path)]
    assert not found, "move the shared helpers into tests/support:\n" + "\n".join(found)

"""Every third-party module the installed package imports is a declared dependency of its own.

A module that arrives only through another package's requirements (Pillow through torchvision, Jinja2
through torch) disappears from a user's environment the day that package drops it. Imports at module
level must be core dependencies; an import inside a function (an optional feature with its own
ImportError, such as scikit-learn's digits) may come from an extra.
"""

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import ibzoo

PACKAGE = Path(ibzoo.__file__).parent


def _modules(nodes: list[ast.AST]) -> set[str]:
    modules = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"ibzoo", "__future__"}


def _imports() -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported anywhere) by the package's files."""
    module_level, anywhere = set(), set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = [
            node
            for statement in tree.body
            for node in ast.walk(statement)
            if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        module_level |= _modules(top)
        anywhere |= _modules(list(ast.walk(tree)))
    return module_level, anywhere


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: bool) -> set[str]:
    lines = [line for line in requires("ibzoo") or [] if extras or "extra ==" not in line]
    return {_normalised(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group()) for line in lines}


def _undeclared(modules: set[str], declared: set[str]) -> dict[str, list[str]]:
    distributions = packages_distributions()
    return {
        module: distributions.get(module, ["?"])
        for module in sorted(modules)
        if not declared & {_normalised(name) for name in distributions.get(module, [module])}
    }


def test_module_level_imports_are_core_dependencies() -> None:
    module_level, _ = _imports()
    assert {"torch", "timm", "PIL", "numpy", "safetensors"} <= module_level  # the scan sees them
    undeclared = _undeclared(module_level, _declared(extras=False))
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_function_level_imports_are_declared_at_least_as_extras() -> None:
    _, anywhere = _imports()
    assert "sklearn" in anywhere
    undeclared = _undeclared(anywhere, _declared(extras=True))
    assert not undeclared, f"imported but declared nowhere in pyproject.toml: {undeclared}"


def test_the_model_card_renderer_is_declared() -> None:
    # huggingface_hub's ModelCard.from_template needs Jinja2, which huggingface_hub lists only as an extra.
    assert "jinja2" in _declared(extras=False)

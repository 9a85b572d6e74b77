"""The house rules that a machine can check: imports point down the layer list, packages are used
through their ``__init__`` exports, and modules that call themselves pure import no I/O, no clock and
no global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["vnproto", "nat", "overlay", "dht", "ipop"]
RANK = {name: i for i, name in enumerate(LAYERS)}
# What a pure module may not touch: the event loop, sockets, the clock, devices, the network, and the
# process-wide random generator (a core receives `now` and a `random.Random`).
FORBIDDEN_IN_PURE = {
    "asyncio",
    "socket",
    "time",
    "pytun",
    "aiodns",
    "select",
    "selectors",
    "subprocess",
    "threading",
    "secrets",
    "datetime",
}


def _modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_and_use_package_exports(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    tree = ast.parse(path.read_text(), str(path))
    for module, _names, line in _imports(tree):
        top = module.split(".")[0]
        if top not in RANK or top == own:
            continue
        where = f"{path.relative_to(ROOT)}:{line}"
        assert RANK[top] < RANK[own], f"{where} imports {module}, a layer above {own}"
        assert module == top, f"{where} reaches into {module}; use what {top}/__init__.py exports"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_whether_it_is_pure(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    if path.name == "__init__.py" and not doc:
        pytest.fail(f"{path.relative_to(ROOT)} needs a docstring saying what the package is")
    if path.name not in {"__init__.py", "__main__.py"}:
        assert doc.startswith(("Pure.", "I/O.")), (
            f"{path.relative_to(ROOT)}: the docstring must start with 'Pure.' or 'I/O.'"
        )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_touch_no_io_clock_or_global_randomness(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    if not (ast.get_docstring(tree) or "").startswith("Pure."):
        return
    rel = path.relative_to(ROOT)
    for module, names, line in _imports(tree):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_IN_PURE, f"{rel}:{line}: a pure module imports {module}"
        if top == "random":
            assert module == "random" and names == ["Random"], (
                f"{rel}:{line}: a pure module takes a random.Random; it may import only that type"
            )
        if top == "os":
            assert "urandom" not in names, f"{rel}:{line}: os.urandom in a pure module"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            call = f"{node.value.id}.{node.attr}"
            assert call not in {"os.urandom", "os.getrandom", "random.random"}, (
                f"{rel}:{node.lineno}: {call} in a pure module"
            )

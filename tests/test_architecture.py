"""The layers of docs/architecture.md hold: each module imports from its own layer or those below, never above."""

import ast
from pathlib import Path

import fitkart_server

PACKAGE = Path(fitkart_server.__file__).parent
BASE = {"config", "clock", "bounds", "ticker", "version"}
# What each layer may import (besides itself); the app factory (__init__) may import everything.
MAY_IMPORT = {
    "base": set(),
    "model": {"base"},
    "sync": {"model", "base"},
    "storage": {"sync", "model", "base"},
    "web": {"storage", "sync", "model", "base"},
    "reconcile": {"storage", "sync", "model", "base"},
    "ops": {"web", "reconcile", "storage", "sync", "model", "base"},
}


def layer(parts: list[str]) -> str:
    """The layer of a module given by its dotted parts inside the package."""
    return "base" if parts[0] in BASE else parts[0]


def imported_layers(path: Path) -> set[str]:
    """The layers a module's relative imports reach."""
    module = list(path.relative_to(PACKAGE).with_suffix("").parts)
    reached = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            target = module[:-node.level] + (node.module.split(".") if node.module else [])
            named = [[*target, alias.name] for alias in node.names] if not node.module else [target]
            reached |= {layer(parts) for parts in named if parts}
    return reached


def test_each_layer_imports_only_the_layers_below_it():
    """Checked on every module of the package, so a new upward import fails here first."""
    modules = [path for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE or path.stem in BASE]
    assert len(modules) > 30
    wrong = {}
    for path in modules:
        own = layer(list(path.relative_to(PACKAGE).with_suffix("").parts))
        beyond = imported_layers(path) - MAY_IMPORT[own] - {own}
        if beyond:
            wrong[str(path.relative_to(PACKAGE))] = sorted(beyond)
    assert not wrong


def test_the_sync_engine_knows_nothing_of_flask():
    """The engine is plain Python over pymongo: every write path can call it."""
    for path in (PACKAGE / "sync").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(name.split(".")[0] in ("flask", "flask_smorest", "werkzeug") for name in names), path


def sibling_imports(path: Path) -> set[str]:
    """The modules of its own package a module imports (`from .x import`, `from . import x`), type-only ones too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return names


def test_the_sync_modules_import_each_other_in_one_direction():
    """No circle among sync/'s modules: what the rules share (mirror.py, plan.py, write.py) lies below them, and
    engine.py, the way in, above; a module that needs the engine's type takes a Mirror."""
    modules = {path.stem: sibling_imports(path) for path in (PACKAGE / "sync").glob("*.py") if path.stem != "__init__"}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join((*trail, name))
        if name not in done:
            for imported in modules.get(name, ()):
                visit(imported, (*trail, name))
            done.add(name)

    for name in modules:
        visit(name, ())

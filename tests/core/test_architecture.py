"""The package's layers hold: which subpackage may import which (docs/DESIGN.md draws it), no import
cycle, a core that imports without napari or Qt, a command-line parser that loads no torch, and the
``>>>`` examples of the documented modules run."""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "napari_isfl"

#: layer of every top-level module or subpackage (the package's own __init__ is its lazy public face)
LAYERS = {
    "_lazy": "base",
    "io": "base",
    "spatial": "base",
    "normalization": "base",
    "device": "base",
    "cases": "base",
    "samples": "base",
    "outputs": "base",
    "dicom": "base",
    "registration": "base",
    "metric_definitions": "base",
    "lesions": "base",
    "model": "model",
    "inference": "inference",
    "training": "training",
    "evaluation": "evaluation",
    "cohort": "cohort",
    "cli": "cli",
    "plugin": "plugin",
}
#: layer -> the layers it may import from (besides itself); the core is base + model + inference
ALLOWED = {
    "base": {"base"},
    "model": {"base"},
    "inference": {"base", "model"},
    "training": {"base", "model", "inference"},
    "evaluation": {"base", "model", "inference"},
    "plugin": {"base", "model", "inference"},
    "cohort": {"base", "model", "inference"},
    "cli": {"base", "model", "inference", "training", "evaluation", "cohort"},
}
CORE_LAYERS = ("base", "model", "inference", "training", "evaluation", "cohort", "cli")
GUI_MODULES = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """The package modules ``path`` imports, each with whether the import is at module level."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    top_level = {id(node) for node in tree.body}
    type_checking = {
        id(child)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in ast.walk(block)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_isfl"):
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("napari_isfl")]
        else:
            continue
        if id(node) not in type_checking:  # typing-only imports do not run
            found += [(name, id(node) in top_level) for name in names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    source_layer = _layer(_module_name(path))
    if source_layer is None:  # napari_isfl/__init__.py: the lazy public API names every layer
        return
    for target, _ in _imports(path):
        target_layer = _layer(target)
        if target_layer is None or target_layer == source_layer:
            continue
        assert target_layer in ALLOWED[source_layer], (
            f"{_module_name(path)} ({source_layer}) imports {target} ({target_layer})"
        )


def test_no_import_cycle_at_module_level() -> None:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in SOURCES}
    for path in SOURCES:
        edges = set()
        for target, top_level in _imports(path):
            # `from .pkg import name` may name a submodule or an attribute: keep what is a module
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if top_level and target in modules and target != _module_name(path):
                edges.add(target)
        graph[_module_name(path)] = edges
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + ".") or node == "napari_isfl":
                continue  # a package importing its own submodules runs them, not itself
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_core_imports_without_napari_or_qt() -> None:
    """Every core module imports with napari, Qt and magicgui made unimportable, and pulls none in; so do
    the plugin's reader, writer, sample data and layer API (napari loads inside their functions)."""
    core = [
        _module_name(p) for p in SOURCES if _layer(_module_name(p)) in CORE_LAYERS and p.name != "__main__.py"
    ]
    plugin_light = ["napari_isfl.plugin.layers", "napari_isfl.plugin.reader", "napari_isfl.plugin.writer"]
    code = (
        "import sys\n"
        f"for name in {list(GUI_MODULES)!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "import importlib\n"
        f"for module in {core + plugin_light + ['napari_isfl.plugin.sample_data']!r}:\n"
        "    importlib.import_module(module)\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {list(GUI_MODULES)!r} and sys.modules[m]]\n"
        "assert not loaded, loaded\n"
        "print(len(sys.modules))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_package_and_parser_load_no_torch() -> None:
    """``import napari_isfl`` and building the ``isfl`` parser (what --help, --version and usage errors
    cost) import neither torch nor MONAI."""
    code = (
        "import sys\n"
        "import napari_isfl\n"
        "from napari_isfl.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'napari', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]


#: modules whose ``>>>`` examples are run (numpy-level examples; the network's run on tiny inputs)
DOCTEST_MODULES = (
    "napari_isfl._lazy",
    "napari_isfl._optional",
    "napari_isfl.outputs",
    "napari_isfl.normalization",
    "napari_isfl.spatial",
    "napari_isfl.dicom",
    "napari_isfl.registration",
    "napari_isfl.metric_definitions",
    "napari_isfl.lesions",
    "napari_isfl.evaluation.metrics",
    "napari_isfl.evaluation.scores",
    "napari_isfl.evaluation.baselines",
    "napari_isfl.model.pyramid",
    "napari_isfl.training.config",
)


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (details above)"

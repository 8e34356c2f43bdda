"""The package reads as the pipeline, and lower layers never import higher ones."""
import ast
from pathlib import Path

import salrt

PACKAGE = Path(salrt.__file__).parent
# Lowest first. A module may import its own layer and those below it, never one above.
LAYERS = [
    {"errors", "_version", "_torch", "devices", "cuda_graphs"},
    {"models", "images"},
    {"graph", "ops"},
    {"formats"},
    {"artifact"},
    {"runtime"},
    {"render", "dataset", "explain", "evaluate", "bench", "server", "ray", "cli", "demo", "__init__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top_module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _salrt_imports(path: Path) -> set[str]:
    """The top-level salrt modules that ``path`` imports (relative or absolute)."""
    package_depth = len(path.relative_to(PACKAGE).parts) - 1
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(path.relative_to(PACKAGE).parts[:package_depth])[:package_depth - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
                found |= {parts[0]} if parts else {alias.name for alias in node.names}
            elif node.module and node.module.split(".")[0] == "salrt":
                parts = node.module.split(".")[1:]
                found |= {parts[0]} if parts else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("salrt.")}
    return found - {"_C"}


def test_every_module_is_placed_in_a_layer():
    modules = {_top_module(p) for p in PACKAGE.rglob("*.py")}
    assert modules <= set(LAYER_OF), sorted(modules - set(LAYER_OF))


def test_lower_layers_never_import_higher_ones():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = LAYER_OF[_top_module(path)]
        for imported in _salrt_imports(path):
            if LAYER_OF[imported] > here:
                violations.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not violations, violations

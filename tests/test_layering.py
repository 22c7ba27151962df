"""The layering of STYLE.md, checked on the source: imports point one way, private Keras API stays in graph/."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
NEUTRAL = {"keys", "results", "options", "interrupts", "paths", "registry"}  # plain data (and the signal checkpoint) every layer may use
# layer -> the layers it may import (besides itself and the neutral modules)
ALLOWED = {
    "graph": set(),
    "evaluation": set(),
    "data": set(),
    "figures": set(),
    "quantsim": {"graph", "evaluation"},
    "techniques": {"quantsim", "graph", "data"},
    "models": {"data"},
    "config": set(),
    "tracking": set(),
    "reporting": {"tracking", "evaluation", "figures"},
    "stages": {"techniques", "quantsim", "graph", "data", "models", "evaluation", "figures", "config"},
}
ENTRY = {"__main__", "app", "console", "sweep_callback", "launcher", "report", "runs", "weights", "__init__"}  # may import anything
NO_FRAMEWORKS = {"graph", "evaluation", "data", "quantsim", "techniques", "models"}  # a plain library: no hydra, no mlflow


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "workbench":
                found |= {f"workbench.{a.name}" for a in node.names}
    return found


def _modules():
    return [p for p in PACKAGE.rglob("*.py")]


def test_imports_point_one_way():
    wrong = []
    for path in _modules():
        layer = _layer(path)
        if layer in ENTRY or layer in NEUTRAL:
            continue
        for name in _imports(path):
            if not name.startswith("workbench."):
                continue
            target = name.split(".")[1]
            if target not in NEUTRAL and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_neutral_modules_import_only_each_other():
    for name in NEUTRAL:
        for imported in _imports(PACKAGE / f"{name}.py"):
            assert not imported.startswith("workbench.") or imported.split(".")[1] in NEUTRAL, (name, imported)


def test_library_layers_use_neither_hydra_nor_mlflow():
    for path in _modules():
        if _layer(path) in NO_FRAMEWORKS:
            bad = {n for n in _imports(path) if n.split(".")[0] in ("hydra", "mlflow", "omegaconf")}
            assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_private_keras_api_only_in_graph():
    for path in _modules():
        if _layer(path) != "graph":
            text = path.read_text()
            assert "_keras_history" not in text and "_nodes_by_depth" not in text, path.relative_to(PACKAGE)

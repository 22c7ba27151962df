"""The layering of STYLE.md, checked on the source: imports point one way, private Keras API stays in graph/."""

import ast
import re
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
ENTRY = {
    "__main__",
    "app",
    "console",
    "sweep_callback",
    "launcher",
    "threads",
    "report",
    "runs",
    "weights",
    "__init__",
}  # may import anything
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_anywhere_lazy_imports_included():
    modules = {_module_name(p): p for p in _modules()}
    graph = {}
    for name, path in modules.items():
        graph[name] = {i for i in _imports(path) if i in modules and i != name and i != "workbench"}
    cycles = []
    for start in graph:  # a path from a module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" → ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, "\n".join(sorted(set(cycles)))


TAG_HOLDERS = ("tags", "metrics")
SEARCHED_TAG = re.compile(r"tags\.`[^`]+`")  # a search filter naming a tag in the text itself


def _literal_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Tag, metric and param names written as literals: ``x.tags["name"]``, ``x.metrics.get("name")``,
    ``set_tag(run, "name", …)``, a dict key ``"mlflow.…"``, a search filter ``tags.`name```."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            holder = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
            if holder in TAG_HOLDERS:
                found.append((node.lineno, f"{holder}[{node.slice.value!r}]"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            holder = node.func.value.attr if isinstance(node.func.value, ast.Attribute) else getattr(node.func.value, "id", None)
            key = 0 if node.func.attr == "get" else 1  # get(name, default); set_tag(run_id, name, value)
            arg = node.args[key] if len(node.args) > key else None
            literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            if literal is not None and node.func.attr == "get" and holder in TAG_HOLDERS:
                found.append((node.lineno, f"{holder}.get({literal!r})"))
            elif literal is not None and node.func.attr in ("set_tag", "log_metric", "set_experiment_tag"):
                found.append((node.lineno, f"{node.func.attr}({literal!r})"))
        elif isinstance(node, ast.Dict):
            found += [(node.lineno, repr(k.value)) for k in node.keys if isinstance(k, ast.Constant) and str(k.value).startswith("mlflow.")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SEARCHED_TAG.search(node.value):
            found.append((node.lineno, repr(node.value)))  # also the text parts of an f-string
    return found


def test_tag_and_metric_names_are_written_only_in_keys():
    literals = [
        f"{path.relative_to(PACKAGE)}:{line}: {what}"
        for path in _modules()
        if path.name != "keys.py"
        for line, what in _literal_names(ast.parse(path.read_text()))
    ]
    assert not literals, "\n".join(literals)
    sample = ast.parse(
        'r.tags["stage"] = 1\nm.metrics.get("sim/top1")\nc.set_tag(i, "x", 1)\nt = {"mlflow.user": 1}\nq = f"tags.`s` = {v}"'
    )
    assert len(_literal_names(sample)) == 5  # the check sees each kind


def test_stages_do_not_borrow_from_sibling_stages():
    """Shared preparation is in stages/prepare.py, the TFLite check in stages/tflite_check.py."""
    from workbench import registry

    stage_modules = {record.run.split(":")[0] for record in registry.stages().values()}
    borrowed = [
        f"{name} imports {imported}"
        for name in stage_modules
        for imported in _imports(PACKAGE.parent / (name.replace(".", "/") + ".py"))
        if imported in stage_modules and imported != name
    ]
    assert not borrowed, "\n".join(borrowed)


# where the composed DictConfig may be seen: the entry points that compose or receive it, and the config layer
# that converts it (config.validate) and declares its types (config.schema)
DICTCONFIG_SEEN = {"__main__.py", "app.py", "sweep_callback.py", "launcher.py", "weights.py", "config/validate.py", "config/schema.py"}


def _annotations_naming(tree: ast.AST, name: str) -> list[str]:
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any(name in ast.unparse(a.annotation) for a in (*node.args.args, *node.args.kwonlyargs) if a.annotation is not None)
    ]


def test_no_dictconfig_below_app_run():
    """``app.run`` converts the composed config once (``config.validate``); below it only the typed config and plain data."""
    seen = [
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if str(path.relative_to(PACKAGE)) not in DICTCONFIG_SEEN and ("DictConfig" in path.read_text() or "omegaconf" in _imports(path))
    ]
    assert not seen, seen
    assert _annotations_naming(ast.parse((PACKAGE / "app.py").read_text()), "DictConfig") == ["resolved", "run", "run_and_id"]
    converters = [str(p.relative_to(PACKAGE)) for p in _modules() if "OmegaConf.to_object" in p.read_text()]
    assert converters == ["config/validate.py"], converters

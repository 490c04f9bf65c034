"""The package's shape: no import cycles, the trainer below everything that drives it, small modules."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rslad_tune"
# what a trial needs, and nothing that drives trials, reads sweep folders or talks to Ray/MLflow
ABOVE_TRAINER = {"teachers", "tuning", "tracking", "export", "evaluate", "compare", "report", "cli", "layout", "zoo",
                 "soft_labels", "plots"}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def import_map() -> dict[str, set[str]]:
    """module -> the package modules it imports (top-level and inside functions)."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name.rsplit(".", 1)[0] if path.name == "__init__.py" or "." in name else ""
        if path.name == "__init__.py":
            pkg = name if name != "__init__" else ""
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if pkg else []
                base = ".".join(p for p in base if p)
                target = ".".join(filter(None, [base, node.module or ""]))
                for alias in node.names:
                    full = f"{target}.{alias.name}" if target else alias.name
                    deps.add(full if full in mods else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rslad_tune"):
                deps.add(node.module.removeprefix("rslad_tune").lstrip(".") or "__init__")
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for d in graph[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_import_map_has_no_cycles():
    graph = import_map()
    cycles = sorted(m for m in graph if m != "__init__" and m in _reach(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_trainer_imports_nothing_above_it():
    graph = import_map()
    assert not (_reach(graph, "trainer") & ABOVE_TRAINER), _reach(graph, "trainer") & ABOVE_TRAINER
    assert not (_reach(graph, "robustness") - {"attacks", "progress", "models", "models.cnn", "models.resnet",
                                                "models.mobilenetv2", "models.wideresnet"})


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long

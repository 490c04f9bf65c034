"""The package's shape: two halves (trial/ runs one trial in plain PyTorch; teachers/ and sweep/ drive it), no
import cycles, small modules, teacher sources named only in their registry and adapters."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rslad_tune"
DRIVERS = ("ray", "mlflow", "optuna")


def _module(path: Path) -> str:
    parts = [p for p in path.relative_to(PKG).with_suffix("").parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(package modules, third-party top-level names) a file imports, at top level and inside functions."""
    name = _module(path)
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".") if pkg else []
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(filter(None, [*base, node.module or ""]))
            ours |= {f"{target}.{a.name}".strip(".") for a in node.names} | {target}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith("rslad_tune"):
                target = mod.removeprefix("rslad_tune").lstrip(".")
                ours |= {f"{target}.{a.name}".strip(".") for a in node.names} | {target}
            else:
                theirs.add(mod.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rslad_tune"):
                    ours.add(a.name.removeprefix("rslad_tune").lstrip("."))
                else:
                    theirs.add(a.name.split(".")[0])
    return ours, theirs


def import_map() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    return {name: {d for d in _imports(p)[0] if d in mods and d != name} for name, p in mods.items()}


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
    # a package's __init__ importing its own modules is not a cycle of concepts
    cycles = sorted(m for m in graph if m and m in _reach({k: {d for d in v if not k.startswith(d + ".")} for k, v in graph.items()}, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_trial_subpackage_imports_no_driver_and_nothing_above_it():
    for path in (PKG / "trial").rglob("*.py"):
        ours, theirs = _imports(path)
        assert not theirs & set(DRIVERS), (path.name, theirs & set(DRIVERS))
        above = {m for m in ours if m and not m.startswith("trial")}
        assert not above, f"{path.relative_to(PKG)} imports {above} from outside rslad_tune.trial"


def test_teachers_import_no_sweep_module():
    for path in (PKG / "teachers").rglob("*.py"):
        ours, theirs = _imports(path)
        assert not {m for m in ours if m.startswith("sweep")}, path.name
        assert not theirs & set(DRIVERS), path.name


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


SOURCE_NAMES = {"zoo", "train", "checkpoint", "robustbench"}
# the registry and the adapters (robustbench_loader.py is RobustBench's library wrapper behind its adapter)
SOURCE_HOMES = {"teachers/sources.py", "teachers/zoo.py", "teachers/train.py", "teachers/checkpoint.py",
                "teachers/robustbench.py", "teachers/robustbench_loader.py", "teachers/zoo_build.py"}
# the same words meaning something else: the CLI's verbs `train` and `zoo`, compare's row field `checkpoint` (best/last)
OTHER_MEANINGS = {"cli.py": {"train", "zoo"}, "sweep/compare.py": {"checkpoint"}}


def _dispatch_strings(tree: ast.AST) -> set[str]:
    """String constants used to choose: compared (==, in), subscripted, .get() / `in` keys, dict-literal keys."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found |= {n.value for n in [node.left, *node.comparators] if isinstance(n, ast.Constant)}
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            found.add(node.slice.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("get", "pop") and node.args \
                and isinstance(node.args[0], ast.Constant):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Dict):
            found |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    return {s for s in found if isinstance(s, str)}


def test_teacher_sources_are_named_only_in_their_registry_and_adapters():
    hits = {}
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        names = _dispatch_strings(ast.parse(path.read_text())) & SOURCE_NAMES - OTHER_MEANINGS.get(rel, set())
        if rel not in SOURCE_HOMES and names:
            hits[rel] = names
    assert not hits, hits


def test_the_schema_and_the_preflight_import_no_torch():
    """The YAML's schema, the preflight and a sweep folder's JSON schema import no torch (~630 MB): a bad input is
    refused by a small process. Registries name their implementations; torch comes with the first tensor."""
    import subprocess
    import sys

    child = ("import sys, rslad_tune.sweep.spec, rslad_tune.sweep.preflight, rslad_tune.trial.config, "
             "rslad_tune.trial.saved, rslad_tune.sweep.layout; print('torch' in sys.modules)")
    env = {**__import__("os").environ, "PYTHONPATH": str(PKG.parent)}
    out = subprocess.run([sys.executable, "-c", child], env=env, text=True, capture_output=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr

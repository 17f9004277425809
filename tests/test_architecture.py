"""The house's rules, checked on the code itself: small rooms, no import circle, inference apart from training."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "trainjob"
SCRIPTS = REPO / "scripts"
MAX_MODULE_LINES = 300  # a module longer than this does more than one job
MAX_FUNCTION_LINES = 60  # a function longer than this hides steps that want names
# Importing these must not load training: serving and scoring start lighter, and a reader sees the seam.
INFERENCE = ("trainjob.predict", "trainjob.evaluate", "trainjob.inference", "trainjob.batch", "trainjob.score",
             "trainjob.export", "trainjob.serve")
TRAINING = ("trainjob.recipes", "trainjob.engine", "trainjob.job", "trainjob.checkpoint", "trainjob.features",
            "trainjob.optim", "trainjob.augment", "trainjob.tracking", "trainjob.mlflow_log")


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_of_the_package_is_under_300_lines():
    long = {str(p.relative_to(REPO)): n for p in _sources(PACKAGE) if (n := len(p.read_text().splitlines()))
            >= MAX_MODULE_LINES}
    assert not long, f"split these modules by job: {long}"


def test_every_function_is_under_60_lines():
    long = []
    for path in _sources(REPO / "src", SCRIPTS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "give the steps of these functions names of their own: " + "; ".join(long)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of this tree it imports, at module level or inside functions alike.

    Under scripts/ each folder is also on the path of its own scripts (scripts/aml/submit.py does `import common`)."""
    modules = {_module_name(p, root): p for p in _sources(root)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = _module_name(path.parent / "__init__.py", root) if path.parent != root else ""

        def _resolve(target: str, here=here) -> str | None:
            return next((c for c in (target, f"{here}.{target}") if c in modules), None)

        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import submodule` needs the submodule; `from pkg import name`, the package itself
                wanted = [f"{node.module}.{alias.name}" if _resolve(f"{node.module}.{alias.name}") else node.module
                          for alias in node.names]
            else:
                continue
            for target in wanted:
                found = _resolve(target)
                if found and found != name:
                    graph[name].add(found)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("tree", ["src", "scripts"])
def test_no_import_circle(tree):
    graph = _import_graph(REPO / tree)
    assert sum(len(targets) for targets in graph.values()) > 20, "the graph builder found almost no imports"
    assert not _cycles(graph), f"import circles in {tree}/: {_cycles(graph)}"


def test_inference_loads_no_training_module(tmp_path):
    """Import the inference modules and score images end to end (predict's load_model and classify, a folder
    through batch scoring into a CSV, the scoring script's decoding, export's metadata), then look at what Python
    loaded."""
    probe = f"""
import sys, torch
from trainjob import evaluate, export, predict, score, serve
from trainjob.batch import inputs, labelled, predictions, stream
from trainjob.models import build_model
model = build_model("net", num_classes=2, image_size=32)
saved = {{"arch": "net", "arch_kwargs": {{"num_classes": 2, "image_size": 32}}, "state_dict": model.state_dict(),
         "normalization": {{"mean": [0.5] * 3, "std": [0.5] * 3}}, "classes": ["a", "b"], "image_size": 32}}
torch.save(saved, {str(tmp_path / "model.pt")!r})
loaded, saved = predict.load_model({str(tmp_path / "model.pt")!r})
print(predict.classify(loaded, saved, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 1))
export.metadata(saved)
from PIL import Image
Image.new("RGB", (40, 30)).save({str(tmp_path / "a.png")!r})
classifier = predict.Classifier({str(tmp_path / "model.pt")!r})
out = predictions.PredictionsFile({str(tmp_path / "p.csv")!r}, 1)
print(predict.predict(classifier, inputs.gather([{str(tmp_path)!r}]), out, 1, progress="off"))
print(sorted(m for m in sys.modules if m.startswith("trainjob")))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert "trainjob.predict" in loaded and "trainjob.preprocess" in loaded, loaded
    training = [m for m in loaded if m.startswith(TRAINING)]
    assert not training, f"inference loaded training modules: {training}"

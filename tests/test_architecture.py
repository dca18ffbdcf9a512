"""The shape of the code, checked: no import cycle anywhere, and the device side never imports the workstation.

The import graph is read from the source with ``ast`` and counts *every* import, including those inside
functions, so a cycle cannot be hidden by moving an import into a function body. Imports that a plug-in
registry performs by name (``Registry(plugins=...)``, entry points) are not edges: that is the point of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "converters")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its source)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            for t in targets:
                r = resolve(t)
                if r and r != mod:
                    edges[mod].add(r)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_project():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_device_side_never_imports_the_workstation_side_or_torch():
    bad = []
    for mod in (REPO / "edge_runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(mod.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{mod.relative_to(REPO)}: {n}" for n in names
                    if n.split(".")[0] in ("converters", "torch", "torchvision", "onnx", "onnxscript")]
    assert bad == [], "device-side imports of workstation packages: " + ", ".join(bad)


def test_the_conversion_pipeline_never_names_a_method():
    """A paper method is a folder plus registrations: ``converters/pipeline/`` neither imports a method nor
    mentions one by name (the demo's models are data, ``converters/recipes/demo/models.yaml``)."""
    methods = [p.name for p in (REPO / "converters" / "methods").iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()]
    edges = import_graph()
    bad = [f"{m} imports {t}" for m, targets in edges.items() if m.startswith("converters.pipeline")
           for t in targets if t.startswith("converters.methods")]
    for path in (REPO / "converters" / "pipeline").rglob("*.py"):
        text = path.read_text(encoding="utf-8").lower()
        bad += [f"{path.relative_to(REPO)} names {name!r}" for name in methods if name in text]
    assert methods and bad == [], "; ".join(bad)

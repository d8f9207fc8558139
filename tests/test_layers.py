"""The layer contract of docs/design.md: imports only point down, and only the faces know Hydra.

Every module of the package is read as source (its `import` statements anywhere in the file, lazy ones and
annotation-only ones included) and placed in a layer; an import of a module in a higher layer, an import cycle
between modules, or an import of hydra below the faces fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "listener_sub": ROOT / "listener_sub",
    "listener_sub.envs": ROOT / "envs",
    "listener_sub.adapters": ROOT / "adapters",
    "listener_sub.configs": ROOT / "configs",
}

# bottom to top; a module may import its own layer and the layers below it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("listener_sub.errors", "listener_sub.files", "listener_sub.draws", "listener_sub.distributed")),
    ("world", ("listener_sub.world",)),
    ("inputs", ("listener_sub.perception", "listener_sub.images", "listener_sub.data")),
    ("models", ("listener_sub.models", "listener_sub.adapters")),
    (
        "game core",
        (
            "listener_sub.game",
            "listener_sub.features",
            "listener_sub.rewards",
            "listener_sub.oracle",
            "listener_sub.evaluation",
            "listener_sub.metrics",
            "listener_sub.rerank",
        ),
    ),
    (
        "algorithms",
        ("listener_sub.rl", "listener_sub.pretrain", "listener_sub.optim", "listener_sub.runs", "listener_sub.study"),
    ),
    ("assembly", ("listener_sub.assembly", "listener_sub.cache", "listener_sub.spec")),
    (
        "faces",
        (
            "listener_sub.commands",
            "listener_sub.envs",
            "listener_sub.integrations",
            "listener_sub.report",
            "listener_sub.configs",
            "listener_sub.cli",
            "listener_sub.loading",
            "listener_sub.__main__",
            "listener_sub.preview",
            "listener_sub.bench",
            "listener_sub.web",
        ),
    ),
]
FACES = len(LAYERS) - 1
PUBLIC_API = "listener_sub"  # the package's __init__: lazy re-exports of every layer


def modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the package."""
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer; place it in LAYERS (and in docs/design.md)")
    return max(matches)[1]


def imports(path: Path, module: str) -> set[str]:
    """Every module named by an import statement of the file (absolute names; relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from package import module`
    return names


def own_imports(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    return {name for name in imports(path, module) if name in known and name != module}


def test_every_module_has_a_layer():
    for module in modules():
        if module != PUBLIC_API:
            layer_of(module)


@pytest.mark.parametrize("module", sorted(set(modules()) - {PUBLIC_API}))
def test_imports_point_down_and_only_faces_know_hydra(module):
    known = modules()
    path = known[module]
    mine = layer_of(module)
    upward = sorted(
        f"{name} ({LAYERS[layer_of(name)][0]})"
        for name in own_imports(path, module, known)
        if name != PUBLIC_API and layer_of(name) > mine
    )
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports upward: {', '.join(upward)}"
    if mine < FACES:
        hydra = sorted(name for name in imports(path, module) if name == "hydra" or name.startswith("hydra."))
        assert not hydra, f"{module} ({LAYERS[mine][0]}) imports {', '.join(hydra)}; only the faces know Hydra"
    assert PUBLIC_API not in imports(path, module) or module == PUBLIC_API, (
        f"{module} imports the package root; import the module it needs"
    )


def test_no_import_cycles():
    known = modules()
    graph = {m: own_imports(p, m, known) - {PUBLIC_API} for m, p in known.items() if m != PUBLIC_API}
    # a package's __init__ re-exporting its own submodules is no cycle: drop edges from a package to its children
    graph = {m: {n for n in targets if not n.startswith(m + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_contract_catches_an_upward_import(tmp_path):
    """The checker itself: a game-core file importing pretraining, or Hydra, is caught."""
    bad = tmp_path / "game.py"
    bad.write_text("from listener_sub.pretrain.listeners import ListenerRecipe\nimport hydra\n")
    names = imports(bad, "listener_sub.game")
    assert "listener_sub.pretrain.listeners" in names and "hydra" in names
    assert layer_of("listener_sub.pretrain.listeners") > layer_of("listener_sub.game")

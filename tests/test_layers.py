"""The package's layering as a contract: each folder is a layer and imports only the folders below it, so a
reader can tell where the store ends and the method begins; no import cycle; the launcher is imported only by
the command line; modules stay small enough to read in one sitting."""

import shutil
from pathlib import Path

import pytest

from percontrast_cli.store import code_scope

ROOT = code_scope.ROOT
# Highest first. A module may import its own folder (anything goes within a folder) and the folders after it.
LAYERS = ("cli", "steps", "reporting", "evaluation", "method", "data", "modeling", "store", "runtime")
# A module a reader can hold in one sitting. steps/ keeps its own, tighter limit (each a short recipe);
# cli/main.py is exempt because it keeps all of Hydra's argv handling (flags, sweeps, failures) in one place.
MAX_LINES = 450
MAX_STEP_LINES = 250
EXEMPT_FROM_MAX = {"cli/main.py"}


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def modules(root: Path = ROOT) -> list[str]:
    return [
        ".".join(path.relative_to(root).with_suffix("").parts)
        for path in sorted(root.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and path.parent.name != "conf"
    ]


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    return {m: code_scope.imported_modules(m) for m in modules(root)}


def upward_imports(root: Path = ROOT) -> list[str]:
    return [f"{m} -> {dep}" for m, deps in graph(root).items() for dep in deps if layer_of(dep) < layer_of(m)]


def test_the_package_root_holds_only_the_layer_folders():
    entries = {p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
    assert entries == {"__init__.py", "conf", *LAYERS}


def test_every_module_lives_in_a_layer_folder():
    assert all(m.split(".")[0] in LAYERS for m in modules())


def test_imports_flow_down_the_layers():
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path, monkeypatch):
    copy = tmp_path / "percontrast_cli"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # a store module reaching up into the method layer, lazily inside a function
    (copy / "store" / "upward.py").write_text(
        "def f():\n    from percontrast_cli.method.losses import token_nll\n    return token_nll\n"
    )
    monkeypatch.setattr(code_scope, "ROOT", copy)
    assert upward_imports(copy) == ["store.upward -> method.losses"]


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in edges.get(node, ()):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_launcher_is_imported_only_by_the_command_line():
    importers = {m for m, deps in graph().items() if "cli.worker" in deps}
    assert importers <= {"cli.main"}


@pytest.mark.parametrize("folder", LAYERS)
def test_modules_are_short(folder):
    limit = MAX_STEP_LINES if folder == "steps" else MAX_LINES
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / folder).glob("*.py")
        if str(p.relative_to(ROOT)) not in EXEMPT_FROM_MAX and (n := len(p.read_text().splitlines())) > limit
    }
    assert long == {}


def test_the_graph_sees_lazy_imports():
    # stages imports steps at module level; the scoring step imports the heatmap inside a function
    assert "reporting.heatmap" in code_scope.imported_modules("steps.scoring")
    assert Path(ROOT / "steps" / "scoring.py").is_file()

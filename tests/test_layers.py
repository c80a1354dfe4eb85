"""The package's layering as a contract: imports flow one way (cli -> stages -> steps ->
method/data/modeling -> store), with no cycle and no launcher imported from below."""

from pathlib import Path

from percontrast_cli import identity
from percontrast_cli.data import encode
from percontrast_cli.losses import IGNORE

ROOT = identity.ROOT
# Lower numbers are lower layers; a module may import its own layer or lower ones only.
LAYERS = {
    "store": 0,  # artifacts, identity, errors, fingerprint, distributed, progress, tracking
    "method": 1,  # data/*, modeling/*, losses, contrast, train, estimate, evaluate, metrics, report, ...
    "steps": 2,
    "stages": 3,
    "cli": 4,
}
STORE = {
    "artifacts",
    "identity",
    "integrity",  # content hashes of payload files
    "interrupts",  # Ctrl-C / SIGTERM as one line
    "errors",
    "fingerprint",
    "distributed",
    "progress",
    "tracking",
}


def layer_of(module: str) -> int:
    if module in ("cli", "worker"):
        return LAYERS["cli"]
    if module == "stages":
        return LAYERS["stages"]
    if module.startswith("steps."):
        return LAYERS["steps"]
    if module in STORE:
        return LAYERS["store"]
    return LAYERS["method"]


def modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


def graph() -> dict[str, set[str]]:
    return {m: identity.imported_modules(m) for m in modules()}


def test_imports_flow_one_way():
    upward = [f"{m} -> {dep}" for m, deps in graph().items() for dep in deps if layer_of(dep) > layer_of(m)]
    assert upward == []


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


def test_the_launcher_is_imported_only_by_the_cli():
    importers = {m for m, deps in graph().items() if "worker" in deps}
    assert importers <= {"cli"}


def test_no_module_is_over_250_lines_in_the_steps():
    long = {p.name: n for p in (ROOT / "steps").glob("*.py") if (n := len(p.read_text().splitlines())) > 250}
    assert long == {}


def test_the_ignore_label_is_one_value():
    assert IGNORE == encode.IGNORE == -100


def test_the_graph_sees_lazy_imports():
    # stages imports steps at module level; the scoring step imports the heatmap inside a function
    assert "heatmap" in identity.imported_modules("steps.scoring")
    assert Path(ROOT / "steps" / "scoring.py").is_file()

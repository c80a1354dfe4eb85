"""The ``code`` part of an artifact's id: a hash of the modules its computation can run.

A kind's computation starts at its entry modules (per model source and task: a dialogue eval starts in
``steps.dialogue``, every other eval in ``steps.evaluation``) and follows their imports, as syntax trees
without docstrings (a comment or docstring edit changes nothing). Three things keep an unrelated edit from
re-keying an artifact (a 4B model retrained for a change it cannot run):

- modules that only display, log, launch or keep the store (``NEVER_KEYS``) are never followed;
- imports under ``if TYPE_CHECKING:`` are annotations, never run: not followed;
- modules that run only under some settings (``modeling.tiny`` builds the tiny model; the judge runs only
  for judged evals) are left out where the settings say they do not run (identity.skipped_modules).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "percontrast_cli"
KINDS = ("model", "checkpoint", "estimate", "reference", "eval")

# Where each kind's computation starts; the modules they import (transitively) count too.
ENTRY_MODULES = {
    "model": ("steps.models",),
    "checkpoint": ("steps.training",),
    "estimate": ("steps.scoring",),
    "reference": ("steps.scoring",),
    "eval": ("steps.evaluation",),
}
# task=aloe evaluates in a multi-turn dialogue instead (an `eval` artifact too).
DIALOGUE_ENTRY = ("steps.dialogue",)
# Modules that cannot change a payload: presentation, logging, launching, the store itself, and the data
# sources and generators (their output is fingerprinted as the `data` input instead).
NEVER_KEYS = frozenset(
    {
        "cli.main",
        "cli.stages",
        "cli.worker",
        "reporting.report",
        "reporting.heatmap",
        "runtime.progress",
        "method.training_progress",  # the training run's progress bar and lines
        "method.curve",  # eval.at_steps: times the steps, publishes the points (each keyed by its step)
        "cli.tracking",
        "runtime.errors",
        "store.artifacts",
        "store.identity",
        "store.code_scope",
        "store.fingerprint",
        "store.integrity",  # payload checks and content hashes (the hashes are inputs, fingerprinted)
        "cli.validation",
        "steps.diagnostics",  # warnings and refusals about degenerate runs: they stop a run, never change it
        "steps.produce",  # find-or-compute bookkeeping
        "steps.costs",  # what a stage cost (time, memory): recorded beside the payload, never in it
        "store.calibration",
        "steps.inherit",  # which settings a consumer takes from its input's manifest
        "data.sources",
        "data.synthetic",
        "data.personas",
        "data.bounds",  # the cap on texts: what it leaves is the fingerprinted data
    }
)

ROOT = Path(__file__).parent.parent  # the package root: module names are relative to it


def module_path(name: str) -> Path | None:
    """The file of the package's module `name` (e.g. ``data.encode``); None for packages and non-modules."""
    path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): its body runs only under a type checker."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, with_type_only: bool):
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if not with_type_only and _type_checking_only(node):
            todo.extend(node.orelse)  # the body is for type checkers; an `else:` branch runs
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, with_type_only: bool = True) -> set[str]:
    """The package's own modules that module `name` imports, anywhere in its body (lazy imports too);
    ``with_type_only=False`` leaves out the imports under ``if TYPE_CHECKING:``, which never run."""
    tree = ast.parse(module_path(name).read_text())
    found = set()
    for node in _import_nodes(tree, with_type_only):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.module and node.level == 0:
            # `from percontrast_cli import report` imports a module; `from percontrast_cli.x import y`, x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for full in names:
            short = full.removeprefix(f"{PACKAGE}.")
            if full.startswith(f"{PACKAGE}.") and module_path(short) is not None:
                found.add(short)
    return found


def code_modules(kind: str, entries: tuple[str, ...] | None = None, skipped=frozenset()) -> list[str]:
    """The modules whose code can change an artifact of `kind`: its entry modules and what they run,
    without the never-keying modules and the ``skipped`` ones (not run under this artifact's settings)."""
    seen: set[str] = set()
    todo = list(entries or ENTRY_MODULES[kind])
    while todo:
        name = todo.pop()
        if name in seen or name in NEVER_KEYS or name in skipped:
            continue
        seen.add(name)
        todo.extend(imported_modules(name, with_type_only=False))
    return sorted(seen)


def stripped_source(path: Path) -> str:
    """A module's syntax tree without docstrings: comments, docstrings and layout do not count."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.cache
def code_hash(kind: str, entries: tuple[str, ...] | None = None, skipped=frozenset()) -> str:
    digest = hashlib.sha256()
    for name in code_modules(kind, entries, skipped):
        digest.update(name.encode() + b"\0" + stripped_source(module_path(name)).encode() + b"\0")
    return digest.hexdigest()[:12]


@functools.cache
def package_code_hash() -> str:
    """Every module any kind can run (for `percontrast --version`): what any kind's code hash depends on."""
    digest = hashlib.sha256()
    for kind in KINDS:
        digest.update(code_hash(kind).encode())
    digest.update(code_hash("eval", DIALOGUE_ENTRY).encode())
    return digest.hexdigest()[:12]

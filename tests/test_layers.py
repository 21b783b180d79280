"""Imports run down the layers only (ARCHITECTURE.md, "Layers"): no module of the source tree imports a package of
a higher layer, lazy imports inside functions included. Checked with ``ast`` on the source of every module of the
folders ``pyproject.toml`` maps into the ``pointgeo`` namespace, so nothing is imported to check it."""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LAYERS = ["geometry", "download", "registry", "nn", "metrics", "tasks", "datamodules", "hub", "calculators",
          "testing", "robustness", "viz", "generation", "lightning_cli", "cli", "apps"]
"""The layers, lowest first; layer ``x`` is the package or module ``pointgeo.x``. A module may import its own
layer and the layers before it."""
BASE = {"pointgeo", "pointgeo.configs", "pointgeo.assets"}
"""Below every layer: the top package (``__version__``, :func:`pointgeo.enable_cpu_huge_pages`) and the resource
packages. Every module may import them; they import nothing of pointgeo."""
ENTRY_POINTS = {"pointgeo.__main__": "cli"}
"""Modules outside the layer packages and the layer they belong to."""
APART = {("viz", "robustness")}
"""Layers that must not import the one named after them although it is lower: the viewer shows one model's
predictions and needs none of the report code (what both need lives lower, e.g. ``pointgeo.datamodules.settings``)."""
ALLOWED_LAZY = {
    # create_model("name") finds the built-in networks without its caller importing pointgeo.nn: on the first
    # lookup the registry imports the package whose modules register them (the timm pattern). The registry uses
    # nothing of pointgeo.nn, and at module level it imports nothing above itself.
    ("pointgeo.registry", "pointgeo.nn"),
}
"""Upward imports allowed inside a function only (never at module level), each with its reason."""


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it is and whether it runs inside a function."""

    module: str
    target: str
    line: int
    lazy: bool


def source_modules() -> dict[str, Path]:
    """Dotted name → file of every module in the folders ``pyproject.toml`` maps into the ``pointgeo`` namespace."""
    folders = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in folders.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imports_in(module: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """The pointgeo modules ``source`` (the module ``module``) imports; ``from p import name`` counts as an import
    of ``p.name`` when that is a module in ``known``."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")[: len(module.split(".")) - child.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    found.append(Import(module, name if name in known else base, child.lineno, lazy))
            visit(child, inside)

    visit(ast.parse(source), False)
    return [i for i in found if i.target == "pointgeo" or i.target.startswith("pointgeo.")]


def layer_of(module: str) -> int | None:
    """The position of ``module``'s layer in :data:`LAYERS` (-1 for :data:`BASE`; ``None``: no layer)."""
    if module in BASE:
        return -1
    if module in ENTRY_POINTS:
        return LAYERS.index(ENTRY_POINTS[module])
    for i, layer in enumerate(LAYERS):
        if module == f"pointgeo.{layer}" or module.startswith(f"pointgeo.{layer}."):
            return i
    return None


def upward_imports(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import in ``sources`` (module → its source and whether it is a package) of a higher layer than the
    importing module's (or of no layer), less the :data:`ALLOWED_LAZY` ones made inside a function."""
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        own = layer_of(module)
        if own is None:
            continue  # test_every_module_has_a_layer names it
        for imp in imports_in(module, source, is_package, set(sources)):
            target = layer_of(imp.target)
            apart = target is not None and own >= 0 and target >= 0 and (LAYERS[own], LAYERS[target]) in APART
            if target is not None and target <= own and not apart:
                continue
            if imp.lazy and (module, imp.target) in ALLOWED_LAZY:
                continue
            where = "inside a function" if imp.lazy else "at module level"
            names = ["(no layer)" if n is None else "(base)" if n < 0 else LAYERS[n] for n in (own, target)]
            arrow = "-> (kept apart)" if apart else "->"
            problems.append(f"{module}:{imp.line} imports {imp.target} {where}: {names[0]} {arrow} {names[1]}")
    return problems


@functools.cache
def read_sources() -> dict[str, tuple[str, bool]]:
    """Module → its source and whether it is a package, for every module of the source tree."""
    return {module: (path.read_text(), path.name == "__init__.py") for module, path in source_modules().items()}


@functools.cache
def all_upward_imports() -> list[str]:
    """:func:`upward_imports` of the source tree."""
    return upward_imports(read_sources())


def test_every_module_has_a_layer() -> None:
    modules = source_modules()
    assert len(modules) > 50
    assert [m for m in modules if layer_of(m) is None] == []


@pytest.mark.parametrize("package", [f"pointgeo.{layer}" for layer in LAYERS] + sorted(BASE | set(ENTRY_POINTS)))
def test_no_import_runs_up_the_layers(package: str) -> None:
    """One case per layer (and per base or entry-point module), so that a failure names the layer at fault."""
    sources = read_sources()
    problems = all_upward_imports()
    whole = package not in {"pointgeo", *ENTRY_POINTS}  # the top package and entry points: that module alone
    ours = {m for m in sources if m == package or whole and m.startswith(package + ".") and m not in ENTRY_POINTS}
    assert ours, f"no module of {package}"
    assert [p for p in problems if p.split(":")[0] in ours] == []


def test_each_allowed_lazy_import_is_still_made() -> None:
    """An allow-list entry that no longer matches a lazy import is stale and must go."""
    sources = read_sources()
    made = {(i.module, i.target) for m, (s, p) in sources.items() for i in imports_in(m, s, p, set(sources))
            if i.lazy}
    assert ALLOWED_LAZY <= made


def test_the_checker_catches_upward_imports() -> None:
    """Synthetic modules: every form of an upward import is reported (module level, inside a function, relative,
    ``from pointgeo import package``, from the base), and downward or same-layer imports are not."""
    sources = {
        "pointgeo.geometry.fake": ("from pointgeo.nn.linear_bn import LinearBN\nfrom . import frames\n", False),
        "pointgeo.geometry.frames": ("def f():\n    import pointgeo.tasks.base\n", False),
        "pointgeo.nn.fake": ("from ..metrics import part_iou\nfrom pointgeo.geometry import knn\n", False),
        "pointgeo.metrics.part_iou": ("", False),
        "pointgeo.nn.linear_bn": ("from pointgeo import viz\nfrom pointgeo import __version__\n", False),
        "pointgeo.viz": ("from pointgeo.lightning_cli import PointGeoCLI\n", True),
        "pointgeo.viz.viewer": ("def load():\n    from pointgeo.robustness.report import build\n"
                                "    from pointgeo.hub import fetch\n", False),
        "pointgeo.robustness.report": ("from pointgeo.testing import measure\n", False),
        "pointgeo.tasks.base": ("", False),
        "pointgeo.lightning_cli": ("", False),
        "pointgeo": ("from pointgeo.geometry import knn\n", True),
        "pointgeo.cli": ("from pointgeo.hub import fetch\nimport pointgeo.apps.view\n", False),
        "pointgeo.apps.view": ("from pointgeo.cli import main\n", False),
        "pointgeo.registry": ("import pointgeo.nn\n", False),  # allowed lazily only
    }
    problems = upward_imports(sources)
    expected = [
        "pointgeo.cli:2 imports pointgeo.apps.view at module level: cli -> apps",
        "pointgeo.geometry.fake:1 imports pointgeo.nn.linear_bn at module level: geometry -> nn",
        "pointgeo.geometry.frames:2 imports pointgeo.tasks.base inside a function: geometry -> tasks",
        "pointgeo.nn.fake:1 imports pointgeo.metrics.part_iou at module level: nn -> metrics",
        "pointgeo.nn.linear_bn:1 imports pointgeo.viz at module level: nn -> viz",
        "pointgeo.registry:1 imports pointgeo.nn at module level: registry -> nn",
        "pointgeo.viz:1 imports pointgeo.lightning_cli at module level: viz -> lightning_cli",
        "pointgeo.viz.viewer:2 imports pointgeo.robustness.report inside a function: viz -> (kept apart) robustness",
        "pointgeo:1 imports pointgeo.geometry at module level: (base) -> geometry",
    ]
    assert sorted(problems) == sorted(expected)


def test_architecture_states_the_same_layer_order() -> None:
    """The layer table of ARCHITECTURE.md lists exactly these layers, in this order."""
    text = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `pointgeo\.(\w+)`", table, flags=re.MULTILINE)
    assert rows == LAYERS

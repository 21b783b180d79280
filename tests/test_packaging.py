"""Every Python package of the source tree is declared in pyproject.toml, so `pip install .` ships it."""

from __future__ import annotations

import tomllib

from conftest import REPO_ROOT


def test_every_package_is_listed() -> None:
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    for init in REPO_ROOT.glob("**/__init__.py"):
        rel = init.parent.relative_to(REPO_ROOT)
        if rel.parts[0] in {".venv", "tests", "benchmarks", "build"}:
            continue
        top = dirs.get(rel.parts[0])
        assert top is not None, f"{rel} is a package outside the mapped folders"
        found.add(".".join([top, *rel.parts[1:]]))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"

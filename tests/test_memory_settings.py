"""``import pointgeo`` changes nothing in the importing process; the ``pointgeo`` command and the benchmarks opt in
to transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``) before torch starts, and a user's own setting wins.

Each case runs in a fresh interpreter: torch reads the setting once, when it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pointgeo import HUGE_PAGES_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, **env: str) -> list[str]:
    """The printed lines of ``code`` run in a fresh interpreter, without the huge-page variable unless given."""
    environment = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_VARIABLE} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                         cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_pointgeo_leaves_the_environment_unchanged() -> None:
    """Neither ``import pointgeo`` (before torch) nor the command's module changes any environment variable."""
    code = ("import os\nbefore = dict(os.environ)\nimport pointgeo\nimport pointgeo.cli\n"
            "print(dict(os.environ) == before, 'THP_MEM_ALLOC_ENABLE' in os.environ)")
    assert run_python(code) == ["True", "False"]


@pytest.mark.parametrize("entry", ["console script", "python -m pointgeo"])
def test_the_command_opts_in_before_torch_starts(entry: str) -> None:
    """``pointgeo`` (its ``main``, and ``python -m pointgeo``) sets the variable before anything imports torch."""
    if entry == "console script":
        run = "from pointgeo.cli import main\nmain(['--help'])"
    else:
        run = "import runpy\nsys.argv = ['pointgeo', '--help']\nrunpy.run_module('pointgeo', run_name='__main__')"
    code = f"import os, sys\n{run}\nprint(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)"
    assert run_python(code)[-2:] == ["1", "False"]


def test_the_benchmarks_opt_in_before_torch_starts() -> None:
    """``benchmarks/common.py``, which every benchmark imports first, opts in before it imports torch."""
    code = ("import os, sys\nsys.path.insert(0, 'benchmarks')\nimport common\n"
            "print(common.HUGE_PAGES, os.environ.get('THP_MEM_ALLOC_ENABLE'), common.device_name('cpu'))")
    assert run_python(code)[:2] == ["True", "1"]


def test_a_users_setting_wins_and_a_late_call_changes_nothing() -> None:
    """``THP_MEM_ALLOC_ENABLE=0`` opts out of the command's setting; after torch is imported the opt-in leaves the
    environment alone (torch has read it) and says huge pages are off."""
    opted_out = "import os\nfrom pointgeo.cli import main\nmain(['--help'])\nprint(os.environ['THP_MEM_ALLOC_ENABLE'])"
    assert run_python(opted_out, THP_MEM_ALLOC_ENABLE="0")[-1] == "0"
    late = ("import os\nimport torch\nimport pointgeo\n"
            "print(pointgeo.enable_cpu_huge_pages(), 'THP_MEM_ALLOC_ENABLE' in os.environ)")
    assert run_python(late) == ["False", "False"]

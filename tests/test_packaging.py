"""The wheel users install holds what an installed package needs: the bundled search spaces."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_search_spaces_where_the_package_looks_for_them(tmp_path):
    # a clean copy of the sources (a build/ folder left in the checkout would be packed as it is);
    # --no-build-isolation: build with the installed setuptools, offline
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs", "mlruns", "*.db"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
                   check=True, cwd=tmp_path, timeout=300)
    (wheel,) = tmp_path.glob("senn_automl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert bundled and {f"search_spaces/{n}" for n in bundled} <= names
    # SEARCH_SPACES_DIR is <site-packages>/search_spaces in an installed wheel: next to the package
    assert "senn_automl/search_space.py" in names
    assert not any(n.startswith("mlflow/") for n in names)  # never shadow the real mlflow package

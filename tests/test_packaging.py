"""The wheel users install holds what an installed package needs: every module and the bundled search spaces."""

from __future__ import annotations

import json
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
    # every module of every subpackage (layers are subpackages; a missing __init__.py drops one)
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "senn_automl").rglob("*.py") if "__pycache__" not in p.parts}
    assert "senn_automl/integrations/tune/search_space.py" in modules and modules <= names, sorted(modules - names)
    assert not any(n.startswith("mlflow/") for n in names)  # never shadow the real mlflow package
    # installed from the wheel (not editable), the package finds its search spaces
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    probe = ("import json, senn_automl.integrations.tune.search_space as s; "
             "print(json.dumps([str(s.SEARCH_SPACES_DIR.parent), s.bundled_search_spaces()]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120).stdout
    where, found = json.loads(out)
    assert Path(where) == site and found == [Path(n).stem for n in bundled]

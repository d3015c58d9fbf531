"""The wheel users install holds what an installed package needs (every module, the bundled search
spaces), and the main commands run from it: built from a clean copy of the sources, installed
non-editable into a fresh virtual environment, run from an empty folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # a clean copy of the sources (a build/ folder left in the checkout would be packed as it is);
    # --no-build-isolation: build with the installed setuptools, offline
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs", "mlruns", "*.db"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)],
                   check=True, cwd=tmp, timeout=300)
    (whl,) = tmp.glob("senn_automl-*.whl")
    return whl


def test_wheel_ships_the_search_spaces_where_the_package_looks_for_them(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert bundled and {f"senn_automl/search_spaces/{n}" for n in bundled} <= names
    assert not any(n.startswith("search_spaces/") for n in names)  # inside the package, not a top-level name
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
    assert Path(where) == site / "senn_automl" and found == [Path(n).stem for n in bundled]


def test_fit_and_tune_run_from_a_fresh_venv_with_the_wheel(wheel, tmp_path):
    """`pip install <wheel>` (not editable) in a new virtual environment, then `senn-automl fit` and
    `senn-automl tune --num-samples 2` from an empty folder; the dependencies come from this
    interpreter's site-packages (offline), the package only from the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:/usr/bin:/bin", OMP_NUM_THREADS="1")
    where = subprocess.run([str(py), "-c", "import senn_automl; print(senn_automl.__file__)"], capture_output=True, text=True,
                           check=True, cwd=work, env=env, timeout=120).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not this checkout

    fit = subprocess.run([str(venv / "bin" / "senn-automl"), "fit", "--epochs", "3", "--quiet"], capture_output=True,
                         text=True, cwd=work, env=env, timeout=300)
    assert fit.returncode == 0, fit.stdout[-2000:] + fit.stderr[-3000:]
    summary = json.loads((work / "runs" / "fit" / "summary.json").read_text())
    assert summary["epochs"] == 3 and 0.0 < summary["test_accuracy"] <= 1.0
    assert (work / "runs" / "fit" / "growth.png").stat().st_size > 0

    tune = subprocess.run([str(venv / "bin" / "senn-automl"), "tune", "--num-samples", "2", "--max-concurrent", "1",
                           "--set", "max_epochs=3"], capture_output=True, text=True, cwd=work, env=env, timeout=500)
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    assert "champion test accuracy: " in tune.stdout, tune.stdout[-3000:]
    assert "Traceback" not in tune.stdout + tune.stderr
    assert (work / "mlflow.db").is_file() and (work / "runs" / "tune" / "leaderboard.csv").is_file()

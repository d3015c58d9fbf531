"""What every benchmark in ``bench/`` shares: the machine record, a results folder, one table.

Each benchmark prints a table, then writes ``<name>.csv`` (one row per measurement),
``<name>.json`` (rows plus the machine and the command line) and its PNG into ``--out``
(default ``bench/results/``). Timings are wall-clock seconds from ``time.perf_counter``.
pandas (installed with the ``tune`` extra) prints and writes the tables.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named device."""
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def machine(device: torch.device | str | None = None) -> dict[str, Any]:
    """The facts a reader needs to compare timings: CPU, cores, threads, GPU, library versions."""
    device = torch.device(device or "cpu")
    info = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def code_version() -> dict[str, Any]:
    """The code a run imported: git commit of the checkout, tracked files modified in it, and a
    SHA-1 of the ``senn_automl`` sources (compare it at the end of a long run to catch edits)."""
    import hashlib
    import subprocess

    import senn_automl

    pkg = Path(senn_automl.__file__).resolve().parent
    digest = hashlib.sha1()
    for f in sorted(pkg.rglob("*.py")):
        digest.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], check=False, cwd=pkg, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    modified = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no", "..").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "modified": modified,
            "senn_automl_sha1": digest.hexdigest()}


def add_common_args(ap, *, out: bool = True) -> None:
    """``--threads``, ``--device`` and ``--out`` for an ``argparse`` parser."""
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: comparable on a shared box)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    if out:
        ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the CSV, JSON and PNG")


def setup(args) -> torch.device:
    """Apply ``--threads`` and resolve ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def report(name: str, rows: list[dict[str, Any]], out: Path, *, device=None, extra: dict[str, Any] | None = None,
           columns: list[str] | None = None) -> Path:
    """Print ``rows`` as a table and write ``out/name.csv`` and ``out/name.json``; returns the JSON path."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    shown = df[columns] if columns else df
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(shown.to_string(index=False))
    df.to_csv(out / f"{name}.csv", index=False)
    record = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "machine": machine(device),
              **(extra or {}), "rows": rows}
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out / (name + '.csv')}, {path}")
    return path

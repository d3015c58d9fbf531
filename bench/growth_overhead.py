"""Growth overhead: a growing run against a fixed network of its final architecture.

Both runs use the same data, split, epochs (no early stopping), optimiser and seed; the fixed
network is built from the grown model's spec with fresh weights and the "fixed" policy.
Prints the wall-time ratio (target <= 1.3), the share of the growing run spent in growth
checks, and writes a JSON record to bench/results/.

    python bench/growth_overhead.py --dataset mnist --epochs 40 [--set tau=0.005 ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from senn_automl import config
from senn_automl.cli import parse_overrides
from senn_automl.data import load_dataset
from senn_automl.modules import GrowingMLP
from senn_automl.policies import FixedPolicy
from senn_automl.trainer import Trainer


def run(dataset: str, epochs: int, seed: int, overrides: dict) -> dict:
    ds = load_dataset(dataset, seed=seed)
    conf = config.resolve(overrides, max_epochs=epochs, patience=None, restore_best=False, seed=seed)
    model, policy, train = config.build(conf, ds.n_features, ds.n_classes)
    t0 = time.perf_counter()
    grown = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    t_grow = time.perf_counter() - t0

    torch.manual_seed(seed)
    fixed_model = GrowingMLP.from_spec(grown.model.spec())
    t0 = time.perf_counter()
    fixed = Trainer(fixed_model, FixedPolicy(), train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    t_fixed = time.perf_counter() - t0

    Xt, yt = torch.as_tensor(ds.X_test), torch.as_tensor(ds.y_test)
    return {
        "dataset": ds.name,
        "epochs": epochs,
        "final_hidden": grown.model.hidden,
        "n_params": grown.model.n_params(),
        "growth_events": len(grown.growth_log),
        "seconds_growing": round(t_grow, 2),
        "seconds_fixed": round(t_fixed, 2),
        "ratio": round(t_grow / t_fixed, 3),
        "growth_check_seconds": round(grown.timings["growth"], 2),
        "growth_check_share": round(grown.timings["growth"] / t_grow, 3),
        "test_acc_growing": round(grown.evaluate(Xt.to(grown.device), yt.to(grown.device))[1], 4),
        "test_acc_fixed": round(fixed.evaluate(Xt.to(fixed.device), yt.to(fixed.device))[1], 4),
        "device": str(grown.device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "config": {k: conf[k] for k in overrides},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="set_", action="append", default=[], help="KEY=VALUE config override")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = run(args.dataset, args.epochs, args.seed, parse_overrides(args.set_))
    print(
        f"{rec['dataset']}: {rec['epochs']} epochs on {rec['device']} ({rec['torch_threads']} threads)\n"
        f"  growing run : {rec['seconds_growing']:8.2f} s  -> hidden {rec['final_hidden']}, {rec['n_params']} params,"
        f" {rec['growth_events']} events, test acc {rec['test_acc_growing']}\n"
        f"  fixed final : {rec['seconds_fixed']:8.2f} s  test acc {rec['test_acc_fixed']}\n"
        f"  wall-time ratio growing/fixed = {rec['ratio']:.3f}   (target <= 1.3)\n"
        f"  time in growth checks = {rec['growth_check_seconds']:.2f} s = {100 * rec['growth_check_share']:.1f} % of the growing run"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"growth_overhead_{rec['dataset']}.json"
    path.write_text(json.dumps(rec, indent=1))
    print(f"  wrote {path}")


if __name__ == "__main__":
    main()

"""CNN throughput: a GrowingCNN grown by the SECNN policy against a fixed CNN of its final architecture.

Both runs train with :class:`senn_automl.training.trainer.Trainer` (Adam, same data, epochs, batch and seed;
no early stopping) on synthetic CIFAR-shaped data (3x32x32, 10 classes: a smooth random template
per class plus noise, so there is something to learn). The fixed network is built with
``GrowingCNN.from_spec`` from the grown model's final spec (fresh weights, "fixed" policy).
With ``--bf16`` the training steps run under bfloat16 autocast (``TrainConfig.precision``); growth
scoring and the edits' exactness check stay float32. Prints images/second of both runs (training images over the wall time of ``fit``, which includes
growth checks and the per-epoch validation pass, and over the training loop alone), the share of the
growing run spent in growth checks, and the device.

    python bench/cnn_throughput.py                       # CPU default, well under 2 minutes
    python bench/cnn_throughput.py --device cuda --steps 100 --epochs 6 [--bf16]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from senn_automl.growth.fixed import FixedPolicy
from senn_automl.growth.secnn import SECNNPolicy
from senn_automl.models.cnn import GrowingCNN
from senn_automl.training.trainer import TrainConfig, Trainer, resolve_device


def synthetic_cifar(n: int, seed: int, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, 32, 32) float32 and labels (n,): per-class smooth template + N(0, 1) noise."""
    g = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.randn(classes, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear", align_corners=False)
    y = torch.randint(0, classes, (n,), generator=g)
    X = templates[y] + torch.randn(n, 3, 32, 32, generator=g)
    return X, y


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run(args) -> dict:
    device = resolve_device(args.device)
    n_train = args.steps * args.batch
    X, y = synthetic_cifar(n_train + args.val, seed=args.seed)
    Xtr, ytr, Xva, yva = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    cfg = TrainConfig(
        max_epochs=args.epochs, batch_size=args.batch, lr=2e-3, seed=args.seed, device=str(device), patience=None,
        restore_best=False, precision="bf16" if args.bf16 else "fp32",
    )

    def fit(model, policy):
        # warm-up on a throwaway copy (kernel selection, allocator)
        Trainer(copy.deepcopy(model), FixedPolicy(), cfg).fit(Xtr[: 2 * args.batch], ytr[: 2 * args.batch], Xva, yva, epochs=1)
        trainer = Trainer(model, policy, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit(Xtr, ytr, Xva, yva)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return trainer, time.perf_counter() - t0

    torch.manual_seed(args.seed)
    model = GrowingCNN((3, 32, 32), 10)
    start = model.hidden
    policy = SECNNPolicy(tau=args.tau, min_gap=args.min_gap)
    grown, t_grow = fit(model, policy)

    torch.manual_seed(args.seed)
    fixed, t_fixed = fit(GrowingCNN.from_spec(grown.model.spec()), FixedPolicy())

    images = args.epochs * n_train
    return {
        "device": device_name(device),
        "bf16": args.bf16,
        "batch": args.batch,
        "train_images_per_epoch": n_train,
        "epochs": args.epochs,
        "start_hidden": start,
        "final_hidden": grown.model.hidden,
        "params": grown.model.n_params(),
        "growth_events": [e.describe() for e in grown.growth_log],
        "growing_images_per_s": round(images / t_grow, 1),
        "growing_train_loop_images_per_s": round(images / grown.timings["train"], 1),
        "fixed_images_per_s": round(images / t_fixed, 1),
        "fixed_train_loop_images_per_s": round(images / fixed.timings["train"], 1),
        "growth_check_share": round(grown.timings["growth"] / t_grow, 4),
        "growth_check_seconds": round(grown.timings["growth"], 3),
        "seconds_growing": round(t_grow, 2),
        "seconds_fixed": round(t_fixed, 2),
        "wall_time_ratio": round(t_grow / t_fixed, 3),
        "val_acc_growing": round(grown.history[-1]["val_acc"], 4),
        "val_acc_fixed": round(fixed.history[-1]["val_acc"], 4),
        "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    ap.add_argument("--batch", type=int, default=256, help="minibatch size")
    ap.add_argument("--steps", type=int, default=40, help="training steps per epoch (training images = steps x batch)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--val", type=int, default=512, help="validation images")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--bf16", action="store_true", help="train (and score) under bfloat16 autocast; edits are checked in float32")
    ap.add_argument("--tau", type=float, default=1.001, help="SECNN ratio threshold (low so that the synthetic run grows)")
    ap.add_argument("--min-gap", type=int, default=1, help="epochs between growth events")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = run(args)
    print(f"device: {rec['device']}  bf16={rec['bf16']}  batch {rec['batch']}  {rec['epochs']} epochs x {rec['train_images_per_epoch']} images")
    for line in rec["growth_events"]:
        print("  " + line)
    print(f"  arch {rec['start_hidden']} -> {rec['final_hidden']} ({rec['params']} params)")
    print(f"  growing CNN (SECNN): {rec['growing_images_per_s']:10.1f} images/s  (training loop alone {rec['growing_train_loop_images_per_s']:.1f})")
    print(f"  fixed final CNN    : {rec['fixed_images_per_s']:10.1f} images/s  (training loop alone {rec['fixed_train_loop_images_per_s']:.1f})")
    print(f"  growth checks      : {100 * rec['growth_check_share']:.1f} % of the growing run ({rec['growth_check_seconds']} s);"
          f" wall-time ratio {rec['wall_time_ratio']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

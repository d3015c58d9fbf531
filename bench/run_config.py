"""Train once with a flat config on a bundled dataset and print test accuracy, size and timings.

    python bench/run_config.py mnist '{"tau": 0.005, "expansion_interval": 1}'

The JSON keys are those of ``senn_automl.training.config.DEFAULTS``. Uses 1 torch thread.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from senn_automl.data import load_dataset
from senn_automl.training import config
from senn_automl.training.trainer import Trainer


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    ds = load_dataset(sys.argv[1])
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    model, policy, train = config.build(config.resolve(**overrides), ds.n_features, ds.n_classes)
    t0 = time.perf_counter()
    tr = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    acc = tr.evaluate(torch.as_tensor(ds.X_test), torch.as_tensor(ds.y_test))[1]
    print(json.dumps({
        "dataset": ds.name, "config": overrides, "test_acc": round(acc, 4), "hidden": tr.model.hidden,
        "n_params": tr.model.n_params(), "epochs": tr.epoch, "growth_events": len(tr.growth_log),
        "timings_s": {k: round(v, 2) for k, v in tr.timings.items()}, "seconds": round(time.perf_counter() - t0, 2),
    }))


if __name__ == "__main__":
    main()

"""A GroMo peer for ``bench/growth_vs_fixed.py``: a ``GrowingMLP`` grown with GroMo's own loop.

GroMo (https://github.com/growingnet/gromo, ``pip install gromo``) grows networks with TINY's
optimal neurons. :func:`fit_gromo` grows one on a training fold the way GroMo's tutorial
(``examples/plot_growing_container_tutorial.py``) does, through the public API only:

1. ``GrowingMLP(n_features, n_classes, hidden_size=2, number_hidden_layers=1)``, GroMo's default
   activation (SELU) and bias. The tutorial starts from 2 units per hidden layer (in 2 layers);
   one hidden layer here, so that the width compares with the SENN rows' first hidden layer
   (``hidden_layers`` gives more).
2. Train ``epochs_per_growth=3`` epochs (the tutorial's ``intermediate_epochs``) with GroMo's
   ``gradient_descent`` and a new ``SGD(lr=0.01)`` after every growth step (the tutorial's
   optimiser; ``optimizer="adam"`` is there for a sensitivity check), mini-batches of 64 (the
   default of GroMo's earlier MNIST script ``misc/mlp_run.py``, and the SENN rows' batch size).
3. Grow: ``compute_statistics`` over the whole training part with
   ``CrossEntropyLoss(reduction="sum")`` (GroMo wants a summed loss there; the tutorial's
   regression uses the summed MSE), ``compute_optimal_updates(maximum_added_neurons=min(10, room))``
   (GroMo's defaults otherwise; 10 is ``misc/mlp_run.py``'s default; with cross-entropy at most
   ``n_classes - 1`` directions are significant, so 9 per step for digits and MNIST, 2 for wine),
   ``reset_computation``, then ``select_update`` of the layer with the largest first-order
   improvement (``update_information``; ``misc/mlp_run.py``'s ``"fo"`` selection; with one hidden
   layer there is one candidate).
4. Amplitude: the tutorial's line search, the scaling factors 0, 0.1, 0.5 and 1 through
   ``set_scaling_factor``, each scored by the mean cross-entropy of ``extended_forward``
   (``evaluate_model(use_extended_model=True)``). The tutorial scores on its training data; here
   on the held-out part, which the statistics did not see, so that the amplitude (and the decision
   to stop) are not fitted to the data the proposal came from. GroMo also ships an unbounded
   search, ``gromo.utils.utils.line_search`` (``amplitudes="line_search"``); it picked factors of
   5 to 670 (the optimal-delta step scales with the factor squared) and left nets that SGD could
   not train on (wine fold 0: 0.46 accuracy, growth ended at width 2), so it is not the default.
5. ``set_scaling_factor(best)``, ``apply_change()``. Growth ends for good when the hidden width
   reaches ``max_width``, when GroMo proposes no neuron, or when the best factor is 0 (the proposal
   does not lower the held-out loss; that proposal is discarded). ``growth_patience`` failed
   proposals in a row end it instead of one, ``amplitude_data="train"`` scores the search on the
   training part as the tutorial does: neither changed the picture on MNIST (2 folds: the later
   proposals still fail on held-out data; grown to 128 on training-data scores, 0.85-0.86).

The protocol around it is the SENN estimator's (its defaults): 15 % of the training fold held out,
stratified; at most ``max_epochs=100`` epochs in all; the model of the lowest held-out loss kept;
early stop after ``patience=30`` epochs without a better one (a growth step resets the count). The
test fold is scored once, with that model. The features are the caller's (the benchmark's
preprocessing; the SENN estimator rescales them once more inside, GroMo gets them as they are).
``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's random state is left
alone); the thread count is the caller's.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np

#: the scaling factors the tutorial's line search tries
TUTORIAL_AMPLITUDES = (0.0, 0.1, 0.5, 1.0)
MISSING = "--peers gromo needs GroMo: pip install gromo (install torch first)"
#: fit_gromo's arguments that are data, or that the benchmark sets per fold
_PER_FOLD = {"X_tr", "y_tr", "X_te", "y_te", "seed", "device"}


def gromo_version() -> str | None:
    """The installed GroMo's version (``importlib.metadata``), None without GroMo."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gromo")
    except PackageNotFoundError:
        return None


def require():
    """GroMo's pieces used here; ``SystemExit`` with the install line when GroMo is missing."""
    try:
        from gromo.containers.growing_mlp import GrowingMLP
        from gromo.utils.training_utils import compute_statistics, evaluate_model, gradient_descent
        from gromo.utils.utils import line_search
    except ImportError as exc:
        raise SystemExit(MISSING) from exc
    return GrowingMLP, compute_statistics, evaluate_model, gradient_descent, line_search


def _loader(X, y, batch_size: int, generator=None):
    """A ``DataLoader`` of whole mini-batches (one tensor index per batch, not one per row),
    shuffled with ``generator`` when given; GroMo's helpers iterate ``for x, y in loader``."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

    ds = TensorDataset(X, y)
    order = RandomSampler(ds, generator=generator) if generator is not None else SequentialSampler(ds)
    return DataLoader(ds, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def _widths(model) -> list[int]:
    return [int(layer.out_features) for layer in model.layers[:-1]]


def _discard_proposal(model) -> None:
    """Drop the selected, unapplied update. GroMo has no container-level call for this
    (``apply_change`` is the only exit it shows), so this touches the selected layer's
    ``delete_update`` (which also drops the previous layer's output extension) and clears
    ``currently_updated_layer_index`` as ``apply_change`` does."""
    model.currently_updated_layer.delete_update()
    model.currently_updated_layer_index = None


def settings(**overrides) -> dict[str, Any]:
    """:func:`fit_gromo`'s settings (its defaults, updated with ``overrides``); ``SystemExit`` on
    an unknown name. The benchmark records them in its JSON."""
    import inspect

    params = {k: v.default for k, v in inspect.signature(fit_gromo).parameters.items() if k not in _PER_FOLD}
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise SystemExit(f"--gromo-set {', '.join(unknown)}: fit_gromo has no such setting; use one of {', '.join(params)}")
    return {**params, **overrides}


def _grow(model, train, val_cost, *, room: list[int], neurons_per_step: int, amplitudes, tools) -> tuple[float, int]:
    """One GroMo growth step (see the module docstring): returns (the factor picked, new neurons);
    the change is applied when the factor is > 0, discarded otherwise."""
    import torch

    compute_statistics, line_search = tools
    compute_statistics(model, train, loss_function=torch.nn.CrossEntropyLoss(reduction="sum"), device=model.device)
    model.compute_optimal_updates(maximum_added_neurons=min(neurons_per_step, min(r for r in room if r > 0)))
    model.reset_computation()
    # growing layer i adds neurons to hidden layer i; only layers with room compete
    info = model.update_information()
    gains = [info[i]["update_value"] if room[i] > 0 else -math.inf for i in range(len(room))]
    model.select_update(layer_index=int(np.argmax(gains)))
    proposal = model.currently_updated_layer.eigenvalues_extension
    n_new = 0 if proposal is None else int(proposal.shape[0])

    def cost(factor) -> float:
        model.set_scaling_factor(float(factor))
        return val_cost(extended=True)

    if not n_new:
        factor = 0.0
    elif amplitudes == "line_search":
        factor = float(line_search(cost)[0])
    else:  # ties go to the smaller factor, 0 first
        factor = float(min(amplitudes, key=cost))
    if factor > 0:
        model.set_scaling_factor(factor)
        model.apply_change()
    else:
        _discard_proposal(model)
    return factor, n_new


def fit_gromo(X_tr, y_tr, X_te, y_te, *, seed: int, max_width: int = 128, hidden_layers: int = 1, start_width: int = 2,
              max_epochs: int = 100, epochs_per_growth: int = 3, patience: int = 30, batch_size: int = 64,
              optimizer: str = "sgd", lr: float = 0.01, neurons_per_step: int = 10, amplitudes=TUTORIAL_AMPLITUDES,
              amplitude_data: str = "val", growth_patience: int = 1, validation_fraction: float = 0.15,
              device: str = "cpu") -> dict[str, Any]:
    """Grow a GroMo ``GrowingMLP`` on ``(X_tr, y_tr)`` (preprocessed features, class labels) and
    score it on ``(X_te, y_te)``; see the module docstring for the loop. ``amplitudes``: the
    scaling factors to try, or ``"line_search"`` (GroMo's unbounded search); ``amplitude_data``:
    ``"val"`` (the held-out part) or ``"train"``, the data that search scores on;
    ``growth_patience``: failed growth steps in a row that end growth. Returns ``acc`` (test
    accuracy of the best-validation model), ``widths`` / ``width`` (its hidden widths / the
    first), ``params``, ``growth_steps`` (growth steps applied), ``neurons_added`` (by them),
    ``amplitudes`` (the factor picked at each growth step; a final 0 is the step that ended
    growth), ``epochs``, ``best_epoch``, ``stop`` (why growth ended) and ``fit_s``
    (``time.perf_counter`` seconds from building the model to the end of training)."""
    GrowingMLP, compute_statistics, evaluate_model, gradient_descent, line_search = require()
    import torch
    from sklearn.model_selection import train_test_split
    from torchmetrics.classification import MulticlassAccuracy

    classes = np.unique(y_tr)
    y_tr, y_te = np.searchsorted(classes, y_tr), np.searchsorted(classes, y_te)
    n_val = math.ceil(validation_fraction * len(y_tr))
    X_fit, X_val, y_fit, y_val = train_test_split(X_tr, y_tr, test_size=n_val, random_state=seed, stratify=y_tr)
    dev = torch.device(device)

    def tensors(X, y):
        return (torch.as_tensor(np.asarray(X, dtype=np.float32), device=dev),
                torch.as_tensor(np.asarray(y, dtype=np.int64), device=dev))

    train = _loader(*tensors(X_fit, y_fit), batch_size, generator=torch.Generator().manual_seed(seed))
    val, test = _loader(*tensors(X_val, y_val), 4096), _loader(*tensors(X_te, y_te), 4096)
    ce = torch.nn.CrossEntropyLoss()
    make_optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]

    def val_loss(extended: bool = False) -> float:
        return evaluate_model(model, val, ce, use_extended_model=extended, device=dev)[0]

    def search_loss(extended: bool = True) -> float:  # what the amplitude search scores
        data = {"val": val, "train": train}[amplitude_data]
        return evaluate_model(model, data, ce, use_extended_model=extended, device=dev)[0]

    t0 = time.perf_counter()
    forked = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        model = GrowingMLP(X_fit.shape[1], len(classes), hidden_size=start_width, number_hidden_layers=hidden_layers,
                           device=dev)
        optim = make_optimizer(model.parameters(), lr=lr)
        best = (val_loss(), copy.deepcopy(model), 0)
        growing, stop, since_best, picked, added, epoch, fails = True, None, 0, [], 0, 0, 0
        for epoch in range(1, max_epochs + 1):
            if growing and epoch > 1 and (epoch - 1) % epochs_per_growth == 0:
                room = [max_width - w for w in _widths(model)]
                if max(room) <= 0:
                    growing, stop = False, "max_width"
                else:
                    factor, n_new = _grow(model, train, search_loss, room=room, neurons_per_step=neurons_per_step,
                                          amplitudes=amplitudes, tools=(compute_statistics, line_search))
                    picked.append(factor)
                    if factor > 0:
                        added, since_best, fails = added + n_new, 0, 0
                        optim = make_optimizer(model.parameters(), lr=lr)  # the parameters are new tensors
                    else:
                        fails += 1
                        if fails >= growth_patience:
                            growing, stop = False, "amplitude 0" if n_new else "no proposal"
            gradient_descent(model, train, optim, scheduler=None, loss_function=ce, device=dev)
            loss = val_loss()
            if loss < best[0]:
                best, since_best = (loss, copy.deepcopy(model), epoch), 0
            else:
                since_best += 1
            if since_best >= patience:
                break
        fit_s = time.perf_counter() - t0
        _, best_model, best_epoch = best
        acc = evaluate_model(best_model, test, ce, metrics=MulticlassAccuracy(num_classes=len(classes), average="micro"),
                             device=dev)[1]
    widths = _widths(best_model)
    return {
        "acc": float(acc), "widths": widths, "width": widths[0], "params": int(best_model.number_of_parameters()),
        "growth_steps": sum(a > 0 for a in picked), "neurons_added": added, "amplitudes": picked,
        "epochs": epoch, "best_epoch": best_epoch, "stop": stop or "still growing", "fit_s": fit_s,
    }

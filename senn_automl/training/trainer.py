"""The training loop that grows a network while it trains (torch and numpy only).

``Trainer`` runs minibatch epochs with Adam/AdamW/SGD, asks its growth policy for a check after
the epochs the policy names (never after the last of ``max_epochs``: nothing would train what it
added), applies accepted edits with a function-preservation check and
optimiser surgery, tracks validation loss/accuracy for early stopping, and notifies callbacks at
named points. Checkpoints hold weights, optimiser state, the architecture spec and the growth
log, and load into a fresh process (:func:`load_checkpoint`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from senn_automl.growth.base import GrowthContext, GrowthEvent, GrowthPolicy, make_policy
from senn_automl.growth.fixed import FixedPolicy
from senn_automl.models.registry import model_from_spec
from senn_automl.scores.tasks import TASKS, Task, get_task
from senn_automl.training.augment import augment_flip_crop
from senn_automl.training.surgery import apply_edit
from senn_automl.validation import TINY, as_list, invalid, is_real, is_whole, require, require_bool, require_choice

__all__ = ["TrainConfig", "Callback", "PrintGrowth", "Trainer", "load_checkpoint", "load_newest_checkpoint",
           "CheckpointError", "OPTIMIZERS", "resolve_device", "check_sample_weight"]

OPTIMIZERS = ("adam", "adamw", "sgd")
#: what early stopping and the best-model snapshot watch (``val_acc``: classification only,
#: ``val_r2``: regression only)
MONITORS = ("val_loss", "val_acc", "val_r2")
#: "fp32", or "bf16" (bfloat16 autocast)
PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class TrainConfig:
    """Training settings.

    max_epochs : epochs to run (≥ 1). batch_size : minibatch size (≥ 1). optimizer : "adam",
    "adamw" or "sgd". lr : learning rate (> 0). weight_decay : L2 (adam/sgd) or decoupled (adamw)
    decay (≥ 0). momentum : SGD momentum in [0, 1). patience : epochs without a better monitored
    validation value before early stopping (None disables; growth resets the count). monitor :
    "val_loss" (lower is better), or the task's metric "val_acc" / "val_r2" (higher is better, ties
    broken by loss) for early stopping and the best model. restore_best : load
    the best-validation model when training ends (early stop or ``max_epochs``), not after a
    partial ``fit(epochs=...)`` call. scoring_batch_size : training rows used for growth
    statistics (≥ 2). probe_size : rows of the function-preservation probe. probe_tolerance :
    relative tolerance of that check. seed : seeds weights, shuffling and candidate search.
    device : "auto", "cpu", "cuda", ... task : "classification" (cross-entropy, accuracy) or
    "regression" (squared error, R²; :mod:`senn_automl.scores.tasks`). precision : "fp32", or "bf16" for bfloat16 autocast of the
    training steps (weights, optimiser, growth scoring and the function-preservation check stay
    float32). augment : random horizontal flips and shifts of up to 4 pixels
    (:func:`senn_automl.training.augment.augment_flip_crop`, torch only) of every training batch, for image
    models (those with ``in_shape``); ignored for others. progress : show a progress bar (tqdm).

    The data is moved to the device once per :meth:`Trainer.fit` (no per-step host→device
    copies); tensors are reallocated only at growth events.

    Raises ``ValueError`` from :meth:`validate`, naming the argument and the fix.
    """

    max_epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    patience: int | None = 30
    monitor: str = "val_loss"
    restore_best: bool = True
    scoring_batch_size: int = 1024
    probe_size: int = 256
    probe_tolerance: float = 1e-4
    seed: int = 0
    device: str = "auto"
    task: str = "classification"
    precision: str = "fp32"
    augment: bool = False
    progress: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        require(is_whole(self.max_epochs) and self.max_epochs >= 1, "max_epochs", self.max_epochs, "use a whole number >= 1")
        require(is_whole(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "use a whole number >= 1")
        require_choice("optimizer", self.optimizer, OPTIMIZERS)
        require(is_real(self.lr) and self.lr > 0, "lr", self.lr, "the learning rate must be a positive number, e.g. 3e-3")
        require(is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay, "use a number >= 0")
        require(is_real(self.momentum) and 0 <= self.momentum < 1, "momentum", self.momentum, "use a number in [0, 1)")
        require_choice("task", self.task, tuple(TASKS))
        metric = TASKS[self.task].metric
        require(self.monitor in ("val_loss", metric), "monitor", self.monitor, f"use 'val_loss' or {metric!r} for task={self.task!r}")
        require(self.patience is None or (is_whole(self.patience) and self.patience >= 1), "patience", self.patience, "use None (no early stopping) or a whole number of epochs >= 1")
        require(is_whole(self.scoring_batch_size) and self.scoring_batch_size >= 2, "scoring_batch_size", self.scoring_batch_size, "use a whole number >= 2")
        require(is_whole(self.probe_size) and self.probe_size >= 1, "probe_size", self.probe_size, "use a whole number >= 1")
        require(is_real(self.probe_tolerance) and self.probe_tolerance > 0, "probe_tolerance", self.probe_tolerance, "use a positive number, e.g. 1e-4")
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError):
            invalid("device", self.device, "use 'auto', 'cpu' or 'cuda'")
        require(self.precision in PRECISIONS, "precision", self.precision, "use 'fp32' or 'bf16' (bfloat16 autocast)")
        for name in ("restore_best", "augment", "progress"):
            require_bool(name, getattr(self, name))


class Callback:
    """Hooks called by :class:`Trainer` at named points; override what you need.

    ``on_fit_start(trainer)``, ``on_epoch_end(trainer, record)`` (record = the epoch's metrics
    dict, also appended to ``trainer.history``), ``on_growth(trainer, events)`` (events of one
    check, already applied; ``trainer.model`` is the grown model), ``on_fit_end(trainer)``.
    """

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        pass

    def on_growth(self, trainer: "Trainer", events: list[GrowthEvent]) -> None:
        pass

    def on_fit_end(self, trainer: "Trainer") -> None:
        pass


class PrintGrowth(Callback):
    """Prints each growth or pruning event with ``tqdm.write`` (keeps a progress bar intact), one
    line per event from :meth:`GrowthEvent.describe`: epoch, what changed where, score and ratio,
    parameters before → after, architecture."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def on_growth(self, trainer: "Trainer", events: list[GrowthEvent]) -> None:
        from tqdm.auto import tqdm

        for e in events:
            tqdm.write(self.prefix + e.describe())


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def check_sample_weight(weight, n: int, name: str = "sample_weight") -> torch.Tensor:
    """``weight`` (array-like or tensor) as a float64 CPU tensor of shape (n,). Raises
    ``ValueError`` naming ``name`` for another shape, non-finite or negative values, or weights
    that are all zero."""
    w = _as_tensor(weight, torch.float64, "cpu")
    if w.shape != (n,):
        raise ValueError(f"{name} has shape {tuple(w.shape)}, expected ({n},): pass one weight per row of X")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} has {int((~torch.isfinite(w)).sum())} non-finite value(s): use finite weights >= 0")
    if bool((w < 0).any()):
        raise ValueError(f"{name} has {int((w < 0).sum())} negative value(s): use weights >= 0")
    if float(w.sum()) <= 0:
        raise ValueError(f"{name} is zero for every row (the weights sum to 0): give at least one row a positive weight")
    return w


def _weights(weight, n: int, name: str, device) -> torch.Tensor | None:
    """``weight`` checked (:func:`check_sample_weight`) as a float32 (n,) tensor on ``device``, or
    ``None`` when absent or all equal (uniform weights leave the weighted mean loss unchanged, so
    they take the unweighted path bit for bit)."""
    if weight is None:
        return None
    w = check_sample_weight(weight, n, name)
    if bool((w == w[0]).all()):
        return None
    return w.to(device=device, dtype=torch.float32)


def _as_tensor(a, dtype, device):
    if torch.is_tensor(a):
        return a.to(device=device, dtype=dtype)
    return torch.tensor(np.asarray(a), dtype=dtype, device=device)  # copies: read-only arrays are fine


class Trainer:
    """Grow-while-training loop.

    Parameters
    ----------
    model : a growable model (:class:`~senn_automl.models.mlp.GrowingMLP`, ``GrowingCNN``, ``EdgeMLP``)
        mapping (B, ...) inputs to (B, n_outputs) outputs (class logits, or regression values), with ``spec()``, ``n_params()`` and a
        JSON-able ``hidden`` size summary.
    policy : a :class:`~senn_automl.growth.base.GrowthPolicy` (default: no growth).
    config : :class:`TrainConfig`.
    callbacks : iterable of :class:`Callback`.

    After :meth:`fit`: ``history`` (one metrics dict per epoch), ``growth_log`` (list of
    :class:`GrowthEvent`, step numbered over the whole run), ``timings`` (seconds spent in
    ``train``, ``growth`` checks, ``eval``), ``epoch`` (epochs done), ``stopped_early``.
    """

    def __init__(self, model, policy: GrowthPolicy | None = None, config: TrainConfig | None = None, callbacks: Iterable[Callback] = ()):
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.policy = policy or FixedPolicy()
        self.policy.check_model(self.model)
        self.callbacks = list(callbacks)
        self.optimizer = _make_optimizer(self.model.parameters(), self.config)
        self.history: list[dict[str, Any]] = []
        self.growth_log: list[GrowthEvent] = []
        self.timings = {"train": 0.0, "growth": 0.0, "eval": 0.0}
        self.epoch = 0
        self.stopped_early = False
        self.eta: float | None = None
        self._best: tuple[float, dict] | None = None
        self._since_best = 0
        #: the epoch whose best-validation model the last ``fit`` restored at its end (``restore_best``;
        #: the last epoch when that one was the best); None when that fit restored nothing (a partial
        #: ``fit(epochs=...)``, ``restore_best=False``): the model is then the last trained epoch's
        self.restored_epoch: int | None = None
        self._train_weight: torch.Tensor | None = None  # (n_train,) mean 1, set by fit
        self._val_weight: torch.Tensor | None = None
        self._val_rows: tuple[torch.Tensor, torch.Tensor] | None = None
        self.generator = torch.Generator().manual_seed(int(self.config.seed))
        self.task: Task = get_task(self.config.task)

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[float, float]:
        """Mean loss and the task's metric of the current model on ``X`` (n, ...) and targets ``y``
        (as :meth:`Task.targets` gives them): cross-entropy and accuracy, or MSE and R² (averaged
        over outputs). With ``weight`` (n,), non-negative, the weighted means ``Σ wᵢ ℓᵢ / Σ wᵢ``
        and the weighted metric."""
        was = self.model.training
        self.model.eval()
        losses, parts = 0.0, None
        for i in range(0, len(X), 4096):
            out = self.model(X[i : i + 4096])
            t = y[i : i + 4096]
            w = None if weight is None else weight[i : i + 4096]
            loss = self.task.losses(out, t)
            losses += float((loss if w is None else loss * w).sum())
            p = self.task.score_parts(out, t, w)
            parts = p if parts is None else parts + p
        self.model.train(was)
        n = max(float(weight.sum()) if weight is not None else len(X), TINY)
        return losses / n, (self.task.finish_score(parts, n) if parts is not None else math.nan)

    def _apply(self, probe):
        def apply(edit, check: bool = True):
            tol = self.config.probe_tolerance if check else math.inf
            return apply_edit(self.model, edit, probe=probe, optimizer=self.optimizer, tolerance=tol)
        return apply

    def _snapshot(self) -> dict:
        return {"spec": self.model.spec(), "state": copy.deepcopy(self.model.state_dict()), "epoch": self.epoch}

    # ------------------------------------------------------------------ fit
    def fit(self, X_train, y_train, X_val=None, y_val=None, *, epochs: int | None = None,
            sample_weight=None, val_sample_weight=None) -> "Trainer":
        """Train for ``epochs`` more epochs (default: up to ``config.max_epochs`` in total).

        X_* : (n, d) float arrays or tensors; y_* : (n,) integer class indices in [0, n_classes)
        (classification), or (n,) / (n, k) float targets (regression, ``config.task``).
        Without a validation split, early stopping and held-out growth scoring use the training
        data. Returns ``self``.

        ``sample_weight`` (n_train,) and ``val_sample_weight`` (n_val,): optional non-negative
        weights per row. The objective becomes the weighted mean loss ``Σ wᵢ ℓᵢ / Σ wᵢ``: each
        minibatch loss is ``mean(wᵢ/w̄ · ℓᵢ)`` with ``w̄`` the mean training weight, an unbiased
        estimate of it under uniform shuffling. The growth statistics (η, λ, the K-FAC factors:
        expectations over rows) are taken on scoring rows drawn with replacement with probability
        ``wᵢ/Σw``, and held-out growth scoring on validation rows drawn the same way, so their
        plain means estimate the weighted expectations without bias. Validation loss and accuracy
        (early stopping, best model, history) are exact weighted means. Raises ``ValueError`` for
        weights of the wrong shape, negative or non-finite weights, or weights summing to 0.
        """
        cfg = self.config
        dev = self.device
        self.restored_epoch = None
        X = _as_tensor(X_train, torch.float32, dev)
        y = self.task.targets(y_train, dev)
        has_val = X_val is not None and len(X_val) > 0
        Xv = _as_tensor(X_val, torch.float32, dev) if has_val else X
        yv = self.task.targets(y_val, dev) if has_val else y
        n = len(X)
        w = _weights(sample_weight, n, "sample_weight", dev)
        wv = _weights(val_sample_weight, len(Xv), "val_sample_weight", dev) if has_val else w
        self._train_weight = None if w is None else w / w.mean()
        self._val_weight = wv
        if w is None:
            score_idx = torch.randperm(n, generator=self.generator)[: cfg.scoring_batch_size]
        else:
            score_idx = torch.multinomial(w.cpu().double(), min(n, cfg.scoring_batch_size), replacement=True, generator=self.generator)
        score_idx = score_idx.to(dev)
        X_score, y_score = X[score_idx], y[score_idx]
        if has_val and wv is not None:  # held-out growth scoring on rows drawn ∝ weight
            val_idx = torch.multinomial(wv.cpu().double(), len(Xv), replacement=True, generator=self.generator).to(dev)
            self._val_rows = (Xv[val_idx], yv[val_idx])
        else:
            self._val_rows = (Xv, yv)
        probe = X_score[: cfg.probe_size]
        last = self.epoch + epochs if epochs is not None else cfg.max_epochs
        for cb in self.callbacks:
            cb.on_fit_start(self)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=last - self.epoch, unit="epoch", leave=False, dynamic_ncols=True)
        try:
            if self.epoch == 0 and not self.history and not self.growth_log and last > 0:
                t0 = time.perf_counter()  # the check on the untrained network (check_at_start)
                events = self._record_growth(self.policy.start(self.model, self._growth_context(-1, X_score, y_score, probe, has_val)))
                self.timings["growth"] += time.perf_counter() - t0  # the callbacks' time (e.g. model logging) is not growth's
                if events:
                    for cb in self.callbacks:
                        cb.on_growth(self, events)
            while self.epoch < last and not self.stopped_early:
                self._run_epoch(X, y, Xv, yv, X_score, y_score, probe, has_val, bar)
        finally:
            if bar is not None:
                bar.close()
        finished = self.stopped_early or self.epoch >= cfg.max_epochs
        if cfg.restore_best and finished and self._best is not None:
            self._restore(self._best[1])
            self.restored_epoch = self._best_epoch()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self

    def _run_epoch(self, X, y, Xv, yv, X_score, y_score, probe, has_val, bar):
        cfg = self.config
        t0 = time.perf_counter()
        self.model.train()
        perm = torch.randperm(len(X), generator=self.generator).to(self.device)
        total = 0.0
        bf16 = cfg.precision == "bf16"
        shape = getattr(self.model, "in_shape", None) if cfg.augment else None
        for i in range(0, len(X), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb = X[idx]
            if shape is not None:
                xb = augment_flip_crop(xb.reshape(len(idx), *shape), self.generator)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                if self._train_weight is None:
                    loss = self.task.loss(self.model(xb), y[idx])
                else:
                    loss = (self.task.losses(self.model(xb), y[idx]) * self._train_weight[idx]).mean()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
        t1 = time.perf_counter()
        self.timings["train"] += t1 - t0
        new = []
        if self.epoch + 1 < cfg.max_epochs:  # nothing would train what grows after the last epoch
            new = self.policy.step(self.model, self._growth_context(self.epoch, X_score, y_score, probe, has_val))
        events = self._record_growth(new)
        t2 = time.perf_counter()
        self.timings["growth"] += t2 - t1
        val_loss, val_metric = self.evaluate(Xv, yv, self._val_weight)
        self.timings["eval"] += time.perf_counter() - t2
        record = {
            "epoch": self.epoch,
            "train_loss": total / len(X),
            "val_loss": val_loss,
            self.task.metric: val_metric,
            "n_params": self.model.n_params(),
            "hidden": as_list(self.model.hidden),
            "n_growth_events": len(self.growth_log),
            "grew": len(events),
            "eta": self.eta,
        }
        self.history.append(record)
        if events:
            self._since_best = 0
            for cb in self.callbacks:
                cb.on_growth(self, events)
        key = self._monitor_key(val_loss, val_metric)
        if self._best is None or key < self._best[0]:
            self._best = (key, self._snapshot())
            self._since_best = 0
        elif not events:
            self._since_best += 1
        self.epoch += 1
        if cfg.patience is not None and self._since_best >= cfg.patience:
            self.stopped_early = True  # set before the callbacks, so they know this is the last epoch
        if bar is not None:
            bar.set_postfix(**{self.task.metric: f"{val_metric:.3f}"}, params=record["n_params"], hidden=record["hidden"])
            bar.update(1)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def _growth_context(self, epoch: int, X_score, y_score, probe, has_val: bool) -> GrowthContext:
        return GrowthContext(X_score, y_score, epoch=epoch, apply=self._apply(probe), history=self.history,
                             X_val=self._val_rows[0] if has_val else None, y_val=self._val_rows[1] if has_val else None,
                             generator=self.generator, task=self.task)

    def _record_growth(self, new: list[GrowthEvent]) -> list[GrowthEvent]:
        """Number ``new`` events on from the growth log, append them and update :attr:`eta`; returns
        the numbered events (the caller tells the callbacks, outside the growth timing)."""
        events = [dataclasses.replace(e, step=len(self.growth_log) + k) for k, e in enumerate(new)]
        self.growth_log.extend(events)
        self.eta = self.policy.last_eta
        return events

    def _best_epoch(self) -> int | None:
        """The epoch of the best-validation snapshot: stored with it, or (a snapshot from a checkpoint
        written before snapshots stored it) the history record whose monitored key equals its key."""
        key, snap = self._best
        if snap.get("epoch") is not None:
            return int(snap["epoch"])
        for r in self.history:
            if self._monitor_key(r["val_loss"], r.get(self.task.metric)) == tuple(key):
                return int(r["epoch"])
        return None

    def _monitor_key(self, val_loss: float, val_metric: float | None) -> tuple[float, ...]:
        """What early stopping and the best-model snapshot minimise: ``(val_loss,)``, or for
        ``monitor`` = the task's metric ``(−metric, val_loss)`` (ties broken by loss)."""
        return (val_loss,) if self.config.monitor == "val_loss" else (-val_metric, val_loss)

    def _restore(self, snap: dict) -> None:
        if snap["spec"] != self.model.spec():
            self.model = model_from_spec(snap["spec"]).to(self.device)
            self.optimizer = _make_optimizer(self.model.parameters(), self.config)
        self.model.load_state_dict(snap["state"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write ``state.pt`` (weights, optimiser state, RNG, epoch, the policy's tensor state) and ``arch.json`` (spec,
        growth log, history, policy and train config) into ``directory``; returns its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "generator": self.generator.get_state(),
                "timings": self.timings,
                "best": self._best,
                "since_best": self._since_best,
                "policy_tensors": self.policy.tensor_state(),
            },
            d / "state.pt",
        )
        meta = {
            "format": 1,
            "spec": self.model.spec(),
            "growth_log": [e.to_dict() for e in self.growth_log],
            "history": self.history,
            "policy": self.policy.config(),
            "policy_state": self.policy.state_dict(),
            "train_config": dataclasses.asdict(self.config),
        }
        (d / "arch.json").write_text(json.dumps(meta, indent=1))
        return d


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded (damaged or mismatched files); the message
    names the file and the fix."""


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's can run to many), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(directory: str | os.PathLike, *, callbacks: Sequence[Callback] = (), **config_overrides) -> Trainer:
    """Rebuild a :class:`Trainer` from a checkpoint directory written by :meth:`Trainer.save_checkpoint`.

    The model is built from the saved spec first, then weights and optimiser state are loaded,
    so training continues where it stopped (call ``fit`` with more epochs). ``config_overrides``
    replace saved :class:`TrainConfig` fields (e.g. ``device="cpu"``, ``max_epochs=200``).

    Raises ``FileNotFoundError`` if ``state.pt`` or ``arch.json`` is missing, and
    :class:`CheckpointError` (a ``ValueError``) naming the file when ``arch.json`` is not valid JSON
    or does not describe a trainer, when ``state.pt`` cannot be read (truncated, damaged), or when
    its weights do not fit the network ``arch.json`` describes.
    """
    d = Path(directory)
    for name in ("state.pt", "arch.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found: not a senn_automl checkpoint directory")
    fix = "use an earlier checkpoint of the run, or train again"
    try:
        meta = json.loads((d / "arch.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{d / 'arch.json'} is not valid JSON ({exc}): the checkpoint is damaged; {fix}") from None
    try:
        saved = dict(meta["train_config"])
        policy_cfg = dict(meta["policy"])
        policy = make_policy(policy_cfg.pop("policy"), **policy_cfg)
        policy.load_state_dict(meta.get("policy_state", {}))
        model = model_from_spec(meta["spec"])
        history, growth_log = meta["history"], [GrowthEvent.from_dict(e) for e in meta["growth_log"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{d / 'arch.json'} does not describe a senn_automl trainer ({type(exc).__name__}: {exc}); {fix}") from None
    cfg = TrainConfig(**{**saved, **config_overrides})  # a bad override is the caller's error, not the checkpoint's
    trainer = Trainer(model, policy, cfg, callbacks)
    try:
        state = torch.load(d / "state.pt", map_location=trainer.device, weights_only=True)
    # what torch raises for a truncated or damaged file: RuntimeError (zip reader), EOFError, and from its
    # weights-only unpickler UnpicklingError (damaged bytes) or KeyError (not a torch file at all)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, KeyError) as exc:
        first = _first_line(exc)
        raise CheckpointError(f"{d / 'state.pt'} cannot be read ({first}): the checkpoint is damaged; {fix}") from None
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.epoch = int(state["epoch"])
        trainer.generator.set_state(state["generator"])
        trainer.timings = dict(state["timings"])
        trainer._best = state.get("best")
        trainer._since_best = int(state.get("since_best", 0))
        trainer.policy.load_tensor_state(state.get("policy_tensors", {}), trainer.model)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = _first_line(exc)
        raise CheckpointError(
            f"{d / 'state.pt'} does not fit the network of {d / 'arch.json'} ({first}): the two files come from "
            f"different checkpoints; {fix}") from None
    trainer.history = history
    trainer.growth_log = growth_log
    return trainer


def load_newest_checkpoint(directories: Sequence[str | os.PathLike], **kwargs) -> tuple[Trainer, Path, list[str]]:
    """:func:`load_checkpoint` of the first loadable directory of ``directories`` (newest first):
    (the trainer, its directory, one line per newer checkpoint that was skipped and why). Raises
    the newest one's error when none loads; ``ValueError`` for an empty list."""
    if not directories:
        raise ValueError("no checkpoint directory given")
    errors: list[Exception] = []
    for d in directories:
        try:
            return load_checkpoint(d, **kwargs), Path(d), [str(e) for e in errors]
        except (CheckpointError, FileNotFoundError) as exc:
            errors.append(exc)
    raise errors[0]

"""Tests for senn_automl.training.trainer and the optimiser surgery of senn_automl.training.surgery (real training, no mocks)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from senn_automl.growth import GrowthContext
from senn_automl.growth.fixed import FixedPolicy
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.models.mlp import GrowingMLP
from senn_automl.training.surgery import apply_edit
from senn_automl.training.trainer import Callback, TrainConfig, Trainer, load_checkpoint

RECORD_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "n_params", "hidden", "n_growth_events", "eta"}



# --------------------------------------------------------------------------- optimiser surgery


def _toy_batch(seed=0, n=64, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] * X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    return X, y.clamp_max(classes - 1)


def _step(model, opt, X, y, n=1):
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()


def _snapshot_state(opt):
    return {
        id(p): (st, {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}) for p, st in opt.state.items()
    }


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizer_state_carried_over_growth(kind):
    torch.manual_seed(0)
    X, y = _toy_batch()
    model = GrowingMLP(5, 3, (4, 3), max_width=10, max_depth=4)
    if kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        keys = ("exp_avg", "exp_avg_sq")
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
        keys = ("momentum_buffer",)
    _step(model, opt, X, y, n=3)
    old_params = list(model.parameters())
    before = _snapshot_state(opt)
    assert len(before) == len(old_params)

    # ---- add two neurons to hidden layer 0
    g = torch.Generator().manual_seed(1)
    W, b, act = torch.randn(2, 5, generator=g), torch.randn(2, generator=g), torch.randn(2, 3, generator=g)
    changes, diff = apply_edit(model, lambda m: m.add_neurons(0, W, b, act), probe=X, optimizer=opt)
    assert diff <= 1e-5
    assert len(changes) == 6
    new_params = list(model.parameters())
    group = opt.param_groups[0]["params"]
    assert len(group) == len(new_params) and all(a is b for a, b in zip(group, new_params))
    changed_new = {id(ch.new) for ch in changes}
    for ch in changes:
        assert ch.old is not None and ch.old is not ch.new
        assert ch.old not in opt.state  # state moved off the old Parameter
        state = opt.state[ch.new]
        old_obj, old_vals = before[id(ch.old)]
        for key in keys:
            grown = state[key]
            assert grown.shape == ch.new.shape
            assert torch.equal(grown[ch.index], old_vals[key])
            mask = torch.ones_like(grown, dtype=torch.bool)
            mask[ch.index] = False
            assert mask.any()
            # new entries: zero first moment / momentum; second moment at the old entries' mean
            fill = old_vals[key].mean() if key == "exp_avg_sq" else 0.0
            torch.testing.assert_close(grown[mask], torch.full((int(mask.sum()),), float(fill)), rtol=0, atol=0)
            assert key != "exp_avg_sq" or float(fill) > 0
        if kind == "adam":
            assert float(state["step"]) == float(old_vals["step"]) == 3.0
    untouched = [p for p in new_params if id(p) not in changed_new]
    assert len(untouched) == len(new_params) - 6 > 0
    for p in untouched:
        assert any(p is q for q in old_params)
        assert opt.state[p] is before[id(p)][0]  # same state object, not a copy

    # the new zero outgoing weights are trained by the next step
    consumer = model.linears[1]
    new_cols = consumer.weight.detach()[:, -2:].clone()
    assert torch.equal(new_cols, torch.zeros_like(new_cols))
    _step(model, opt, X, y)
    assert float(consumer.weight.detach()[:, -2:].abs().max()) > 0
    # incoming weights get no gradient while the outgoing ones are zero; from the next step on they do
    assert torch.equal(model.linears[0].weight.detach()[-2:], W)
    _step(model, opt, X, y)
    assert float(model.linears[0].weight.detach()[-2:].sub(W).abs().max()) > 0

    # ---- insert a layer: new Parameters join the param group, the consumer keeps its state
    consumer = model.linears[2]
    consumer_state = opt.state[consumer.weight]
    B = torch.eye(3) + 0.1 * torch.randn(3, 3, generator=g)
    changes, _ = apply_edit(model, lambda m: m.insert_layer(2, B, 0.1 * torch.randn(3, generator=g)), probe=X, optimizer=opt)
    assert len(changes) == 5 and all(ch.old is None for ch in changes)
    assert model.linears[3] is consumer and opt.state[consumer.weight] is consumer_state
    group = opt.param_groups[0]["params"]
    assert all(a is b for a, b in zip(group, model.parameters())) and len(group) == len(list(model.parameters()))
    carried = [opt.state[p] for p in group if p in opt.state and not any(p is ch.new for ch in changes)]
    for ch in changes:
        assert any(ch.new is p for p in group)
        state = opt.state.get(ch.new, {})
        if kind == "sgd":
            assert len(state) == 0
        else:  # Adam: the others' step, zero first moment, the mean of all old second moments
            assert float(state["step"]) == 5.0 and not state["exp_avg"].any()
            v = torch.cat([c["exp_avg_sq"].reshape(-1) for c in carried])
            torch.testing.assert_close(state["exp_avg_sq"], torch.full_like(ch.new, float(v.mean())))
    new_lin = model.linears[2]
    w0 = new_lin.weight.detach().clone()
    _step(model, opt, X, y)
    moved = (new_lin.weight.detach() - w0).abs()
    assert float(moved.max()) > 0
    if kind == "adam":  # no ±lr kick on every entry (what a state-less Adam parameter's first step is)
        assert float(moved.mean()) < 0.5 * 1e-2, float(moved.mean())
    for ch in changes:
        for key in keys:
            assert key in opt.state[ch.new]


# --------------------------------------------------------------------------- end-to-end on digits


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    idx = np.random.RandomState(0).permutation(len(X))
    tr, va = idx[:1200], idx[1200:]
    return X[tr], y[tr], X[va], y[va]


def _policy(cls=NaturalExpansionPolicy, **kw):
    params = dict(
        tau=0.03, alpha=2.5e-3, expansion_interval=2, n_candidates=16, candidate_steps=15,
        max_additions=2, depth_cooldown=0, layer_cost=1.0,
    )
    params.update(kw)
    return cls(**params)


def _config(**kw):
    params = dict(
        max_epochs=6, batch_size=64, lr=1e-2, seed=0, device="cpu", patience=None, restore_best=False,
        scoring_batch_size=512, probe_size=128,
    )
    params.update(kw)
    return TrainConfig(**params)


def _model(seed=0):
    torch.manual_seed(seed)
    return GrowingMLP(64, 10, (4,), max_width=16, max_depth=2)


class Counter(Callback):
    def __init__(self):
        self.calls = {"on_fit_start": 0, "on_epoch_end": 0, "on_growth": 0, "on_fit_end": 0}
        self.records, self.growth_events, self.hidden_at_growth = [], [], []

    def on_fit_start(self, trainer):
        self.calls["on_fit_start"] += 1

    def on_epoch_end(self, trainer, record):
        self.calls["on_epoch_end"] += 1
        self.records.append(record)

    def on_growth(self, trainer, events):
        self.calls["on_growth"] += 1
        self.growth_events.extend(events)
        self.hidden_at_growth.append(list(trainer.model.hidden))

    def on_fit_end(self, trainer):
        self.calls["on_fit_end"] += 1


@pytest.fixture(scope="module")
def grown(digits):
    Xtr, ytr, Xv, yv = digits
    counter = Counter()
    trainer = Trainer(_model(), _policy(), _config(), callbacks=[counter])
    trainer.fit(Xtr, ytr, Xv, yv)
    return trainer, counter


def test_trainer_end_to_end_grows_and_records(grown):
    trainer, counter = grown
    cfg = trainer.config
    assert trainer.epoch == cfg.max_epochs and not trainer.stopped_early
    assert len(trainer.history) == cfg.max_epochs
    for i, rec in enumerate(trainer.history):
        assert RECORD_KEYS <= set(rec)
        assert rec["epoch"] == i
        assert np.isfinite(rec["train_loss"]) and np.isfinite(rec["val_loss"])
        assert 0.0 <= rec["val_acc"] <= 1.0
        assert rec["hidden"] == list(rec["hidden"]) and all(h >= 1 for h in rec["hidden"])
    # growth happened, was logged and is reflected in the records
    log = trainer.growth_log
    assert len(log) > 0
    assert [e.step for e in log] == list(range(len(log)))
    assert trainer.history[-1]["n_growth_events"] == len(log)
    assert trainer.history[-1]["n_params"] == trainer.model.n_params() > trainer.history[0]["n_params"] - 1
    assert trainer.model.n_params() > _model().n_params()
    assert list(log[-1].hidden_after) == trainer.model.hidden
    counts = [r["n_growth_events"] for r in trainer.history]
    assert counts == sorted(counts)
    for e in log:
        assert e.kind in ("neuron", "layer")
        assert e.params_after > e.params_before
        assert e.ratio > e.tau and e.score / e.lam > e.alpha
        assert e.max_abs_diff <= cfg.probe_tolerance * 100
        assert e.epoch == -1 or (e.epoch + 1) % 2 == 0  # the check at the start, then expansion_interval=2
    # η is recorded from the check at the start on
    assert all(r["eta"] is not None and r["eta"] > 0 for r in trainer.history)
    # learned something
    assert trainer.history[-1]["val_acc"] > 0.7
    assert trainer.history[-1]["val_loss"] < trainer.history[0]["val_loss"]

    # callbacks
    assert counter.calls["on_fit_start"] == 1 and counter.calls["on_fit_end"] == 1
    assert counter.calls["on_epoch_end"] == len(trainer.history)
    assert counter.records == trainer.history
    epochs_with_growth = {e.epoch for e in log}
    assert counter.calls["on_growth"] == len(epochs_with_growth) >= 1
    assert counter.growth_events == log
    for hidden, epoch in zip(counter.hidden_at_growth, sorted(epochs_with_growth)):
        if epoch == -1:  # the check at the start, before the first epoch's record
            assert hidden == list([e for e in log if e.epoch == -1][-1].hidden_after)
        else:
            assert hidden == trainer.history[epoch]["hidden"]


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from senn_automl.training.trainer import load_checkpoint
    d = sys.argv[1]
    tr = load_checkpoint(d + "/ckpt", device="cpu")
    X = torch.load(d + "/inputs.pt")
    tr.model.eval()
    with torch.no_grad():
        out = tr.model(X)
    torch.save(out, d + "/child_out.pt")
    sd = tr.optimizer.state_dict()
    torch.save(sd, d + "/child_opt.pt")
    info = {
        "hidden": tr.model.hidden, "epoch": tr.epoch, "n_history": len(tr.history),
        "n_growth": len(tr.growth_log), "policy": type(tr.policy).__name__,
        "state_keys": sorted(int(k) for k in sd["state"]),
        "per_param_keys": {str(k): sorted(v) for k, v in sd["state"].items()},
        "group_params": sd["param_groups"][0]["params"],
    }
    data = np.load(d + "/data.npz")
    tr.fit(data["Xtr"], data["ytr"], data["Xv"], data["yv"], epochs=2)
    info["epoch_after"] = tr.epoch
    info["n_history_after"] = len(tr.history)
    info["val_loss_after"] = tr.history[-1]["val_loss"]
    info["n_params_after"] = tr.model.n_params()
    info["opt_keys_after"] = sorted(tr.optimizer.state_dict()["state"])
    info["n_params_model_after"] = len(list(tr.model.parameters()))
    print(json.dumps(info))
    """
)


def test_checkpoint_round_trip_in_fresh_process(grown, digits, tmp_path):
    trainer, _ = grown
    assert len(trainer.growth_log) > 0
    Xtr, ytr, Xv, yv = digits
    path = trainer.save_checkpoint(tmp_path / "ckpt")
    assert (path / "state.pt").is_file() and (path / "arch.json").is_file()
    meta = json.loads((path / "arch.json").read_text())
    assert meta["spec"]["hidden"] == trainer.model.hidden
    X = 3 * torch.randn(40, 64, generator=torch.Generator().manual_seed(5))
    torch.save(X, tmp_path / "inputs.pt")
    np.savez(tmp_path / "data.npz", Xtr=Xtr, ytr=ytr, Xv=Xv, yv=yv)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(X)
    saved_opt = trainer.optimizer.state_dict()

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])

    out = torch.load(tmp_path / "child_out.pt")
    assert torch.equal(out, expected)
    assert info["hidden"] == trainer.model.hidden
    assert info["epoch"] == trainer.epoch
    assert info["n_history"] == len(trainer.history)
    assert info["n_growth"] == len(trainer.growth_log)
    assert info["policy"] == "NaturalExpansionPolicy"
    # same optimiser state keys, per-parameter keys and values
    assert info["state_keys"] == sorted(saved_opt["state"])
    assert info["per_param_keys"] == {str(k): sorted(v) for k, v in saved_opt["state"].items()}
    assert info["group_params"] == saved_opt["param_groups"][0]["params"]
    child_opt = torch.load(tmp_path / "child_opt.pt")
    for k, st in saved_opt["state"].items():
        for key, val in st.items():
            assert torch.equal(child_opt["state"][k][key], val), (k, key)
    # continued training
    assert info["epoch_after"] == trainer.epoch + 2
    assert info["n_history_after"] == len(trainer.history) + 2
    assert np.isfinite(info["val_loss_after"])
    assert info["n_params_after"] >= trainer.model.n_params()
    assert info["opt_keys_after"] == list(range(info["n_params_model_after"]))


def test_load_checkpoint_missing_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.pt not found: not a senn_automl checkpoint directory"):
        load_checkpoint(tmp_path)


def _two_checkpoints(grown, tmp_path):
    """The grown trainer saved as checkpoint_000001, then after one more epoch as checkpoint_000002."""
    import copy

    trainer, _ = grown
    older = trainer.save_checkpoint(tmp_path / "checkpoint_000001")
    newer = tmp_path / "checkpoint_000002"
    shutil.copytree(older, newer)
    meta = json.loads((newer / "arch.json").read_text())
    meta["history"] = meta["history"] + [copy.deepcopy(meta["history"][-1])]
    (newer / "arch.json").write_text(json.dumps(meta))
    return trainer, older, newer


@pytest.mark.parametrize("damage", ["truncated state.pt", "garbage state.pt", "broken arch.json", "spec wider than the weights"])
def test_damaged_checkpoint_raises_naming_the_file_and_falls_back(grown, tmp_path, damage):
    """A damaged newest checkpoint: load_checkpoint names the file and the fix (no raw torch/JSON
    error), and load_newest_checkpoint continues from the intact earlier one."""
    from senn_automl.training.trainer import CheckpointError, load_newest_checkpoint

    trainer, older, newer = _two_checkpoints(grown, tmp_path)
    if damage == "truncated state.pt":
        data = (newer / "state.pt").read_bytes()
        (newer / "state.pt").write_bytes(data[: len(data) // 2])
        match = rf"^{re.escape(str(newer / 'state.pt'))} cannot be read \(.+\): the checkpoint is damaged; use an earlier"
    elif damage == "garbage state.pt":  # not a zip: torch's weights-only unpickler raises UnpicklingError / KeyError
        (newer / "state.pt").write_bytes(b"\x80\x02}q\x00garbage" * 10)
        match = rf"^{re.escape(str(newer / 'state.pt'))} cannot be read \(.+\): the checkpoint is damaged; use an earlier"
    elif damage == "broken arch.json":
        (newer / "arch.json").write_text('{"format": 1, "spec": ')
        match = rf"^{re.escape(str(newer / 'arch.json'))} is not valid JSON \(.+\): the checkpoint is damaged"
    else:
        meta = json.loads((newer / "arch.json").read_text())
        meta["spec"]["hidden"] = [h + 3 for h in meta["spec"]["hidden"]]
        (newer / "arch.json").write_text(json.dumps(meta))
        match = (rf"^{re.escape(str(newer / 'state.pt'))} does not fit the network of {re.escape(str(newer / 'arch.json'))} "
                 r"\(.+\): the two files come from different checkpoints")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(newer, device="cpu")
    restored, used, skipped = load_newest_checkpoint([newer, older], device="cpu")
    assert used == older and len(skipped) == 1 and str(newer) in skipped[0]
    assert restored.model.hidden == trainer.model.hidden and restored.epoch == trainer.epoch
    with pytest.raises(CheckpointError, match=re.escape(str(newer))):  # none intact: the newest one's error
        load_newest_checkpoint([newer], device="cpu")


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_determinism_by_seed(digits):
    Xtr, ytr, Xv, yv = digits
    runs = []
    for seed in (0, 0, 1):
        tr = Trainer(_model(0), _policy(), _config(max_epochs=4, seed=seed))
        tr.fit(Xtr, ytr, Xv, yv)
        runs.append(tr)
    a, b, c = runs
    assert len(a.growth_log) > 0
    assert a.history == b.history
    assert [e.to_dict() for e in a.growth_log] == [e.to_dict() for e in b.growth_log]
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history != c.history
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in c.history]


def test_growth_timing_excludes_the_callbacks_of_the_check_at_start(digits):
    """timings['growth'] is the policy's time: the check on the untrained network is timed before its
    callbacks run (model logging in MLflowCallback is not growth-check time), as every later check is."""
    Xtr, ytr, Xv, yv = digits

    class Seen(Callback):
        def __init__(self):
            self.at_growth: list[tuple[int, float]] = []

        def on_growth(self, trainer, events):
            self.at_growth.append((events[0].epoch, trainer.timings["growth"]))

    seen = Seen()
    tr = Trainer(_model(0), _policy(accept_on="scoring"), _config(max_epochs=1), [seen])
    tr.fit(Xtr, ytr, Xv, yv)
    assert seen.at_growth and seen.at_growth[0][0] == -1  # the check at the start grew
    assert seen.at_growth[0][1] > 0.0  # its time was already counted when the callbacks ran


def test_restored_epoch_of_a_checkpoint_whose_best_snapshot_has_no_epoch(digits, tmp_path):
    """A checkpoint written before best-model snapshots stored their epoch: the restored epoch is
    found in the history by the snapshot's monitored key, so the final model is still tagged right."""
    Xtr, ytr, Xv, yv = digits
    tr = Trainer(_model(0), _policy(), _config(max_epochs=8, restore_best=True, lr=0.1))
    tr.fit(Xtr[:150], ytr[:150], Xv, yv)
    assert tr.restored_epoch == min(tr.history, key=lambda r: r["val_loss"])["epoch"]
    tr.save_checkpoint(tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=True)
    del state["best"][1]["epoch"]
    torch.save(state, tmp_path / "ckpt" / "state.pt")
    resumed = load_checkpoint(tmp_path / "ckpt")
    resumed.fit(Xtr[:150], ytr[:150], Xv, yv)  # at max_epochs already: restores the best model again
    assert resumed.restored_epoch == tr.restored_epoch


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_epochs", 0),
        ("lr", -1),
        ("lr", 0),
        ("optimizer", "rmsprop"),
        ("patience", 0),
        ("batch_size", 0),
        ("max_epochs", 2.5),
        ("momentum", 1.0),
        ("weight_decay", -0.1),
        ("scoring_batch_size", 1),
        ("probe_tolerance", 0),
        ("lr", float("nan")),
    ],
)
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_accepts_good_values():
    cfg = TrainConfig(max_epochs=1, lr=1e-3, optimizer="sgd", patience=None, batch_size=1, device="cpu")
    assert cfg.optimizer == "sgd" and cfg.patience is None


def test_early_stopping_with_tiny_lr(digits):
    Xtr, ytr, Xv, yv = digits
    cfg = _config(max_epochs=20, lr=1e-12, patience=2, restore_best=True)
    tr = Trainer(_model(0), FixedPolicy(), cfg)
    tr.fit(Xtr[:300], ytr[:300], Xv, yv)
    assert tr.stopped_early
    # nothing can improve at lr=1e-12 (float32 weights do not move): stop right after `patience` epochs
    assert 3 <= len(tr.history) <= 5 < cfg.max_epochs
    assert tr.epoch == len(tr.history)
    best = min(r["val_loss"] for r in tr.history[:-2])
    assert all(r["val_loss"] >= best - 1e-12 for r in tr.history[-2:])
    assert tr.growth_log == []
    # a further fit call does not run more epochs once stopped
    tr.fit(Xtr[:300], ytr[:300], Xv, yv, epochs=3)
    assert len(tr.history) == tr.epoch


def test_warm_checks_continue_from_the_previous_checks_pools(digits):
    """With ``warm_checks`` a check starts from the pools the previous check left: with
    ``refine_steps=0`` and nothing accepted (huge tau) the second check's pools are the first's,
    layer candidate included; without it the second check starts afresh."""
    Xtr, ytr, Xv, yv = digits
    pools = {}
    for warm in (True, False):
        policy = _policy(tau=1e6, warm_checks=warm, refine_steps=0, candidate_batch_size=128)
        tr = Trainer(_model(0), policy, _config(max_epochs=10, seed=0))
        tr.fit(Xtr, ytr, Xv, yv, epochs=3)  # one check after epoch 2
        first = policy._starts
        tr.fit(Xtr, ytr, Xv, yv, epochs=2)  # the second check after epoch 4
        second = policy._starts
        assert not tr.growth_log and first.pools and first.layers
        pools[warm] = ((first.pools, first.layers), (second.pools, second.layers))
    (f0, f1), (s0, s1) = pools[True]
    assert all(torch.equal(f0[i].weight, s0[i].weight) for i in f0)
    for p in f1:  # the layer candidate's B is re-projected to a scaled orthogonal matrix: same up to rounding
        torch.testing.assert_close(f1[p].weight, s1[p].weight, rtol=1e-5, atol=1e-6)
    (f0, _), (s0, _) = pools[False]
    assert not any(torch.equal(f0[i].weight, s0[i].weight) for i in f0)


class _ProposalLog(NaturalExpansionPolicy):
    """The natural policy, recording the kinds of every proposal round's candidates per check."""

    def propose(self, *args, **kwargs):
        sc, proposals = super().propose(*args, **kwargs)
        self.rounds = getattr(self, "rounds", [])
        self.rounds.append((self._checks, sorted({c.kind for _, _, c in proposals})))
        return sc, proposals


@pytest.mark.parametrize("layer_cost", [1e9, 1.0])
def test_a_check_that_proposes_layers_starts_the_depth_cooldown(digits, layer_cost):
    """``depth_cooldown=2``, a check every epoch: layers are proposed at checks 0, 3, 6 and
    neurons only in between, whether no layer can pass (huge ``layer_cost``) or one is
    inserted; after an insertion the check's next rounds propose neurons only."""
    Xtr, ytr, Xv, yv = digits
    policy = _policy(_ProposalLog, expansion_interval=1, min_gap=0, depth_cooldown=2, layer_cost=layer_cost, tau=1e-4,
                     check_at_start=False)
    torch.manual_seed(0)
    tr = Trainer(GrowingMLP(64, 10, (4,), max_width=16, max_depth=4), policy, _config(max_epochs=8, seed=0))
    tr.fit(Xtr, ytr, Xv, yv)
    assert [check for check, _ in policy.rounds][-1] == 6  # 7 checks: after epochs 0..6
    first_round = {}
    for i, (check, _) in enumerate(policy.rounds):
        first_round.setdefault(check, i)
    with_layers = [i for i, (_, kinds) in enumerate(policy.rounds) if "layer" in kinds]
    assert with_layers == [first_round[check] for check in (0, 3, 6)]
    inserted = [e.epoch for e in tr.growth_log if e.kind == "layer"]
    if layer_cost > 1e6:
        assert not inserted
    else:
        assert inserted and set(inserted) <= {0, 3, 6} and len(set(inserted)) == len(inserted)


def test_run_resumed_from_a_checkpoint_grows_like_one_continued_in_memory(digits, tmp_path):
    """A checkpoint keeps everything the growth depends on, the warm candidate pools included: a
    run saved after its first check, reloaded and continued adds the same units with the same
    weights as the same run continued in memory (with the pools dropped from the checkpoint,
    the later checks start from random candidates and grow differently)."""
    from senn_automl.training.trainer import load_checkpoint

    Xtr, ytr, Xv, yv = digits

    def start():
        policy = _policy(min_gap=0, max_additions=2, refine_steps=3)
        return Trainer(_model(0), policy, _config(max_epochs=8)).fit(Xtr, ytr, Xv, yv, epochs=3)

    in_memory = start()
    saved = start()
    assert saved.growth_log and saved.policy.tensor_state()  # the check after epoch 2 left pools
    saved.save_checkpoint(tmp_path / "ckpt")
    in_memory.fit(Xtr, ytr, Xv, yv)
    resumed = load_checkpoint(tmp_path / "ckpt").fit(Xtr, ytr, Xv, yv)
    assert len(in_memory.growth_log) > len(saved.growth_log)  # the later checks grew too
    assert [e.to_dict() for e in resumed.growth_log] == [e.to_dict() for e in in_memory.growth_log]
    for a, b in zip(resumed.model.state_dict().values(), in_memory.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("accept_on,relative_to", [("scoring", "total"), ("validation", "total"), ("validation", "layer")])
def test_greedy_neuron_additions_equal_re_collected_statistics(digits, accept_on, relative_to):
    """Every neuron a check adds, the first and the greedy further ones, is scored and tested
    against the statistics of the network as it is just before that addition: its recorded Δη'
    (scoring batch) or debiased held-out Δη', η and ratio equal the ones collected from scratch
    on a copy of that network."""
    import copy

    from senn_automl.models.mlp import rational
    from senn_automl.scores.curvature import collect_kfac, delta_eta_heldout, delta_eta_lower_bound, eta_heldout, residual

    Xtr, ytr, Xv, yv = (torch.as_tensor(a) for a in digits)
    torch.manual_seed(0)
    model = GrowingMLP(64, 10, (4,), max_width=16, max_depth=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(Xtr), ytr).backward()
        opt.step()
    policy = _policy(tau=1e-4, alpha=1e-7, grow_depth=False, max_additions=5, accept_on=accept_on, relative_to=relative_to)
    before = []

    def apply(edit, check=True):
        before.append(copy.deepcopy(model))
        return apply_edit(model, edit, probe=Xtr[:128], optimizer=opt)

    X, y = Xtr[:512], ytr[:512]
    events = policy.grow(model, GrowthContext(X, y, epoch=0, apply=apply, X_val=Xv, y_val=yv, generator=torch.Generator().manual_seed(0)))
    assert len(events) == 5 and all(e.kind == "neuron" and e.where == 0 for e in events)
    Xh, yh = (Xv, yv) if accept_on == "validation" else (X, y)
    for event, m in zip(events, before):
        stats = collect_kfac(m, Xh, yh, damping=policy.damping, fisher=policy.fisher)
        held = stats.layers[1]
        eta = eta_heldout(stats) if accept_on == "validation" else stats.eta
        ref = eta if relative_to == "total" else eta_heldout(stats, 1)
        if accept_on == "validation":
            ref = max(ref, policy.alpha * stats.lam)
        lin, act = model.linears[0], model.activations[0]
        j = m.hidden[0]  # the added neuron's index in the grown model
        with torch.no_grad():
            f = rational(Xh.double() @ lin.weight[j : j + 1].double().T + lin.bias[j].double(), act.v[j : j + 1].double(),
                         act.c[j : j + 1].double(), act.l[j : j + 1].double())
        if accept_on == "validation":
            expected = delta_eta_heldout(f, residual(held), held.G_inv, policy.damping)
        else:
            expected = float(delta_eta_lower_bound(f, residual(held), held.G_inv, policy.damping))
        # to float32 rounding: the wider layer's forward pass sums in another order
        assert event.score == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert event.eta == pytest.approx(eta, rel=1e-6)
        assert event.ratio == pytest.approx(expected / ref, rel=1e-6)


class _SeesRows(FixedPolicy):
    """Grows nothing; keeps the rows each growth check is given."""

    def grow(self, model, ctx):
        self.seen = (ctx.X.clone(), ctx.y.clone(), ctx.X_val.clone(), ctx.y_val.clone())
        return []


def test_sample_weight_draws_growth_rows_by_weight_and_weighs_validation(digits):
    X, y, Xv, yv = digits
    w = np.where(y < 5, 1.0, 0.0)  # training: digits 5..9 count for nothing
    wv = np.where(yv % 2 == 0, 3.0, 0.0)  # validation: only even digits count
    policy = _SeesRows(expansion_interval=1)
    trainer = Trainer(_model(), policy, _config(max_epochs=2)).fit(X, y, Xv, yv, sample_weight=w, val_sample_weight=wv)
    Xs, ys, Xvs, yvs = policy.seen
    assert len(ys) == 512 and int(ys.max()) < 5  # scoring rows drawn from weighted rows only
    assert len(yvs) == len(yv) and bool((yvs % 2 == 0).all())
    # history's validation figures are the weighted means: those of the even rows alone
    loss, acc = trainer.evaluate(torch.tensor(Xv[yv % 2 == 0]), torch.tensor(yv[yv % 2 == 0]))
    assert trainer.history[-1]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert trainer.history[-1]["val_acc"] == pytest.approx(acc, rel=1e-6)
    # classes 5..9 were never trained: the net predicts them far less often than 0..4
    assert (trainer.model(torch.tensor(Xv)).argmax(1) >= 5).float().mean() < 0.1


@pytest.mark.parametrize(
    ("weight", "match"),
    [(np.ones(3), r"sample_weight has shape \(3,\), expected \(1200,\)"),
     (np.full(1200, -1.0), r"sample_weight has 1200 negative value\(s\)"),
     (np.zeros(1200), r"sample_weight is zero for every row")],
)
def test_trainer_rejects_bad_sample_weight(digits, weight, match):
    X, y, Xv, yv = digits
    with pytest.raises(ValueError, match=match):
        Trainer(_model(), None, _config(max_epochs=1)).fit(X, y, Xv, yv, sample_weight=weight)


def test_reconfigure_puts_new_growth_settings_and_lr_in_force_after_a_restore(grown, tmp_path):
    """Population-based training explores between a checkpoint and its restore: the restored trainer
    must use the new tau, alpha and lr, and keep the network, optimiser moments and policy state."""
    from senn_automl.training.config import reconfigure

    trainer, _ = grown
    trainer.save_checkpoint(tmp_path / "ckpt")
    restored = load_checkpoint(tmp_path / "ckpt", device="cpu")
    conf = {"policy": "natural", **{k: v for k, v in restored.policy.config().items() if k != "policy"},
            "lr": restored.config.lr}
    assert reconfigure(restored, conf) == {}  # the checkpoint's own settings: nothing changes
    state_before = restored.policy.state_dict()
    moments = {k: v["exp_avg"].clone() for k, v in restored.optimizer.state_dict()["state"].items()}
    changed = reconfigure(restored, {**conf, "tau": conf["tau"] * 2, "alpha": conf["alpha"] / 2, "lr": 0.0123})
    assert set(changed) == {"tau", "alpha", "lr"} and changed["lr"] == (trainer.config.lr, 0.0123)
    assert restored.policy.tau == pytest.approx(conf["tau"] * 2) and restored.policy.alpha == pytest.approx(conf["alpha"] / 2)
    assert restored.config.lr == 0.0123 and {g["lr"] for g in restored.optimizer.param_groups} == {0.0123}
    assert restored.policy.state_dict() == state_before and restored.model.hidden == trainer.model.hidden
    after = restored.optimizer.state_dict()["state"]
    assert all(torch.equal(after[k]["exp_avg"], m) for k, m in moments.items())
    with pytest.raises(ValueError, match=r"^policy='fixed' differs from the checkpoint's 'natural': a restored trainer keeps"):
        reconfigure(restored, {**conf, "policy": "fixed"})


def test_the_check_at_start_grows_the_untrained_network_once(digits, tmp_path):
    """``check_at_start`` (the natural policy's default): one check before the first epoch, its
    events at epoch -1, function-preserving, in the first record's size and timed as growth; it
    does not start the ``min_gap`` wait, and neither a second ``fit`` call nor a resumed
    checkpoint repeats it. Off: no event before the first epoch."""
    from senn_automl.training.trainer import load_checkpoint

    Xtr, ytr, Xv, yv = digits
    assert NaturalExpansionPolicy().check_at_start is True
    start = _model(0).n_params()
    policy = _policy(min_gap=5, expansion_interval=1)
    tr = Trainer(_model(0), policy, _config(max_epochs=6)).fit(Xtr, ytr, Xv, yv, epochs=2)
    at_start = [e for e in tr.growth_log if e.epoch == -1]
    assert at_start and at_start == tr.growth_log[: len(at_start)]
    assert [e.step for e in at_start] == list(range(len(at_start)))
    assert all(e.max_abs_diff <= 1e-4 for e in at_start)
    assert at_start[0].params_before == start and tr.history[0]["n_params"] >= at_start[-1].params_after > start
    assert tr.timings["growth"] > 0
    # min_gap=5 would have blocked the check after epoch 0 had the check at the start begun the wait
    assert any(e.epoch == 0 for e in tr.growth_log) and policy._last_event_epoch >= 0
    tr.save_checkpoint(tmp_path / "ckpt")
    tr.fit(Xtr, ytr, Xv, yv, epochs=2)
    resumed = load_checkpoint(tmp_path / "ckpt").fit(Xtr, ytr, Xv, yv)
    for t in (tr, resumed):
        assert [e for e in t.growth_log if e.epoch == -1] == at_start

    off = Trainer(_model(0), _policy(check_at_start=False), _config(max_epochs=3)).fit(Xtr, ytr, Xv, yv)
    assert all(e.epoch >= 0 for e in off.growth_log) and off.history[0]["n_params"] == start
    with pytest.raises(ValueError, match="check_at_start='yes' is invalid: use True or False"):
        _policy(check_at_start="yes")


@pytest.mark.parametrize("key", ["restore_best", "augment", "progress", "grow_width", "grow_depth", "prune_existing",
                                 "warm_checks", "check_at_start"])
def test_boolean_settings_refuse_anything_but_a_bool(key):
    """A flag given as 'maybe' (e.g. `--set grow_width=maybe`) is refused, naming it, not read as truthy."""
    from senn_automl.training import config as cfgmod

    with pytest.raises(ValueError, match=rf"{key}='maybe' is invalid: use True or False"):
        cfgmod.build(cfgmod.resolve(**{key: "maybe"}), 4, 3)
    with pytest.raises(ValueError, match=rf"{key}=1 is invalid: use True or False"):
        cfgmod.build(cfgmod.resolve(**{key: 1}), 4, 3)
    cfgmod.build(cfgmod.resolve(**{key: False}), 4, 3)


def test_set_reads_none_as_python_spells_it():
    """The error messages say "use None (...)": `--set prune_after=None` gives None, as null does."""
    from senn_automl.cli import parse_overrides

    assert parse_overrides(["prune_after=None", "patience=null", "tau=1e-4", "accept_on=scoring"]) == {
        "prune_after": None, "patience": None, "tau": 1e-4, "accept_on": "scoring"}


def test_weight_decay_auto_is_one_default_for_every_entry_point():
    """`senn-automl fit`, the Tune trainable and the estimators build from one config: its
    ``weight_decay="auto"`` is the official SENN value (1e-3) for the MLP and 0 for the CNN and the
    EdgeMLP, a number is kept, and another string is refused with the fix."""
    from senn_automl.training import config as cfgmod

    assert cfgmod.resolve()["weight_decay"] == "auto"
    assert cfgmod.build({}, 64, 10)[2].weight_decay == cfgmod.AUTO_WEIGHT_DECAY == 1e-3
    assert cfgmod.build({"policy": "secnn"}, 64, 10, (1, 8, 8))[2].weight_decay == 0.0
    assert cfgmod.build({"policy": "edges"}, 64, 10)[2].weight_decay == 0.0
    assert cfgmod.build({"weight_decay": 0.0}, 64, 10)[2].weight_decay == 0.0
    assert cfgmod.build({"policy": "secnn", "weight_decay": 1e-4}, 64, 10, (1, 8, 8))[2].weight_decay == 1e-4
    with pytest.raises(ValueError, match=r"weight_decay='big' is invalid: use 'auto' or a number >= 0"):
        cfgmod.build({"weight_decay": "big"}, 64, 10)

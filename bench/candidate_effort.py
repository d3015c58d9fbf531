"""Candidate search effort: the score of the searched candidates against ascent steps and P.

    python bench/candidate_effort.py                          # digits, natural policy defaults, seeds 0-2
    python bench/candidate_effort.py --dataset mnist --epochs 40 --seeds 0 \\
        --set accept_on=scoring --set max_width=128 --set max_depth=1 --set weight_decay=1e-3 --set tau=0.01

What the growth checks' cost buys. Each seed runs one growing fit (natural policy, the config
overrides given). In every proposal round of every check, after the run's own candidate searches
(left as they are, so the run grows as it would without this benchmark), each search is repeated
from the same start with other efforts, on its own random generator:

- **cold** searches (from random: the first check, or after a layer insertion or a prune):
  ``candidate_steps`` in ``--cold-steps`` (default 25, 50, 100), and for neuron candidates also
  ``n_candidates`` P in ``--candidates`` (default 16, 32, 100) at the policy's ``candidate_steps``;
- **warm** searches (from the previous round's or check's pool): ``refine_steps`` in
  ``--warm-steps`` (default 0, 5, 10, 20).

Each result is scored as the policy scores it before accepting: the debiased held-out Δη'
(``accept_on="validation"``) or the scoring-batch Δη' (``accept_on="scoring"``), divided by the
layer cost for a layer candidate, and expressed as a fraction of the acceptance level ``τ·η``
(1.0: just passes the relative threshold). Reported per kind (``neuron``, or ``layer@p`` for a
layer inserted before linear layer p), start, P and steps: the number of searches, the mean
score, its mean as a fraction of the acceptance level, the share that would pass, and the mean
wall time of one search (ms, one thread). Writes ``candidate_effort_<dataset>.{csv,json,png}`` to
``--out``; the JSON also keeps every repeated search and each run's growth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import add_common_args, report, setup

from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.scores.candidates import best_neuron_candidate, layer_candidate, starts_from
from senn_automl.scores.tasks import CLASSIFICATION


@dataclass
class _EffortProbe(NaturalExpansionPolicy):
    """The natural policy, unchanged, that also repeats each proposal round's candidate searches
    with the other efforts and appends their scores to ``records``."""

    cold_steps: tuple = (25, 50, 100)
    warm_steps: tuple = (0, 5, 10, 20)
    candidate_counts: tuple = (16, 32, 100)
    records: list = field(default_factory=list, repr=False)
    _proposals: int = field(default=0, repr=False)
    _searches: int = field(default=0, repr=False)

    def propose(self, model, X, y, X_val=None, y_val=None, generator=None, warm=None, layer_warm=None, depth=True, task=CLASSIFICATION):
        sc, proposals = super().propose(model, X, y, X_val, y_val, generator, warm, layer_warm, depth, task)
        for _, _, cand in proposals:
            self._repeat(cand, sc, warm or {}, layer_warm or {})
        self._proposals += 1
        return sc, proposals

    def _repeat(self, cand, sc, warm, layer_warm) -> None:
        neuron, where = cand.kind == "neuron", cand.where
        consumer = where + 1 if neuron else where  # the candidate's inputs are layer ``where``'s
        h, stats = sc.inputs[where], sc.stats.layers[consumer]
        init = (warm if neuron else layer_warm).get(where)
        start = "warm" if starts_from(init, h) else "cold"
        efforts = [(self.n_candidates, s) for s in (self.warm_steps if start == "warm" else self.cold_steps)]
        if neuron and start == "cold":
            efforts += [(p, self.candidate_steps) for p in self.candidate_counts if p != self.n_candidates]
        seed, self._searches = self._searches, self._searches + 1
        for p, steps in efforts:  # every effort of this search from the same start
            kw = dict(steps=steps, damping=self.damping, generator=torch.Generator(device=h.device).manual_seed(seed),
                      batch_rows=self.candidate_batch_size, init=init)
            t0 = time.perf_counter()
            found = best_neuron_candidate(h, stats, where, n_candidates=p, **kw) if neuron else layer_candidate(h, stats, where, **kw)
            ms = (time.perf_counter() - t0) * 1e3
            ratio, score, _ = self.rate(found, sc)  # as the policy tests it
            self.records.append({
                "kind": "neuron" if neuron else f"layer@{where}", "start": start, "P": p if neuron else None,
                "steps": steps, "check": self._checks, "proposal": self._proposals,
                "score": score, "of_level": ratio / self.tau, "ms": ms,
            })


def _summary(records: list[dict], policy) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["start"], r["P"], r["steps"]), []).append(r)
    rows = []
    for (kind, start, p, steps), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0, kv[0][3])):
        default_steps = policy.refine_steps if start == "warm" else policy.candidate_steps
        rows.append({
            "kind": kind, "start": start, "P": p, "steps": steps,
            "default": steps == default_steps and (p is None or p == policy.n_candidates),
            "searches": len(rs),
            "mean_score": statistics.fmean(r["score"] for r in rs),
            "mean_of_level": round(statistics.fmean(r["of_level"] for r in rs), 3),
            "pass_share": round(sum(r["of_level"] > 1 for r in rs) / len(rs), 3),
            "ms_per_search": round(statistics.fmean(r["ms"] for r in rs), 1),
        })
    return rows


def plot(rows: list[dict], path: Path, title: str, n_candidates: int) -> Path:
    """Two panels, cold and warm searches: mean score as a fraction of the acceptance level
    against ascent steps, one line per candidate kind (neurons: the policy's P), the default effort ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, start in zip(axes, ("cold", "warm")):
        shown = [r for r in rows if r["start"] == start and r["P"] in (None, n_candidates)]
        for kind in sorted({r["kind"] for r in shown}):
            rs = sorted((r for r in shown if r["kind"] == kind), key=lambda r: r["steps"])
            line, = ax.plot([r["steps"] for r in rs], [r["mean_of_level"] for r in rs], marker="o",
                            label=f"{kind} (n={rs[0]['searches']}; {rs[-1]['ms_per_search']:.0f} ms at {rs[-1]['steps']} steps)")
            for r in rs:
                if r["default"]:
                    ax.plot(r["steps"], r["mean_of_level"], marker="o", ms=13, mfc="none", color=line.get_color())
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.text(ax.get_xlim()[1], 1.0, "acceptance level τ·η ", ha="right", va="bottom", fontsize=8)
        ax.set_title(f"{start} searches ({'from random' if start == 'cold' else 'from the previous pool'})", fontsize=9)
        ax.set_xlabel("Adam ascent steps (ringed: the default)")
        ax.set_ylabel("mean score / acceptance level")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="set_", action="append", default=[], help="KEY=VALUE config override")
    ap.add_argument("--cold-steps", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--warm-steps", type=int, nargs="+", default=[0, 5, 10, 20])
    ap.add_argument("--candidates", type=int, nargs="+", default=[16, 32, 100], help="P of cold neuron searches")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)

    from senn_automl.cli import parse_overrides
    from senn_automl.data import load_dataset
    from senn_automl.training import config
    from senn_automl.training.trainer import Trainer

    overrides = parse_overrides(args.set_)
    records, runs, policy = [], [], None
    for seed in args.seeds:
        ds = load_dataset(args.dataset, seed=seed)
        conf = config.resolve(overrides, max_epochs=args.epochs, patience=None, restore_best=False, seed=seed,
                              device=str(device), progress=False)
        if conf["policy"] != "natural":
            ap.error(f"--set policy={conf['policy']} is invalid here: this benchmark measures the natural policy's candidate search")
        model, base, train = config.build(conf, ds.n_features, ds.n_classes, ds.image_shape)
        policy = _EffortProbe(**{f.name: getattr(base, f.name) for f in fields(base) if f.init and not f.name.startswith("_")},
                              cold_steps=tuple(args.cold_steps), warm_steps=tuple(args.warm_steps),
                              candidate_counts=tuple(args.candidates))
        tr = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
        records += [{**r, "seed": seed} for r in policy.records]
        runs.append({"seed": seed, "hidden": list(tr.model.hidden), "event_scores": [e.score for e in tr.growth_log],
                     "final_train_loss": tr.history[-1]["train_loss"]})
        print(f"seed {seed}: {len(tr.growth_log)} growth events, {len(policy.records)} repeated searches", flush=True)
    rows = _summary(records, policy)
    name = f"candidate_effort_{args.dataset}"
    report(name, rows, args.out, device=device, extra={"threads": args.threads, "config": overrides, "runs": runs, "records": records})
    title = (f"Candidate search effort, {args.dataset} (seeds {', '.join(map(str, args.seeds))}): "
             f"{'held-out' if policy.accept_on == 'validation' else 'scoring-batch'} Δη' of the searched candidate\n"
             f"(layer@p: a layer inserted before linear layer p, its score divided by the layer cost {policy.layer_cost:g})")
    png = plot(rows, args.out / f"{name}.png", title, policy.n_candidates)
    print(f"wrote {png}")
    return rows


if __name__ == "__main__":
    main()

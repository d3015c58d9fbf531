"""The Optuna side of a search: :class:`PruneAwareOptunaSearch` (Ray's ``OptunaSearch`` that tells
Optuna PRUNED for trials the scheduler stopped), the picklable :class:`OverriddenSpace`, and the
study bookkeeping of ``--resume`` (finished trials, trials left RUNNING by a killed driver)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from senn_automl.integrations.tune._internals import optuna_search_finished, optuna_search_study, optuna_search_trials

#: Optuna user attributes: the Tune trial id of an Optuna trial, and the mark of a trial failed
#: because the search was interrupted
TUNE_TRIAL_ATTR = "ray.trial_id"
INTERRUPTED_ATTR = "interrupted"
#: Optuna user attribute of a record made anew for a continued trial: the number of the record it supersedes
CONTINUES_ATTR = "continues"


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped early by the Tune scheduler as PRUNED.

    Plain OptunaSearch tells Optuna COMPLETE with the truncated value of an ASHA-stopped trial,
    which biases TPE. Here a trial counts as complete only when its last result has ``final == 1``
    (it trained to ``max_epochs``, or stopped by its own patience) or reached ``max_t``
    iterations. Works for single and multi-objective studies; results of trials that Optuna
    already finished (possible after a restore) are ignored. (Relies on OptunaSearch's private
    study, trial map and finished set, read through :mod:`senn_automl.integrations.tune._internals`.)

    ``space`` must be a define-by-run function for the adoption of orphaned trials after a restore;
    ``storage`` (an Optuna storage) and ``study_name`` are those of ``OptunaSearch``.
    """

    def __init__(self, space=None, *args, max_t: int, storage: optuna.storages.BaseStorage | None = None,
                 study_name: str | None = None, **kwargs):
        super().__init__(space, *args, storage=storage, study_name=study_name, **kwargs)
        self._max_t = int(max_t)
        self._define_by_run = callable(space)
        self._storage_for_adoption = storage
        self._study_name_for_adoption = study_name

    def restore(self, checkpoint_path: str):
        """Restore the pickled searcher, then list the study's orphaned RUNNING trials: trials a
        killed driver had asked Optuna for after Tune's last snapshot. New Tune trials adopt them
        (same parameters) before asking Optuna for more, so the study ends with ``num_samples``
        trials and none left RUNNING."""
        super().restore(checkpoint_path)
        study = optuna_search_study(self)
        known = {t.number for t in optuna_search_trials(self).values()}
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        self._adoptable = [t.number for t in running if t.number not in known]
        # the unpickled sampler's RNG is back at the snapshot: without a reseed it would replay the
        # samples drawn after it (the adopted trials' parameters) for the next new trials
        study.sampler.reseed_rng()

    def suggest(self, trial_id: str):
        adoptable = getattr(self, "_adoptable", None)
        trials = optuna_search_trials(self)
        if adoptable and self._define_by_run and self._storage_for_adoption is not None and trial_id not in trials:
            # re-running the define-by-run space on it returns the stored parameters
            storage = self._storage_for_adoption
            study_id = storage.get_study_id_from_name(self._study_name_for_adoption)
            storage_id = storage.get_trial_id_from_study_id_trial_number(study_id, adoptable.pop(0))
            trials[trial_id] = optuna.trial.Trial(optuna_search_study(self), storage_id)
        config = super().suggest(trial_id)
        trial = trials.get(trial_id)
        if trial is not None:  # None: the searcher is finished or waits for points to evaluate
            trial.set_user_attr(TUNE_TRIAL_ATTR, str(trial_id))
        return config

    def on_trial_result(self, trial_id, result):
        if trial_id in optuna_search_finished(self) and trial_id not in self.__dict__.get("_seen_here", ()):
            self._keep_late(trial_id, result)  # told before a restore, running again now
            return
        self._link_run(trial_id, result)
        # After Tuner.restore, a trial that Optuna already finished (told before the driver was
        # killed, but after Tune's last experiment snapshot) runs again from its checkpoint; its
        # intermediate values can no longer be stored, which must not fail the whole search.
        try:
            with warnings.catch_warnings():
                # a trial restarted from a checkpoint (or from scratch) reports epochs it reported before
                warnings.filterwarnings("ignore", message="The reported value is ignored because this", category=UserWarning)
                super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._keep_late(trial_id, result)

    def _link_run(self, trial_id, result) -> None:
        """Store the trial's MLflow run id (``result["mlflow_run_id"]``) as the Optuna trial's user
        attribute ``mlflow_run_id``, once."""
        run_id = (result or {}).get("mlflow_run_id")
        trial = optuna_search_trials(self).get(trial_id)
        if not run_id or trial is None or trial_id in optuna_search_finished(self):
            return
        linked = getattr(self, "_linked", set())
        if trial_id not in linked:
            try:
                trial.set_user_attr("mlflow_run_id", str(run_id))
            except optuna.exceptions.UpdateFinishedTrialError:  # finished in storage before a restore
                pass
            linked.add(trial_id)
            self._linked = linked

    @property
    def _late_values(self) -> dict[str, dict[int, float]]:
        """Tune trial id -> {step: value} reported after its Optuna trial was finished (a trial that
        a resume continues; see :meth:`_record_continued`)."""
        if not hasattr(self, "_late"):
            self._late: dict[str, dict[int, float]] = {}
        return self._late

    def _keep_late(self, trial_id: str, result: dict | None) -> None:
        """Keep a result's value for the record :meth:`_record_continued` makes at the trial's end
        (single-objective studies: multi-objective ones take no intermediate values)."""
        if isinstance(self.metric, str) and (result or {}).get(self.metric) is not None:
            self._late_values.setdefault(trial_id, {})[int(result["training_iteration"])] = float(result[self.metric])

    def _stopped_early(self, result: dict) -> bool:
        """The scheduler stopped the trial: its last result is not ``final`` and before ``max_t``."""
        return not result.get("final") and result.get("training_iteration", self._max_t) < self._max_t

    def save(self, checkpoint_path: str):
        """OptunaSearch's snapshot, without the ids of trials that completed in this process."""
        seen = self.__dict__.pop("_seen_here", None)
        try:
            super().save(checkpoint_path)
        finally:
            if seen is not None:
                self._seen_here = seen

    def _newest_record(self, trial_id: str) -> optuna.trial.FrozenTrial:
        """The newest Optuna record of a Tune trial (see :func:`live_records`)."""
        all_trials = optuna_search_study(self).get_trials(deepcopy=False)
        return newest_by_trial(all_trials).get(trial_id) or all_trials[optuna_search_trials(self)[trial_id].number]

    def on_trial_complete(self, trial_id, result=None, error=False):
        trials, finished = optuna_search_trials(self), optuna_search_finished(self)
        seen = self.__dict__.setdefault("_seen_here", set())  # completed in this process (not in snapshots)
        if trial_id in trials and trial_id not in seen:
            seen.add(trial_id)
            old = self._newest_record(trial_id)
            # A trial that a restored search ran again although Optuna had its outcome: FAILed as
            # interrupted by Ctrl-C, or told after Tune's last trial snapshot by a driver that was then
            # killed (the searcher's own snapshot may already list it as finished)
            if trial_id in finished or old.state.is_finished():
                self._record_continued(trial_id, old, result, error)
                finished.add(trial_id)
                return
        self._link_run(trial_id, result)
        if not error and result and self._stopped_early(result) and trial_id in trials and trial_id not in finished:
            # Tune hands the result that made the scheduler stop the trial to on_trial_complete only, not
            # to on_trial_result: report it, so the PRUNED value Optuna stores (its last intermediate
            # value) is the trial's last val_acc, as on the leaderboard, not the one before it
            # (multi-objective studies take no intermediate values)
            if isinstance(self.metric, str) and result.get(self.metric) is not None:
                try:
                    trials[trial_id].report(float(result[self.metric]), int(result["training_iteration"]))
                except optuna.exceptions.UpdateFinishedTrialError:  # finished in storage before a restore
                    pass
            # skip_if_finished: after a restore the trial may already be finished in storage
            optuna_search_study(self).tell(trials[trial_id], None, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            finished.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def _record_continued(self, trial_id: str, old: optuna.trial.FrozenTrial, result: dict | None, error: bool) -> None:
        """A trial whose Optuna trial was already finished when a resume continued it has ended
        (FAILed as interrupted by :func:`fail_running_trials`, or told by a killed driver after Tune's
        last snapshot; Optuna cannot reopen a finished trial): add its outcome as a new finished
        Optuna trial with the same parameters and ``ray.trial_id``, the intermediate values of both
        parts, the same state and value rules as any other trial (COMPLETE, PRUNED for a scheduler
        stop, FAIL for an error) and the user attribute ``continues`` (the old trial's number). The
        old record stays; the newest Optuna trial with a given ``ray.trial_id`` is that Tune trial's."""
        result = result or {}
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        intermediate = {**old.intermediate_values, **self._late_values.pop(trial_id, {})}
        if error or any(v is None for v in values):
            state, values = optuna.trial.TrialState.FAIL, None
        elif self._stopped_early(result):
            state, values = optuna.trial.TrialState.PRUNED, None
            if len(metrics) == 1:  # Optuna's value of a pruned trial: its last intermediate value
                intermediate[int(result["training_iteration"])] = float(result[metrics[0]])
                values = [float(result[metrics[0]])]
        else:
            state, values = optuna.trial.TrialState.COMPLETE, [float(v) for v in values]
        _add_record(optuna_search_study(self), old, state=state, values=values, mlflow_run_id=result.get("mlflow_run_id"),
                    intermediate=intermediate if len(metrics) == 1 else None)


def make_searcher(space, *, storage: optuna.storages.BaseStorage, study_name: str, seed: int, max_t: int,
                  multi_objective: bool, points_to_evaluate: list[dict[str, Any]] | None,
                  metric: str = "val_acc") -> PruneAwareOptunaSearch:
    """The searcher of a new Tune run: TPE (seeded), maximising ``metric`` (``val_acc``; ``val_r2``
    for regression; and minimising ``n_params`` when ``multi_objective``) in the study
    ``study_name`` of ``storage``. The study is created here (OptunaSearch loads it) so that its
    objectives carry their names (``val_acc``, ``n_params``) in Optuna's dashboard."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    if multi_objective:
        metric, mode = [metric, "n_params"], ["max", "min"]
    else:
        mode = "max"
    names = metric if isinstance(metric, list) else [metric]
    directions = ["maximize" if m == "max" else "minimize" for m in (mode if isinstance(mode, list) else [mode])]
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions, load_if_exists=True)
    if study.metric_names != names:
        with warnings.catch_warnings():  # "experimental since 3.2", unchanged through 5.1 (the pinned range)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return PruneAwareOptunaSearch(
        space, metric=metric, mode=mode, storage=storage, study_name=study_name, sampler=sampler, max_t=max_t,
        points_to_evaluate=points_to_evaluate,
    )


@dataclasses.dataclass(frozen=True)
class OverriddenSpace:
    """A define-by-run search space whose returned constants are updated with ``overrides``
    (picklable, like the space it wraps). Tune lets the searcher's values win over ``param_space``,
    so fixed overrides must come from the space itself."""

    space: Any
    overrides: tuple

    def __call__(self, trial):
        return {**(self.space(trial) or {}), **dict(self.overrides)}


def live_records(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that no later record supersedes (user attribute ``continues``: a resume recorded
    the same Tune trial anew); the newest record of a Tune trial is that trial's."""
    superseded = {t.user_attrs[CONTINUES_ATTR] for t in trials if CONTINUES_ATTR in t.user_attrs}
    return [t for t in trials if t.number not in superseded]


def newest_by_trial(trials: list[optuna.trial.FrozenTrial]) -> dict[str, optuna.trial.FrozenTrial]:
    """Tune trial id (user attribute ``ray.trial_id``) -> its newest Optuna record."""
    return {t.user_attrs[TUNE_TRIAL_ATTR]: t for t in live_records(trials) if TUNE_TRIAL_ATTR in t.user_attrs}


def _add_record(study: optuna.Study, old: optuna.trial.FrozenTrial, *, state, values, mlflow_run_id,
                intermediate) -> None:
    """Add a finished Optuna trial that supersedes ``old`` (same parameters and user attributes,
    ``continues=old.number``, not ``interrupted``; ``mlflow_run_id`` the run of the new outcome)."""
    attrs = {k: v for k, v in old.user_attrs.items() if k != INTERRUPTED_ATTR}
    if mlflow_run_id:
        attrs["mlflow_run_id"] = str(mlflow_run_id)
    attrs[CONTINUES_ATTR] = old.number
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params=old.params, distributions=old.distributions, user_attrs=attrs,
        intermediate_values=intermediate,
    ))


def _study_or_none(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study | None:
    """The study, or None when the storage has none of that name (not created yet, or a
    population-based search, which asks no Optuna study)."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None


def reconcile_with_leaderboard(storage: optuna.storages.BaseStorage, study_name: str, lb, multi_objective: bool,
                               metric: str = "val_acc") -> int:
    """Record anew (``continues``) every complete or pruned leaderboard row whose Tune trial's newest
    Optuna record has another state or value; returns how many. After a restore, Tune can run a
    trial again whose outcome Optuna already holds, and the completion of the rerun may never reach
    the searcher (Tune's concurrency limiter drops completions of trials its snapshot had closed);
    and a trial that finishes as the search's time budget runs out can be recorded complete by Tune
    while its Optuna trial is still RUNNING (and then pruned with the stopped ones). The
    leaderboard, built from what ran last, is then the truth."""
    study = _study_or_none(storage, study_name)
    if study is None:
        return 0
    newest = newest_by_trial(study.get_trials(deepcopy=False))
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
    added = 0
    for row in lb.itertuples():
        old = newest.get(row.trial)
        value = getattr(row, metric)
        if old is None or row.status not in states or value is None or value != value:
            continue
        values = [float(value), float(row.n_params)] if multi_objective else [float(value)]
        if old.state == states[row.status] and old.values is not None and \
                all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(old.values, values)):
            continue
        intermediate = None
        if not multi_objective:  # the row's epochs = its last step (training_iteration)
            step = int(row.epochs) if row.epochs == row.epochs and row.epochs else 1
            intermediate = {k: v for k, v in old.intermediate_values.items() if k < step}
            intermediate[step] = float(value)
        _add_record(study, old, state=states[row.status], values=values, mlflow_run_id=row.mlflow_run_id,
                    intermediate=intermediate)
        added += 1
    return added


def finished_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Number of COMPLETE or PRUNED trials of the study, superseded records not counted (0 when it
    does not exist)."""
    study = _study_or_none(storage, study_name)
    if study is None:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in live_records(study.get_trials(deepcopy=False)) if t.state in states)


def fail_running_trials(storage: optuna.storages.BaseStorage, study_name: str, *,
                        interrupted: set[str] | frozenset[str] = frozenset()) -> None:
    """Mark the study's RUNNING trials FAIL, so that no trial stays RUNNING when no one runs it.
    Those whose Tune trial id (user attribute ``ray.trial_id``) is in ``interrupted`` (trials a
    Ctrl-C stopped) also get the user attribute ``interrupted=True``: a ``--resume`` continues
    their Tune trials, and the searcher then records each outcome as a new Optuna trial."""
    study = _study_or_none(storage, study_name)
    if study is None:
        return
    study_id = storage.get_study_id_from_name(study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(TUNE_TRIAL_ATTR) in interrupted:
            storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                        INTERRUPTED_ATTR, True)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def prune_running_trials(storage: optuna.storages.BaseStorage, study_name: str, trial_ids: set[str]) -> None:
    """Tell PRUNED (Optuna's value: the last intermediate value) for the RUNNING trials of the Tune
    trials ``trial_ids``, stopped early by the search's time budget."""
    study = _study_or_none(storage, study_name)
    if study is None:
        return
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(TUNE_TRIAL_ATTR) in trial_ids:
            study.tell(t.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)


def running_trial_ids(storage: optuna.storages.BaseStorage, study_name: str) -> set[str]:
    """Tune trial ids (user attribute ``ray.trial_id``) of the study's unfinished trials: RUNNING,
    or FAILed as interrupted and not yet recorded anew (a resume that was interrupted again)."""
    study = _study_or_none(storage, study_name)
    if study is None:
        return set()
    return {tid for tid, t in newest_by_trial(study.get_trials(deepcopy=False)).items()
            if t.state == optuna.trial.TrialState.RUNNING or t.user_attrs.get(INTERRUPTED_ATTR)}

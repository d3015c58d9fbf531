"""Tests for senn_automl.integrations.tune.search_space: YAML search spaces → Optuna define-by-run functions (real Optuna, no mocks)."""

from __future__ import annotations

import ast
import math
import os
import pickle
import re
import tempfile
import textwrap
from pathlib import Path

import pytest

from senn_automl.integrations.tune.search_space import (
    SEARCH_SPACES_DIR,
    ParamSpec,
    SearchSpace,
    SearchSpaceError,
    bundled_search_spaces,
    load_search_space,
)
from senn_automl.training import config

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def check_trial_params(space: SearchSpace, params: dict) -> None:
    """Every active parameter is present and within its bounds; every inactive one is absent."""
    seen: dict = {}
    for spec in space.params:
        if spec.active(seen):
            assert spec.name in params, f"{spec.name} is active but was not suggested: {params}"
            value = params[spec.name]
            assert spec.contains(value), f"{spec.name}={value!r} outside {spec}"
            if spec.log:
                assert value > 0
            seen[spec.name] = value
        else:
            assert spec.name not in params, f"{spec.name} suggested although its condition {spec.when} fails: {params}"
    assert set(params) == set(seen)


# --------------------------------------------------------------------------- bundled files


def test_bundled_files_load():
    assert {"mlp", "quick"} <= set(bundled_search_spaces())
    mlp = load_search_space("mlp")
    quick = load_search_space("quick")
    assert mlp.path == (SEARCH_SPACES_DIR / "mlp.yaml").resolve()
    assert load_search_space(SEARCH_SPACES_DIR / "quick.yaml") == quick  # path form
    assert load_search_space(str(SEARCH_SPACES_DIR / "mlp.yaml")) == mlp
    assert mlp.name == "mlp" and mlp.description
    assert mlp.constants == {"max_epochs": 30, "patience": 10, "candidate_steps": 30, "n_candidates": 50}
    assert quick.constants == {"max_epochs": 40, "patience": None, "n_candidates": 16, "candidate_steps": 10}
    for name in ("policy", "tau", "alpha", "relative_to", "layer_cost", "expansion_interval", "depth_cooldown",
                 "max_width", "max_depth", "start_width", "lr", "weight_decay"):
        assert name in mlp.param_names
    specs = {p.name: p for p in mlp.params}
    assert specs["policy"].choices == ("natural", "fixed")
    assert specs["tau"].conditions == {"policy": ("natural",)} and specs["tau"].log
    assert specs["lr"].log and specs["weight_decay"].log
    # official SENN values lie inside the ranges
    for name, official in (("tau", 0.03), ("alpha", 2.5e-3), ("layer_cost", 20.0), ("expansion_interval", 10)):
        assert specs[name].contains(official), name
    assert len(quick.params) <= 6


@pytest.mark.parametrize("name", ["mlp", "quick"])
def test_sample_defaults_build(name):
    space = load_search_space(name)
    cfg = space.sample_defaults()
    assert cfg["policy"] == "natural" and "tau" in cfg
    for key, value in space.constants.items():
        assert cfg[key] == value
    check_trial_params(space, {k: v for k, v in cfg.items() if k not in space.constants})
    config.build(config.resolve(cfg), n_features=4, n_outputs=3)


def test_pickle_round_trip():
    for name in ("mlp", "quick"):
        space = load_search_space(name)
        back = pickle.loads(pickle.dumps(space))
        assert back == space and hash(back) == hash(space)
        assert back.sample_defaults() == space.sample_defaults()
    err = SearchSpaceError("f.yaml", "params.tau", "bad")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


class Captor:
    """Like Ray Tune's ``_OptunaTrialSuggestCaptor``: the trial config is what ``suggest_*`` returned,
    keyed by the first argument, plus the dict returned by the space function."""

    def __init__(self, trial):
        self.trial, self.captured = trial, {}

    def __getattr__(self, item):
        attr = getattr(self.trial, item)
        if not item.startswith("suggest_"):
            return attr

        def wrapper(*args, **kwargs):
            value = attr(*args, **kwargs)
            self.captured[kwargs.get("name", args[0])] = value
            return value

        return wrapper


@pytest.fixture
def db_dir(tmp_path):
    """A temporary folder for the sqlite file, in RAM when possible: every suggest is a commit,
    and the fsyncs make 30 trials take ~10 s on a disk against ~2 s in /dev/shm."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="senn_search_space_") as d:
            yield Path(d)
    else:
        yield tmp_path


@pytest.mark.parametrize("name, sqlite", [("mlp", True), ("quick", False)])
def test_optuna_define_by_run(db_dir, name, sqlite):
    """Real (sqlite) study, seeded TPE, 30 ask/tell rounds with the unpickled space."""
    tmp_path = db_dir
    space = pickle.loads(pickle.dumps(load_search_space(name)))
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/o.db" if sqlite else None,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8),
    )
    policies = set()
    for _ in range(30):
        trial = study.ask()
        captor = Captor(trial)
        constants = space(captor)
        assert constants == space.constants and constants is not space.constants
        params = dict(trial.params)
        assert captor.captured == params
        check_trial_params(space, params)
        if params["policy"] == "fixed":
            assert not {"tau", "alpha", "expansion_interval"} & set(params)
        policies.add(params["policy"])
        cfg = config.resolve({**params, **constants})  # unknown keys (typos) raise here
        config.build(cfg, n_features=4, n_outputs=3)  # every sampled value is valid for the policy/trainer/model
        study.tell(trial, -abs(math.log(params["lr"] / 3e-3)) + (0.1 if params["policy"] == "natural" else 0.0))
    assert policies == {"natural", "fixed"}
    if sqlite:  # the conditional parameters are stored per trial: another process sees the same study
        stored = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/o.db").trials
        assert len(stored) == 30 and all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
        for t in stored:
            check_trial_params(space, t.params)


def test_format_nested_and_int_conditions(tmp_path):
    """Conditions with lists, on int parameters, nested, booleans, steps, nulls (format for future policies)."""
    path = write(tmp_path, """
        params:
          policy:         {type: categorical, choices: [fixed, natural]}
          relative_to:    {type: categorical, choices: [total, layer], when: {policy: [natural]}}
          max_additions:  {type: categorical, choices: [null, 1, 2], when: {relative_to: layer}}
          grow_depth:     {type: categorical, choices: [true, false], when: {policy: natural}}
          max_depth:      {type: int, low: 1, high: 5, step: 2}
          depth_cooldown: {type: int, low: 0, high: 4, when: {max_depth: [3, 5], grow_depth: true}}
          damping:        {type: float, low: 1e-3, high: 0.5, log: true}
          momentum:       {type: float, low: 0.5, high: 0.9, step: 0.1}
        constants:
          optimizer: sgd
          start_depth: 1
    """)
    space = load_search_space(path)
    assert space.name == "space"
    specs = {p.name: p for p in space.params}
    assert specs["damping"].low == 1e-3 and isinstance(specs["damping"].low, float)  # 1e-4 style is a float
    assert specs["depth_cooldown"].when == (("max_depth", (3, 5)), ("grow_depth", (True,)))
    defaults = space.sample_defaults()
    assert defaults["policy"] == "fixed" and "relative_to" not in defaults and "depth_cooldown" not in defaults
    assert defaults["max_depth"] == 3 and defaults["momentum"] == pytest.approx(0.7)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        assert space(trial) == {"optimizer": "sgd", "start_depth": 1}
        params = trial.params
        check_trial_params(space, params)
        seen |= set(params)
        config.build(config.resolve({**params, **space.constants}), n_features=3, n_outputs=2)
        study.tell(trial, 0.0)
    assert seen == set(space.param_names)  # every conditional branch was reached


def test_param_spec_helpers():
    spec = ParamSpec("lr", "float", 1e-4, 1e-2, log=True)
    assert spec.midpoint() == pytest.approx(1e-3)
    assert spec.contains(5e-3) and not spec.contains(0.5) and not spec.contains("x")
    ispec = ParamSpec("max_depth", "int", 1, 5, step=2)
    assert ispec.contains(3) and not ispec.contains(2) and not ispec.contains(3.0)
    cat = ParamSpec("grow_depth", "categorical", choices=(True, False), when=(("policy", ("natural",)),))
    assert not cat.contains(1) and cat.contains(True)
    assert cat.active({"policy": "natural"}) and not cat.active({"policy": "fixed"}) and not cat.active({})


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="mlp.*quick") as info:
        load_search_space("nope")
    assert not isinstance(info.value, SearchSpaceError)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_search_space(tmp_path / "missing.yaml")


def test_module_imports_no_optuna_ray_mlflow():
    """Only yaml and the package core at import time (checked on the source: a subprocess would cost seconds)."""
    import senn_automl.integrations.tune.search_space as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module.split(".")[0])
    assert not imported & {"optuna", "ray", "mlflow", "torch", "sklearn"}, imported
    assert "yaml" in imported


# --------------------------------------------------------------------------- bad files

BASE = "  policy: {type: categorical, choices: [natural, fixed]}\n"

BAD_FILES = {
    "yaml_syntax": ("params:\n  tau: {type: float, low: 0.1\n", "line 3", "invalid YAML"),
    "duplicate_key": ("params:\n" + BASE + "  lr: {type: float, low: 0.1, high: 0.2}\n  lr: {type: float, low: 0.1, high: 0.3}\n",
                      "line 4", "duplicate key 'lr'"),
    "top_level_list": ("- policy\n- tau\n", "<top level>", "must be a mapping"),
    "empty_file": ("", "<top level>", "empty file"),
    "unknown_top_level": ("param:\n" + BASE, "param", "did you mean 'params'"),
    "missing_params": ("name: x\n", "params", "missing"),
    "unknown_param": ("params:\n  tua: {type: float, low: 0.01, high: 0.1}\n", "params.tua", "did you mean 'tau'"),
    "unknown_type": ("params:\n  tau: {type: real, low: 0.01, high: 0.1}\n", "params.tau.type", "unknown type 'real'"),
    "missing_type": ("params:\n  tau: {low: 0.01, high: 0.1}\n", "params.tau.type", "missing"),
    "unknown_field": ("params:\n  tau: {type: float, lo: 0.01, high: 0.1}\n", "params.tau.lo", "not a field of a float"),
    "missing_low": ("params:\n  tau: {type: float, high: 0.1}\n", "params.tau.low", "missing"),
    "missing_high": ("params:\n  tau: {type: float, low: 0.01}\n", "params.tau.high", "missing"),
    "missing_choices": ("params:\n  policy: {type: categorical}\n", "params.policy.choices", "missing"),
    "low_ge_high": ("params:\n  tau: {type: float, low: 0.3, high: 0.3}\n", "params.tau.low", "must be below high"),
    "log_low_zero": ("params:\n  weight_decay: {type: float, low: 0, high: 0.1, log: true}\n",
                     "params.weight_decay.low", "log scale needs low > 0"),
    "non_numeric_bound": ("params:\n  tau: {type: float, low: small, high: 0.1}\n", "params.tau.low", "not a finite number"),
    "int_non_whole": ("params:\n  expansion_interval: {type: int, low: 2.5, high: 10}\n",
                      "params.expansion_interval.low", "not a whole number"),
    "float_for_int_key": ("params:\n  expansion_interval: {type: float, low: 2, high: 10}\n",
                          "params.expansion_interval.type", "use type: int"),
    "numeric_for_name_key": ("params:\n  policy: {type: int, low: 0, high: 1}\n", "params.policy.type",
                             "use type: categorical"),
    "step_with_log": ("params:\n  lr: {type: float, low: 0.001, high: 0.1, log: true, step: 0.01}\n",
                      "params.lr.step", "cannot be combined with log"),
    "empty_choices": ("params:\n  policy: {type: categorical, choices: []}\n", "params.policy.choices", "is empty"),
    "bad_policy": ("params:\n  policy: {type: categorical, choices: [natural, grow]}\n", "params.policy.choices",
                   "'grow' is not a valid policy"),
    "bad_optimizer": ("params:\n  optimizer: {type: categorical, choices: [adam, rmsprop]}\n", "params.optimizer.choices",
                      "'rmsprop' is not a valid optimizer"),
    "bad_relative_to": ("params:\n  relative_to: {type: categorical, choices: [total, global]}\n",
                        "params.relative_to.choices", "'global' is not a valid relative_to"),
    "bad_weight_decay": ("constants:\n  weight_decay: heavy\nparams:\n" + BASE, "constants.weight_decay",
                         "expected 'auto' or a number (default 'auto')"),
    "int_for_bool_key": ("constants:\n  restore_best: 1\nparams:\n" + BASE, "constants.restore_best",
                         "expected a boolean"),
    "bad_fisher": ("params:\n  fisher: {type: categorical, choices: [exact]}\n", "params.fisher.choices",
                   "'exact' is not a valid fisher"),
    "bad_bool_choice": ("params:\n  grow_depth: {type: categorical, choices: [sometimes]}\n", "params.grow_depth.choices",
                        "expected a boolean"),
    "when_undefined": ("params:\n" + BASE + "  tau: {type: float, low: 0.01, high: 0.1, when: {polcy: natural}}\n",
                       "params.tau.when.polcy", "not a parameter defined earlier"),
    "when_later": ("params:\n  tau: {type: float, low: 0.01, high: 0.1, when: {policy: natural}}\n" + BASE,
                   "params.tau.when.policy", "defined after 'tau'"),
    "when_bad_value": ("params:\n" + BASE + "  tau: {type: float, low: 0.01, high: 0.1, when: {policy: natral}}\n",
                       "params.tau.when.policy", "'natral' is not among the choices of policy"),
    "when_bad_list_value": ("params:\n" + BASE + "  tau: {type: float, low: 0.01, high: 0.1, when: {policy: [natural, edges]}}\n",
                            "params.tau.when.policy", "'edges' is not among the choices"),
    "when_on_float": ("params:\n  lr: {type: float, low: 0.001, high: 0.1}\n"
                      "  tau: {type: float, low: 0.01, high: 0.1, when: {lr: 0.01}}\n", "params.tau.when.lr", "not supported"),
    "unknown_constant": ("constants:\n  max_epoch: 3\nparams:\n" + BASE, "constants.max_epoch", "did you mean 'max_epochs'"),
    "constant_also_searched": ("constants:\n  lr: 0.01\nparams:\n" + BASE + "  lr: {type: float, low: 0.001, high: 0.1}\n",
                               "constants.lr", "also a searched parameter"),
    "bad_constant_value": ("constants:\n  optimizer: rmsprop\nparams:\n" + BASE, "constants.optimizer",
                           "'rmsprop' is not a valid optimizer"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files(tmp_path, case):
    text, key, reason = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SearchSpaceError, match=re.escape(str(path.resolve()))) as info:
        load_search_space(path)
    err = info.value
    message = str(err)
    assert isinstance(err, ValueError)
    assert str(path.resolve()) in message and err.file == str(path.resolve())
    assert key in message and key in err.key, message
    assert reason in message and reason in err.reason, message


@pytest.mark.parametrize("value", ["auto", "1.0e-4", "0"])
def test_weight_decay_constant_takes_auto_or_a_number(tmp_path, value):
    """weight_decay's default is "auto" (1e-3 for the MLP, 0 otherwise), yet it is a number to search:
    a float range, a number or "auto" as a constant all load."""
    path = tmp_path / "wd.yaml"
    path.write_text(f"constants:\n  weight_decay: {value}\nparams:\n  lr: {{type: float, low: 1.0e-3, high: 1.0e-2}}\n",
                    encoding="utf-8")
    space = load_search_space(path)
    assert space.constants["weight_decay"] == (value if value == "auto" else float(value))

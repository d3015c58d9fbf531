"""Search spaces as data: a YAML file → an Optuna define-by-run function.

A search space file (bundled ones live in ``search_spaces/*.yaml`` at the repository root, installed as
``senn_automl.search_spaces``)::

    name: mlp                      # optional, defaults to the file name without .yaml
    description: ...               # optional free text
    constants:                     # optional: fixed values merged into every trial's config
      max_epochs: 30
      patience: 10                 # null is allowed (YAML null → None)
    params:                        # required, at least one; suggested in file order
      policy:   {type: categorical, choices: [natural, fixed]}
      tau:      {type: float, low: 0.005, high: 0.3, log: true, when: {policy: natural}}
      expansion_interval: {type: int, low: 2, high: 10, step: 2, when: {policy: natural}}
      relative_to: {type: categorical, choices: [total, layer], when: {policy: [natural]}}

Parameter types and their fields (no other fields are accepted):

* ``float``: ``low``, ``high`` (numbers, ``low < high``), ``log`` (bool, needs ``low > 0``),
  ``step`` (number > 0; not together with ``log``).
* ``int``: same fields, whole numbers; with ``step``, ``high - low`` must be a multiple of it.
* ``categorical``: ``choices``, a non-empty list of distinct scalars (str, int, float, bool, null).
* every type: ``when``, a mapping from names of parameters defined **earlier** in ``params`` to a
  value or a list of allowed values. The parameter is suggested only when every condition holds
  (the referenced parameter was suggested in this trial and its value is allowed), so ``tau``
  above does not exist in a ``fixed`` trial. Conditions may refer to categorical parameters (the
  values must be among their choices) or int parameters (values within their bounds).

Parameter and constant names are configuration keys (:data:`senn_automl.training.config.DEFAULTS`), so
new keys (``edge_metric``, ``pruning``, CNN block capacity, ...) become usable in files as soon as
they exist in ``DEFAULTS``; nothing here changes. Values of enumerated keys are checked
(``policy`` against :data:`senn_automl.growth.base.POLICIES`, ``optimizer`` against
:data:`senn_automl.training.trainer.OPTIMIZERS`, ``relative_to``, ``fisher``), as are value types against
the default's type (a ``float`` parameter for an integer key, a string for a boolean key, ...).
Numbers in scientific notation without a dot (``1e-4``) are read as floats (YAML 1.2 rule;
plain PyYAML would read a string). Duplicate keys are errors.

Every problem in a file raises :class:`SearchSpaceError` (a ``ValueError``) whose message is
``"<file>: <key>: <reason>"``, e.g. ``search_spaces/x.yaml: params.tau.low: log scale needs
low > 0, got 0``.

Use::

    space = load_search_space("mlp")           # bundled name, or a path to a .yaml file
    OptunaSearch(space, metric="val_acc", mode="max", ...)   # picklable define-by-run function
    config.resolve(space.sample_defaults())     # one mid-range configuration for smoke runs

Imports only PyYAML and the package core (Optuna is never imported: ``__call__`` only calls
methods of the trial it is given).
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from senn_automl.growth.base import POLICIES
from senn_automl.growth.edges import METRICS
from senn_automl.growth.natural import ACCEPT_ON, RELATIVE_TO
from senn_automl.growth.secnn import THRESHOLD_RULES
from senn_automl.growth.triggers import WHEN
from senn_automl.scores.candidates import CANDIDATE_STARTS
from senn_automl.scores.curvature import FISHERS
from senn_automl.scores.tasks import TASKS
from senn_automl.training import config
from senn_automl.training.trainer import MONITORS, OPTIMIZERS, PRECISIONS
from senn_automl.validation import is_real, is_whole

__all__ = [
    "ParamSpec",
    "SearchSpace",
    "SearchSpaceError",
    "SEARCH_SPACES_DIR",
    "bundled_search_spaces",
    "load_search_space",
    "parse_search_space",
]

#: Folder of the bundled search spaces: the repository's ``search_spaces/``, installed as the package
#: ``senn_automl.search_spaces`` (``pyproject.toml`` maps it) and found with :mod:`importlib.resources`,
#: so a checkout, an editable install and a wheel read the same files.
SEARCH_SPACES_DIR = Path(str(importlib.resources.files("senn_automl.search_spaces")))

TYPES = ("float", "int", "categorical")
_FIELDS = {
    "float": ("type", "low", "high", "log", "step", "when"),
    "int": ("type", "low", "high", "log", "step", "when"),
    "categorical": ("type", "choices", "when"),
}
_TOP_LEVEL = ("name", "description", "constants", "params")


def _enumerations() -> dict[str, tuple[Any, ...]]:
    """Allowed values of enumerated configuration keys (read live, so new policies are seen)."""
    return {
        "policy": tuple(POLICIES),
        "optimizer": tuple(OPTIMIZERS),
        "relative_to": RELATIVE_TO,
        "accept_on": ACCEPT_ON,
        "monitor": MONITORS,
        "precision": PRECISIONS,
        "fisher": FISHERS,
        "candidate_start": CANDIDATE_STARTS,
        "task": tuple(TASKS),
        "model": tuple(config.MODELS),
        "when": tuple(WHEN),
        "metric": METRICS,
        "threshold_rule": THRESHOLD_RULES,
    }


class SearchSpaceError(ValueError):
    """A search space file is invalid. ``file``, ``key`` (dotted, e.g. ``params.tau.low``) and
    ``reason`` are attributes; the message is ``"<file>: <key>: <reason>"``."""

    def __init__(self, file: str, key: str, reason: str):
        self.file, self.key, self.reason = str(file), key, reason
        super().__init__(f"{self.file}: {key}: {reason}")

    def __reduce__(self):
        return (type(self), (self.file, self.key, self.reason))


# --------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 floats (``1e-4``) and errors on duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# --------------------------------------------------------------------------- value helpers


def _same_key(v: Any) -> tuple[bool, Any]:
    # True == 1 in Python; keep booleans apart from numbers when comparing values
    return (isinstance(v, bool), v)


def _among(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(_same_key(value) == _same_key(a) for a in allowed)


def _suggest_names(name: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "valid names: " + ", ".join(sorted(valid))


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ParamSpec:
    """One searched configuration key.

    ``type`` is ``"float"``, ``"int"`` or ``"categorical"``; ``low``/``high``/``log``/``step``
    apply to numbers, ``choices`` to categoricals; ``when`` is a tuple of
    ``(earlier_param_name, allowed_values)`` pairs that must all hold for the parameter to exist.
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def conditions(self) -> dict[str, tuple[Any, ...]]:
        """``when`` as a dict: parameter name → allowed values."""
        return dict(self.when)

    def active(self, values: dict[str, Any]) -> bool:
        """Whether every condition holds for the parameters ``values`` suggested so far."""
        return all(name in values and _among(values[name], allowed) for name, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        """Suggest this parameter on an Optuna trial."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def midpoint(self) -> Any:
        """Middle of the range (geometric middle on a log scale, on the step grid) or the first choice."""
        if self.type == "categorical":
            return self.choices[0]
        low, high = self.low, self.high
        mid = math.sqrt(low * high) if self.log else (low + high) / 2
        if self.step:
            mid = min(high, low + round((mid - low) / self.step) * self.step)
        return int(round(mid)) if self.type == "int" else float(mid)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a possible suggestion of this parameter."""
        if self.type == "categorical":
            return _among(value, self.choices)
        if self.type == "int" and not is_whole(value):
            return False
        if not is_real(value) or not (self.low <= value <= self.high):
            return False
        if self.step and self.type == "int":
            return (value - self.low) % self.step == 0
        return True


@dataclass(frozen=True)
class SearchSpace:
    """A loaded search space; calling it on an Optuna trial is the define-by-run function.

    Picklable with standard pickle (needed by Ray Tune's ``OptunaSearch``): it is plain data.
    """

    name: str
    description: str
    path: Path | None
    params: tuple[ParamSpec, ...]
    constants: dict[str, Any]

    def __hash__(self) -> int:
        return hash((self.name, self.path, self.params))

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def __call__(self, trial: Any) -> dict[str, Any]:
        """Suggest the active parameters in file order; return a copy of the constants.

        (Optuna/Ray take the suggested values from ``trial.params`` and merge the returned
        constants into the trial's config.)
        """
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return dict(self.constants)

    def sample_defaults(self) -> dict[str, Any]:
        """One configuration for smoke runs: constants plus the midpoint / first choice of every
        parameter active under those values (see :meth:`ParamSpec.midpoint`)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.midpoint()
        return {**self.constants, **values}


# --------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, reason: str):
        raise SearchSpaceError(self.source, key, reason)

    def check_key(self, key: str, name: Any) -> None:
        if not isinstance(name, str):
            self.fail(key, f"names must be strings, got {name!r}")
        if name not in config.DEFAULTS:
            self.fail(key, f"unknown configuration key {name!r} (not in senn_automl.training.config.DEFAULTS); "
                      + _suggest_names(name, tuple(config.DEFAULTS)))

    def check_value(self, key: str, name: str, value: Any) -> None:
        """Check one value (a choice or a constant) of configuration key ``name``."""
        if value is None:
            return  # None is meaningful for some keys (patience, max_additions); the config validates
        if not isinstance(value, (str, int, float, bool)):
            self.fail(key, f"{value!r} is not a scalar (use a string, number, boolean or null)")
        enums = _enumerations()
        if name in enums:
            if not _among(value, enums[name]):
                self.fail(key, f"{value!r} is not a valid {name}; choose from: {', '.join(map(str, enums[name]))}")
            return
        named = config.DEFAULTS[name]
        if isinstance(named, str) and value == named:
            return  # a default given by name (weight_decay's "auto"); other values take the key's type
        default = config.typed_default(name)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "a boolean (true/false)"
        elif isinstance(default, int):
            ok, kind = is_whole(value), "a whole number"
        elif isinstance(default, float):
            ok, kind = is_real(value), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            return
        if not ok:
            if isinstance(named, str) and not isinstance(default, str):
                kind = f"{named!r} or {kind}"
            self.fail(key, f"{value!r} is not valid for {name}: expected {kind} (default {named!r})")

    def number(self, key: str, raw: dict, field: str, whole: bool) -> Any:
        if field not in raw or raw[field] is None:
            self.fail(f"{key}.{field}", f"missing: a {raw['type']} parameter needs numeric low and high")
        v = raw[field]
        if not is_real(v):
            self.fail(f"{key}.{field}", f"{v!r} is not a finite number")
        if whole and not is_whole(v):
            self.fail(f"{key}.{field}", f"{v!r} is not a whole number (int parameter)")
        return v

    def param(self, name: Any, raw: Any, earlier: dict[str, ParamSpec], all_names: list) -> ParamSpec:
        key = f"params.{name}"
        self.check_key(key, name)
        if not isinstance(raw, dict):
            self.fail(key, f"must be a mapping like {{type: float, low: 0.1, high: 1.0}}, got {raw!r}")
        typ = raw.get("type")
        if typ is None:
            self.fail(f"{key}.type", f"missing; use one of: {', '.join(TYPES)}")
        if typ not in TYPES:
            self.fail(f"{key}.type", f"unknown type {typ!r}; use one of: {', '.join(TYPES)}")
        for field in raw:
            if field not in _FIELDS[typ]:
                hint = _suggest_names(str(field), _FIELDS[typ])
                self.fail(f"{key}.{field}", f"not a field of a {typ} parameter ({hint})")
        default = config.typed_default(name)
        if typ != "categorical":
            if name in _enumerations() or isinstance(default, (str, bool)):
                self.fail(f"{key}.type", f"{name} takes {'booleans' if isinstance(default, bool) else 'names'} "
                          f"(default {default!r}); use type: categorical")
            if typ == "float" and is_whole(default):
                self.fail(f"{key}.type", f"{name} takes whole numbers (default {default!r}); use type: int")
        spec = self.numeric(key, name, typ, raw) if typ != "categorical" else self.categorical(key, name, raw)
        when = self.when(key, raw.get("when", None), earlier, all_names, name) if "when" in raw else ()
        return ParamSpec(**{**spec, "when": when})

    def numeric(self, key: str, name: str, typ: str, raw: dict) -> dict:
        whole = typ == "int"
        low, high = self.number(key, raw, "low", whole), self.number(key, raw, "high", whole)
        if low >= high:
            self.fail(f"{key}.low", f"low={low!r} must be below high={high!r}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{key}.log", f"{log!r} is not a boolean (true/false)")
        step = raw.get("step")
        if step is not None:
            if not is_real(step) or step <= 0 or (whole and not is_whole(step)):
                self.fail(f"{key}.step", f"{step!r} is not a positive {'whole ' if whole else ''}number")
            if log:
                self.fail(f"{key}.step", "step cannot be combined with log: true (Optuna rejects it)")
            if whole and (high - low) % step:
                self.fail(f"{key}.step", f"high - low = {high - low} is not a multiple of step={step}")
        if log and low <= 0:
            self.fail(f"{key}.low", f"log scale needs low > 0, got {low!r}")
        return dict(name=name, type=typ, low=low, high=high, log=log, step=step)

    def categorical(self, key: str, name: str, raw: dict) -> dict:
        choices = raw.get("choices")
        if choices is None:
            self.fail(f"{key}.choices", "missing: a categorical parameter needs a list of choices")
        if not isinstance(choices, list):
            self.fail(f"{key}.choices", f"must be a list, e.g. [a, b], got {choices!r}")
        if not choices:
            self.fail(f"{key}.choices", "is empty: give at least one choice")
        for i, c in enumerate(choices):
            self.check_value(f"{key}.choices", name, c)
            if _among(c, tuple(choices[:i])):
                self.fail(f"{key}.choices", f"{c!r} appears twice")
        return dict(name=name, type="categorical", choices=tuple(choices))

    def when(self, key: str, raw: Any, earlier: dict[str, ParamSpec], all_names: list, name: str) -> tuple:
        key = f"{key}.when"
        if not isinstance(raw, dict) or not raw:
            self.fail(key, f"must be a non-empty mapping like {{policy: natural}}, got {raw!r}")
        conds = []
        for ref, allowed in raw.items():
            ckey = f"{key}.{ref}"
            if ref not in earlier:
                if ref == name:
                    why = "a parameter cannot depend on itself"
                elif ref in all_names:
                    why = f"{ref!r} is defined after {name!r}; move it above (conditions refer to earlier parameters)"
                else:
                    why = f"{ref!r} is not a parameter defined earlier in params (constants cannot be conditions)"
                self.fail(ckey, why)
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            if not values:
                self.fail(ckey, "empty list of allowed values")
            target = earlier[ref]
            for v in values:
                if target.type == "float":
                    self.fail(ckey, f"conditions on a float parameter ({ref}) are not supported; use a categorical one")
                if not target.contains(v):
                    if target.type == "categorical":
                        self.fail(ckey, f"{v!r} is not among the choices of {ref}: {list(target.choices)}")
                    self.fail(ckey, f"{v!r} is not a possible value of {ref} (int in [{target.low}, {target.high}])")
            conds.append((ref, values))
        return tuple(conds)

    def parse(self, data: Any, path: Path | None) -> SearchSpace:
        if not isinstance(data, dict):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            self.fail("<top level>", f"must be a mapping with keys {', '.join(_TOP_LEVEL)}; got {got}")
        for k in data:
            if k not in _TOP_LEVEL:
                self.fail(str(k), f"unknown top-level key ({_suggest_names(str(k), _TOP_LEVEL)})")
        name = data.get("name", path.stem if path else "search_space")
        if not isinstance(name, str) or not name:
            self.fail("name", f"must be a non-empty string, got {name!r}")
        description = data.get("description") or ""
        if not isinstance(description, str):
            self.fail("description", f"must be a string, got {description!r}")

        raw_params = data.get("params")
        if raw_params is None:
            self.fail("params", "missing: list the searched parameters under params:")
        if not isinstance(raw_params, dict):
            self.fail("params", f"must be a mapping of parameter name → spec, got {type(raw_params).__name__}")
        if not raw_params:
            self.fail("params", "is empty: search at least one parameter")
        all_names = list(raw_params)
        specs: dict[str, ParamSpec] = {}
        for pname, raw in raw_params.items():
            specs[pname] = self.param(pname, raw, dict(specs), all_names)

        raw_constants = data.get("constants")
        if raw_constants is None:
            raw_constants = {}
        if not isinstance(raw_constants, dict):
            self.fail("constants", f"must be a mapping of configuration key → value, got {type(raw_constants).__name__}")
        for cname, value in raw_constants.items():
            ckey = f"constants.{cname}"
            self.check_key(ckey, cname)
            if cname in specs:
                self.fail(ckey, f"{cname!r} is also a searched parameter in params; keep only one of them")
            self.check_value(ckey, cname, value)
        return SearchSpace(name=name, description=description.strip(), path=path,
                           params=tuple(specs.values()), constants=dict(raw_constants))


def parse_search_space(data: Any, source: str = "<dict>", path: Path | None = None) -> SearchSpace:
    """Build a :class:`SearchSpace` from already-loaded YAML data (``source`` names it in errors)."""
    return _Parser(source).parse(data, path)


def bundled_search_spaces() -> list[str]:
    """Names of the bundled search spaces (``search_spaces/*.yaml``)."""
    return sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.yaml"))


def load_search_space(path_or_name: str | Path) -> SearchSpace:
    """Load a search space from a ``.yaml``/``.yml`` file path or a bundled name (``"mlp"``, ``"quick"``).

    Raises :class:`SearchSpaceError` for an invalid file, ``FileNotFoundError`` for a path that
    does not exist, and ``ValueError`` listing the bundled names for an unknown name.
    """
    text = str(path_or_name)
    looks_like_path = isinstance(path_or_name, Path) or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if looks_like_path or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"search space file {text!r} does not exist (bundled names: "
                                    f"{', '.join(bundled_search_spaces())})")
    else:
        path = SEARCH_SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown search space {text!r}: not a .yaml file and not a bundled name; "
                             f"bundled: {', '.join(bundled_search_spaces())}")
    path = path.resolve()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SearchSpaceError(str(path), where, f"invalid YAML (syntax error): {problem}") from None
    except UnicodeDecodeError as exc:
        raise SearchSpaceError(str(path), "<file>", f"not UTF-8 text: {exc}") from None
    return parse_search_space(data, source=str(path), path=path)

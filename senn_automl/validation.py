"""Parameter checks shared by every layer (standard library only).

Every public constructor and setting of the package validates its arguments with these
predicates and raises :class:`ValueError` through :func:`require`, so that a bad value reads the
same everywhere: ``"<name>=<value!r> is invalid: <how to fix it>"``. Allowed values (``FISHERS``,
``WHEN``, ``OPTIMIZERS``, ...) are defined once, next to the code that uses them, and the search
space checker imports them from there.

Numbers follow :mod:`numbers`: NumPy scalars count (``np.int64`` is a whole number,
``np.float32`` a real), booleans never do (``True`` is not the integer 1 here).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, NoReturn

__all__ = ["TINY", "is_whole", "is_real", "invalid", "require", "require_choice", "require_bool", "as_tuple", "as_list"]

#: guard for divisions by a non-negative quantity that may be exactly 0 (η, λ, a norm)
TINY = 1e-30


def is_whole(x: Any) -> bool:
    """Whether ``x`` is an integer (Python or NumPy), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """Whether ``x`` is a finite real number (Python or NumPy int or float), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def invalid(name: str, value: Any, fix: str) -> NoReturn:
    """Raise ``ValueError("<name>=<value!r> is invalid: <fix>")``."""
    raise ValueError(f"{name}={value!r} is invalid: {fix}")


def require(ok: bool, name: str, value: Any, fix: str) -> None:
    """Raise ``ValueError("<name>=<value!r> is invalid: <fix>")`` unless ``ok``."""
    if not ok:
        invalid(name, value, fix)


def require_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (booleans and numbers kept apart)."""
    choices = tuple(choices)
    if not any(type(value) is type(c) and value == c for c in choices):
        invalid(name, value, f"use one of: {', '.join(map(repr, choices))}")


def require_bool(name: str, value: Any) -> None:
    """Raise ``ValueError("<name>=<value!r> is invalid: use True or False")`` unless ``value`` is a bool
    (``1``, ``"yes"`` or ``None`` are not)."""
    require(isinstance(value, bool), name, value, "use True or False")


def as_tuple(x: Any) -> Any:
    """Nested lists/tuples as nested tuples (hashable, e.g. an architecture summary)."""
    return tuple(as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def as_list(x: Any) -> Any:
    """Nested lists/tuples as nested lists (JSON-able)."""
    return [as_list(v) for v in x] if isinstance(x, (list, tuple)) else x

"""Bundled search spaces (``*.yaml``), installed as ``senn_automl.search_spaces``.

The folder stays at the repository root; ``pyproject.toml`` maps it into the package, and
:mod:`senn_automl.integrations.tune.search_space` reads it with :mod:`importlib.resources`.
"""

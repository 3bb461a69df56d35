"""Helpers for the test suite only (not installed with ibzoo): tiny image sets (``images``), IDX files
(``idx``) and loading the ``train/`` scripts (``scripts``). ``pyproject.toml`` puts ``tests/`` on pytest's
``sys.path``, so tests import them as ``helpers.images`` and so on."""

"""Importing the ``train/`` scripts, so tests can call their ``main``."""

import importlib.util
from pathlib import Path
from types import ModuleType

TRAIN_DIR = Path(__file__).resolve().parents[2] / "train"


def load_train_script(name: str) -> ModuleType:
    """``train/<name>.py`` as a fresh module (the folder is scripts, not a package)."""
    path = TRAIN_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"train_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

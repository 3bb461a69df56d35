"""The one table of frameworks: each framework file's ``Framework``, by name.

To add a framework: write its file in this folder (loss, heads, views, presets, quoting its reference
files) and add it to :data:`FRAMEWORKS`. Zoo names, recipes, views, losses, model cards and the command
line all read this table, and an unknown name is an error everywhere.
"""

from __future__ import annotations

from ibzoo.frameworks.barlow_twins import BARLOW_TWINS
from ibzoo.frameworks.byol import BYOL
from ibzoo.frameworks.framework import Framework
from ibzoo.frameworks.mocov3 import MOCOV3
from ibzoo.frameworks.simclr import SIMCLR
from ibzoo.frameworks.vicreg import VICREG

__all__ = ["FRAMEWORKS", "FRAMEWORK_NAMES", "FRAMEWORK_TITLES", "get_framework"]

FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (SIMCLR, BARLOW_TWINS, BYOL, VICREG, MOCOV3)}
FRAMEWORK_NAMES: tuple[str, ...] = tuple(FRAMEWORKS)
FRAMEWORK_TITLES: dict[str, str] = {name: f.title for name, f in FRAMEWORKS.items()}


def get_framework(name: str) -> Framework:
    """The framework called ``name``; ValueError naming the known ones otherwise."""
    if name not in FRAMEWORKS:
        raise ValueError(f"Unknown framework {name!r}; choose one of {', '.join(FRAMEWORKS)}.")
    return FRAMEWORKS[name]

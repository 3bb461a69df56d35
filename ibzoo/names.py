"""The zoo's vocabulary, in one place: framework and projector names, the frameworks' display titles, what a
Hub repo id looks like, and the "did you mean" hint for a mistyped model name.

Zoo names are ``{backbone}_{framework}_{projector}``, optionally with a pretrained tag
(``resnet18_cifar_simclr_topk.cifar10``); split the tag off with timm's ``split_model_name_tag``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal, get_args

__all__ = [
    "FRAMEWORKS",
    "FRAMEWORK_TITLES",
    "PROJECTORS",
    "REPO_ID",
    "Framework",
    "did_you_mean",
]

Framework = Literal["simclr", "barlow"]
FRAMEWORKS: tuple[str, ...] = get_args(Framework)
"""The SSL frameworks: "simclr" (NT-Xent) and "barlow" (Barlow Twins)."""
FRAMEWORK_TITLES = {"simclr": "SimCLR", "barlow": "Barlow Twins"}
"""How model cards and tables write each framework."""
PROJECTORS = ("mlp", "fsq", "topk", "topk_fsq", "mlp_mi")
"""The zoo's projector kinds (``ibzoo.models.zoo.paper_projector_config`` builds each)."""
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
"""A Hub repo id, ``ORG/NAME`` (use ``fullmatch``); a local path rarely looks like one."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """The hint for an unknown model name: up to 3 close ``candidates`` (each once), else where to look."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=3, cutoff=0.7)
    return f"Did you mean {', '.join(close)}?" if close else "See ibzoo.list_models() for the zoo's names."

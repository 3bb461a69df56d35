"""The zoo's vocabulary, in one place: projector names, what a Hub repo id looks like, and the "did you
mean" hint for a mistyped model name. Framework names and titles live in :mod:`ibzoo.frameworks.registry`.

Zoo names are ``{backbone}_{framework}_{projector}``, optionally with a pretrained tag
(``resnet18_cifar_simclr_topk.cifar10``); split the tag off with timm's ``split_model_name_tag``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["PROJECTORS", "REPO_ID", "did_you_mean"]

PROJECTORS = ("mlp", "fsq", "topk", "topk_fsq", "mlp_mi")
"""The zoo's projector kinds, the same for every framework (``Framework.projector_config`` builds each)."""
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
"""A Hub repo id, ``ORG/NAME`` (use ``fullmatch``); a local path rarely looks like one."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """The hint for an unknown model name: up to 3 close ``candidates`` (each once), else where to look."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=3, cutoff=0.7)
    return f"Did you mean {', '.join(close)}?" if close else "See ibzoo.list_models() for the zoo's names."

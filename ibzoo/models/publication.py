"""Where a model name's weights live, resolved once: its prefix, its tag's Hub repo (published on
huggingface.co or not), a ``pretrained_cfg`` overlay, and the file timm would read there.

A name becomes a :class:`~ibzoo.published_source.PublishedSource` here and nowhere else: the
``hf-hub:`` / ``local-dir:`` prefixes are parsed in :func:`source_of`, and :func:`locate_weights` finds the
backbone's weights file as timm would, refusing a pickle. Loading (:mod:`ibzoo.loading`) asks once and
passes the answer down; fetching and reading the files is :mod:`ibzoo.published_source`'s business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from timm.models import get_pretrained_cfg, resolve_pretrained_cfg, split_model_name_tag

from ibzoo.models.catalog import MODEL_INFOS, zoo_name_tag
from ibzoo.published_source import FOLDER_PREFIX, HUB_PREFIX, WEIGHTS_FILE, PublishedSource, WeightsSource
from ibzoo.weights import PretrainedWeightsUnavailableError, pickle_refusal

__all__ = [
    "HUB_ORGANIZATION",
    "PUBLISHED",
    "is_unpublished",
    "locate_weights",
    "names_a_source",
    "not_published_error",
    "source_of",
    "tag_repo_id",
]

HUB_ORGANIZATION = "ibzoo"

# The ``name.tag`` entries whose weights are on huggingface.co, in their zoo repo (``tag_repo_id``): add one
# when its repo goes live. Only these are pretrained for timm (``timm.list_pretrained()``, ``pretrained=True``
# through plain timm), so tools that walk timm's pretrained list find real weights. Every other tag keeps
# its recipe and its repo id: ``ibzoo.create_model(name.tag, pretrained=True)`` still loads it from that
# repo on a mirror (``HF_ENDPOINT``) or a local Hub, and otherwise says how to train it.
PUBLISHED: frozenset[str] = frozenset()


def tag_repo_id(name: str) -> str | None:
    """The Hub repo of a zoo name's tag ("ibzoo/resnet18_cifar_simclr_topk.cifar10"), published or not;
    None outside the zoo (see :func:`zoo_name_tag`)."""
    name_tag = zoo_name_tag(name)
    return f"{HUB_ORGANIZATION}/{name_tag}" if name_tag is not None else None


def is_unpublished(name: str) -> bool:
    """Whether ``name`` is a zoo name whose tag has a repo id but no weights on huggingface.co yet."""
    name_tag = zoo_name_tag(name)
    return name_tag is not None and name_tag not in PUBLISHED


def not_published_error(name: str) -> PretrainedWeightsUnavailableError:
    """The error for ``pretrained=True`` on a zoo name whose weights are not on huggingface.co yet."""
    return PretrainedWeightsUnavailableError(_not_published(name))


def _not_published(name: str) -> str:
    """Where an unpublished zoo tag's weights would be, how to train them, how to load them from a mirror."""
    name_tag = zoo_name_tag(name)
    base, tag = split_model_name_tag(name_tag)
    framework = MODEL_INFOS[base].framework
    return (
        f"{name_tag} has no published weights yet (they will be at {tag_repo_id(name)} on "
        f"huggingface.co; ibzoo.list_pretrained() lists the published ones). Train them: python "
        f"train/pretrain.py --model {base} --recipe train/recipes/{framework}_{tag}.yaml --output-dir RUN "
        f"(README, Pretraining), then load 'local-dir:RUN/model'; or serve the repo from a mirror "
        f"(HF_ENDPOINT) and load it with ibzoo.create_model({name_tag!r}, pretrained=True)."
    )


def names_a_source(model_name: str) -> bool:
    """Whether ``model_name`` names a published model: ``hf-hub:ORG/NAME[@REV]`` or ``local-dir:PATH``."""
    return model_name.startswith((HUB_PREFIX, FOLDER_PREFIX))


def source_of(model_name: str) -> PublishedSource | None:
    """The published model ``model_name`` names: ``hf-hub:org/repo[@revision]``, ``local-dir:/path``, a
    timm name whose pretrained tag has a Hub repo, or a zoo tag, published or not (its repo, which a mirror
    or a local Hub may serve); None for any other name."""
    if model_name.startswith(FOLDER_PREFIX):
        return PublishedSource(folder=Path(model_name.removeprefix(FOLDER_PREFIX)))
    if model_name.startswith(HUB_PREFIX):
        return _hub_source(model_name.removeprefix(HUB_PREFIX), model_name)
    with contextlib.suppress(RuntimeError):  # timm's answer to an unknown pretrained tag
        cfg = get_pretrained_cfg(model_name)
        if cfg is not None and cfg.hf_hub_id:
            return _hub_source(cfg.hf_hub_id, model_name)
    repo_id = tag_repo_id(model_name)
    return _hub_source(repo_id, model_name) if repo_id is not None else None


def _hub_source(hub_id: str, model_name: str) -> PublishedSource:
    """The Hub repo ``"org/repo@revision"`` (timm's syntax; no ``@``: the default branch), knowing how to
    train its weights when it is ``model_name``'s zoo repo and they are not published yet."""
    repo_id, _, revision = hub_id.partition("@")
    unpublished = hub_id == tag_repo_id(model_name) and is_unpublished(model_name)
    not_published = _not_published(model_name) if unpublished else None
    return PublishedSource(repo_id, revision or None, not_published=not_published)


# The pretrained_cfg entries that say where weights come from.
_SOURCE_KEYS = ("source", "file", "url", "hf_hub_id", "hf_hub_filename", "state_dict", "custom_load")


def locate_weights(
    model_name: str, kwargs: Mapping[str, Any], named: PublishedSource | None = None
) -> WeightsSource:
    """Where ``timm.create_model(model_name, pretrained=True, **kwargs)`` would take the backbone's weights
    from: a name's prefix, its tag's pretrained config, a ``pretrained_cfg`` / ``pretrained_cfg_overlay``
    in ``kwargs``, and for a zoo tag not published yet its Hub repo. A source that only holds pickles
    (a ``.pth`` URL, a ``.bin`` file, a custom loader) is refused here, naming it. ``named`` is the
    published model an ``hf-hub:`` or ``local-dir:`` name names when the caller has resolved it already.

    The order is timm's own (``timm.models._builder._resolve_pretrained_source``, which timm does not
    export): a ``source`` of ``hf-hub`` or ``local-dir`` first, then an in-memory ``state_dict``, a
    ``file``, an ``hf_hub_id``, a ``url``. ibzoo decides it here, once, because it must read exactly the
    file timm would, and only if it is safetensors.
    """
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if named is None and names_a_source(model_name):
        named = source_of(model_name)
    if named is not None and named.folder is not None:
        origin: dict[str, Any] = {"source": "local-dir", "file": str(named.folder)}
    elif named is not None:
        origin = {"source": "hf-hub", "hf_hub_id": named.hub_id}
    else:
        architecture, tag = split_model_name_tag(model_name)
        resolved = resolve_pretrained_cfg(architecture, kwargs.get("pretrained_cfg") or tag or None, overlay)
        origin = {key: value for key, value in resolved.to_dict().items() if key in _SOURCE_KEYS and value}
        repo_id = tag_repo_id(model_name)
        if not origin and repo_id is not None:
            # A zoo tag not published yet (timm knows no weights for it): its repo, which a mirror or a
            # local Hub may serve; when it is missing there too, the error says how to train it.
            origin = {"source": "hf-hub", "hf_hub_id": repo_id}
    origin |= {key: value for key, value in overlay.items() if key in _SOURCE_KEYS}
    kind = origin.get("source") or ""
    if kind not in ("hf-hub", "local-dir"):
        kind = next((key for key in ("state_dict", "file", "hf_hub_id", "url") if origin.get(key)), "")
    pickled = _pickled(origin, kind, model_name)
    if pickled is not None:
        raise pickle_refusal(*pickled)
    return _located(origin, kind, model_name)


def _pickled(origin: dict[str, Any], kind: str, model_name: str) -> tuple[str, str] | None:
    """The pickle that timm would read for ``origin`` (a custom loader's file, a URL, a file or Hub file
    that is not safetensors) and what it holds; None when the weights are safetensors or in memory."""
    if origin.get("custom_load"):
        return str(origin.get("file") or origin.get("url") or model_name), "weights in a custom format"
    if kind == "url":
        return origin["url"], "weights"
    if kind == "file" and not str(origin["file"]).endswith(".safetensors"):
        return str(origin["file"]), "weights"
    filename = origin.get("hf_hub_filename") or WEIGHTS_FILE
    if kind in ("hf-hub", "hf_hub_id") and _hub_safetensors(filename) is None:
        return f"{origin['hf_hub_id']}/{filename}", "weights"
    return None


def _hub_safetensors(filename: str) -> str | None:
    """The safetensors file ibzoo reads for a Hub ``hf_hub_filename``: itself, model.safetensors for
    timm's default pytorch_model.bin (its safetensors twin), None for any other pickle."""
    if filename.endswith(".safetensors"):
        return filename
    return WEIGHTS_FILE if filename == "pytorch_model.bin" else None


def _located(origin: dict[str, Any], kind: str, model_name: str) -> WeightsSource:
    """The safetensors weights ``origin`` names, of ``kind`` (see :func:`locate_weights`)."""
    if kind in ("", "state_dict"):
        return WeightsSource(None, WEIGHTS_FILE, origin)
    if kind == "local-dir":
        return WeightsSource(PublishedSource(folder=Path(origin["file"])), WEIGHTS_FILE, origin)
    if kind == "file":
        path = Path(origin["file"])
        return WeightsSource(PublishedSource(folder=path.parent), path.name, origin)
    filename = _hub_safetensors(origin.get("hf_hub_filename") or WEIGHTS_FILE)
    return WeightsSource(_hub_source(origin["hf_hub_id"], model_name), filename, origin)

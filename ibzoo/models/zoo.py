"""Every zoo name registered with timm: ``timm.create_model(name)`` returns the pre-projector backbone
with that name's ``pretrained_cfg`` (input size, mean/std, crop; an ``hf_hub_id`` once a tag is
published). What the names are and their recipes: :mod:`ibzoo.models.catalog`; the data sets:
:mod:`ibzoo.models.datasets`; where the weights live: :mod:`ibzoo.models.publication`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from timm.models import (
    PretrainedCfg,
    generate_default_cfgs,
    get_pretrained_cfg,
    model_entrypoint,
    register_model,
    split_model_name_tag,
)
from torch import nn

from ibzoo.models.catalog import (
    BACKBONE_DEFAULTS,
    BACKBONES,
    MODEL_INFOS,
    WITHHELD,
    ModelInfo,
    get_model_info,
)
from ibzoo.models.datasets import DATASETS
from ibzoo.models.publication import PUBLISHED, not_published_error, tag_repo_id

__all__ = ["backbone_source", "default_cfgs", "pretrained_cfg_of"]

# Input pixels per feature-map pixel at the last stage: the CIFAR stem drops both stride-2 steps.
_REDUCTION = {"cifar": 8, "imagenet": 32}


def _pretrained_cfg(info: ModelInfo, tag: str) -> dict[str, Any]:
    data = DATASETS[tag]
    side = data.input_size[-1] // _REDUCTION[BACKBONES[info.architecture][1]]
    published = f"{info.name}.{tag}" in PUBLISHED
    return dict(
        hf_hub_id=tag_repo_id(f"{info.name}.{tag}") if published else None,
        num_classes=0,
        input_size=data.input_size,
        pool_size=(side, side),
        crop_pct=data.crop_pct,
        interpolation="bicubic",  # ibzoo.augment.INTERPOLATION, as trained
        mean=data.mean,
        std=data.std,
        first_conv="conv1",
        classifier="fc",
        license="apache-2.0",
        paper_ids="arXiv:2503.00507",
        paper_name="Projection Head is Secretly an Information Bottleneck",
    )


default_cfgs = generate_default_cfgs(
    {
        f"{info.name}.{tag}": _pretrained_cfg(info, tag)
        for info in MODEL_INFOS.values()
        for tag in info.pretrained_tags
    }
)


def pretrained_cfg_of(name: str) -> PretrainedCfg:
    """``name``'s timm ``pretrained_cfg`` (its tag's; untagged, its default tag's): timm's for a zoo name,
    and the same table's entry for a pair the zoo withholds (``catalog.WITHHELD``), which timm does not
    know."""
    base, tag = split_model_name_tag(name)
    if base not in WITHHELD:
        return get_pretrained_cfg(name)
    info = get_model_info(name, withheld=True)
    tag = tag or info.default_tag
    return PretrainedCfg(**_pretrained_cfg(info, tag), architecture=info.architecture, tag=tag)


def backbone_source(name: str) -> tuple[str, dict[str, Any]]:
    """The timm name and keyword arguments that build ``name``'s backbone: a zoo name itself, and for a
    pair the zoo withholds its timm architecture with the zoo's defaults and :func:`pretrained_cfg_of`,
    as ``train/pretrain.py --experiment`` and the benchmark's learning curves build it."""
    if split_model_name_tag(name)[0] not in WITHHELD:
        return name, {}
    cfg = pretrained_cfg_of(name)
    return cfg.architecture, {**BACKBONE_DEFAULTS, "pretrained_cfg": cfg}


def _resolve_pretrained_cfg(name: str, pretrained_cfg: Any) -> PretrainedCfg | dict[str, Any]:
    """timm hands an entrypoint a tag, a cfg, or None; the backbone builder needs this name's cfg object."""
    if pretrained_cfg is None or isinstance(pretrained_cfg, str):
        tag = pretrained_cfg or default_cfgs[name].tags[0]
        if tag not in default_cfgs[name].cfgs:
            known = ", ".join(f"{name}.{t}" for t in default_cfgs[name].tags)
            raise ValueError(f"Unknown pretrained tag {tag!r} for {name}; known: {known}.")
        return dataclasses.replace(default_cfgs[name].cfgs[tag], architecture=name, tag=tag)
    return pretrained_cfg


_WEIGHT_SOURCES = ("url", "file", "hf_hub_id", "state_dict")


def _has_weights(cfg: PretrainedCfg | dict[str, Any]) -> bool:
    """Whether a pretrained cfg (or overlay) names weights for timm to load."""
    values = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return any(values.get(key) is not None and values.get(key) != "" for key in _WEIGHT_SOURCES)


def _tag(cfg: PretrainedCfg | dict[str, Any]) -> str:
    return cfg["tag"] if isinstance(cfg, dict) else cfg.tag


def _make_entrypoint(info: ModelInfo):
    def entrypoint(pretrained: bool = False, pretrained_cfg: Any = None, **kwargs: Any) -> nn.Module:
        kwargs = {**BACKBONE_DEFAULTS, **kwargs}
        cfg = _resolve_pretrained_cfg(info.name, pretrained_cfg)
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        if pretrained and not (_has_weights(cfg) or _has_weights(overlay)):
            # timm itself would only warn and hand out random weights under a pretrained name.
            raise not_published_error(f"{info.name}.{_tag(cfg)}")
        build_backbone = model_entrypoint(info.architecture)
        return build_backbone(pretrained=pretrained, pretrained_cfg=cfg, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = info.name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (
        f"{info.architecture} pretrained with {info.framework} and the {info.projector!r} projector; "
        "returns the pre-projector backbone."
    )
    return entrypoint


_module = sys.modules[__name__]
for _info in MODEL_INFOS.values():
    setattr(_module, _info.name, register_model(_make_entrypoint(_info)))

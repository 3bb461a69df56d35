"""The curated zoo: every ``{backbone}_{framework}_{projector}`` name, its paper recipe and pretrained tags.

This file is the one table of the project. Each name pairs a timm backbone with a self-supervised
framework (``simclr``, ``barlow``) and one of the paper's projectors:

============  =====================================================================================
``mlp``       the framework's plain MLP projector (the baseline)
``fsq``       the MLP projector followed by finite-scalar quantization (structural regularization A)
``topk``      the sparse top-k autoencoder projector (structural regularization B)
``topk_fsq``  top-k followed by quantization
``mlp_mi``    the MLP projector trained with the matrix mutual-information regularizer
============  =====================================================================================

Registering a name with timm makes ``timm.create_model(name)`` return the pre-projector backbone with
that name's ``pretrained_cfg`` (input size, mean/std, crop; an ``hf_hub_id`` once a tag is ``PUBLISHED``);
:func:`ibzoo.create_pretraining_model` adds the projector and objective described by :class:`ModelInfo`.

Recipes follow "Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025,
arXiv:2503.00507), built on solo-learn's CIFAR and ImageNet-100 settings.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (
    PretrainedCfg,
    generate_default_cfgs,
    model_entrypoint,
    register_model,
    split_model_name_tag,
)
from torch import nn

from ibzoo.names import FRAMEWORKS, PROJECTORS, did_you_mean
from ibzoo.objectives import ObjectiveConfig
from ibzoo.optim import OptimizerConfig
from ibzoo.projectors import ProjectorConfig
from ibzoo.weights import PretrainedWeightsUnavailableError

__all__ = [
    "HUB_ORGANIZATION",
    "PUBLISHED",
    "ModelInfo",
    "get_model_info",
    "is_unpublished",
    "not_published_error",
    "paper_objective_config",
    "paper_projector_config",
    "projector_kind",
    "tag_repo_id",
    "zoo_name_tag",
]

HUB_ORGANIZATION = "ibzoo"

# The ``name.tag`` entries whose weights are on huggingface.co, in their zoo repo (``tag_repo_id``): add one
# when its repo goes live. Only these are pretrained for timm (``timm.list_pretrained()``, ``pretrained=True``
# through plain timm), so tools that walk timm's pretrained list find real weights. Every other tag keeps
# its recipe and its repo id: ``ibzoo.create_model(name.tag, pretrained=True)`` still loads it from that
# repo on a mirror (``HF_ENDPOINT``) or a local Hub, and otherwise says how to train it.
PUBLISHED: frozenset[str] = frozenset()

Family = Literal["cifar", "imagenet"]


@dataclass(frozen=True)
class DatasetCfg:
    """A dataset the zoo publishes weights for: its pretrained tag, input size and normalisation."""

    tag: str
    hf_dataset: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    family: Family
    """Which of the paper's recipes its images take: "cifar" (32 px) or "imagenet" (224 px)."""


DATASETS = {
    "cifar10": DatasetCfg(
        "cifar10",
        "uoft-cs/cifar10",
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        1.0,
        "cifar",
    ),
    "cifar100": DatasetCfg(
        "cifar100",
        "uoft-cs/cifar100",
        (3, 32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        1.0,
        "cifar",
    ),
    "in100": DatasetCfg(
        "in100",
        "clane9/imagenet-100",
        (3, 224, 224),
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        0.875,
        "imagenet",
    ),
    # 28 px greyscale images resized to 32 px and repeated over 3 channels. Small images take the CIFAR
    # recipe (projector sizes, learning rate, MI weight) whatever the backbone's stem.
    "fmnist": DatasetCfg(
        "fmnist", "zalando-datasets/fashion_mnist", (3, 32, 32), (0.2860,) * 3, (0.3530,) * 3, 1.0, "cifar"
    ),
}

# backbone name -> (timm architecture, the untagged name's recipe family, pretrained tags). A tag's own
# recipe follows its dataset's family: ``resnet18_*.fmnist`` (the standard stem at 32 px, which trains
# about 19x faster than the CIFAR stem on a CPU; train/benchmark_fmnist.py) takes the CIFAR recipe.
BACKBONES: dict[str, tuple[str, Family, tuple[str, ...]]] = {
    "resnet18_cifar": ("resnet18_cifar", "cifar", ("cifar10", "cifar100")),
    "resnet50_cifar": ("resnet50_cifar", "cifar", ("cifar10", "cifar100")),
    "resnet18": ("resnet18", "imagenet", ("in100", "fmnist")),
    "resnet50": ("resnet50", "imagenet", ("in100",)),
}
# Input pixels per feature-map pixel at the last stage: the CIFAR stem drops both stride-2 steps.
_REDUCTION = {"cifar": 8, "imagenet": 32}


@dataclass(frozen=True)
class ModelInfo:
    """What a zoo name is: backbone, framework, projector and the paper recipe's default hyper-parameters."""

    name: str
    architecture: str  # the backbone's timm name, e.g. "resnet18_cifar"
    family: Family  # which of the paper's recipes: "cifar" (32 px images) or "imagenet"
    framework: str
    projector: str  # one of ibzoo.names.PROJECTORS
    projector_config: ProjectorConfig
    objective_config: ObjectiveConfig
    optimizer_config: OptimizerConfig
    epochs: int
    batch_size: int
    sync_batchnorm: bool
    online_classifier_lr: float  # base lr of the online linear classifier (per 256 images)
    pretrained_tags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_choice(kind: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {kind} {value!r}; choose one of {', '.join(choices)}.")


def paper_projector_config(framework: str, projector: str, family: Family = "imagenet") -> ProjectorConfig:
    """The paper's projector for a framework: MLP dims from solo-learn, top-k 100000 / 1000, FSQ levels.

    The FSQ levels (30 for SimCLR, 3 for Barlow Twins) come from the paper's text: the reference's CIFAR
    yamls ship with ``point_num: 0`` (the quantizer off).

    Barlow Twins' ``topk_fsq``, built as the reference's ``methods/barlow_twins.py`` would build it, does
    not train: 3 levels round every value within +-0.5 to 0, and a fresh top-k head outputs values of about
    0.1, so almost every output dimension is 0 in both views and gets no gradient (at 100000 / 1000 none
    varies). Kept as specified; the README's Fashion-MNIST benchmark section has the measurements."""
    _check_choice("framework", framework, FRAMEWORKS)
    _check_choice("projector", projector, PROJECTORS)
    if framework == "simclr":
        mlp: dict[str, Any] = dict(hidden_features=(2048,), out_features=256)
        if family == "imagenet":
            mlp = dict(hidden_features=(4096,), out_features=512)
        # SimCLR's top-k autoencoder replaces the MLP entirely (backbone features -> same width).
        topk_stem: dict[str, Any] = dict(hidden_features=(), out_features=None)
        levels = 30
    else:
        mlp = dict(hidden_features=(2048, 2048), out_features=2048, batch_norm=True)
        # Barlow Twins keeps Linear-BN-ReLU to 2048 and puts the autoencoder on top of it.
        topk_stem = dict(hidden_features=(2048,), out_features=None, batch_norm=True)
        levels = 3
    topk = dict(topk_latents=100_000, topk_k=1_000)
    variants = {
        "mlp": mlp,
        "mlp_mi": mlp,
        "fsq": dict(mlp, fsq_levels=levels),
        "topk": dict(topk_stem, **topk),
        "topk_fsq": dict(topk_stem, **topk, fsq_levels=levels),
    }
    return ProjectorConfig(**variants[projector])


def paper_objective_config(framework: str, projector: str, family: Family = "imagenet") -> ObjectiveConfig:
    """SimCLR (temperature 0.2) or Barlow Twins (off-diagonal 0.0051, scale 0.1); the MI regularizer's
    weight is 1e-4 on CIFAR-sized data and 1e-2 on ImageNet-sized data for ``mlp_mi``, else off.

    The weights come from the paper's text: every Projector_Theory scripts/pretrain yaml ships with
    ``lmbd: 0`` (the regularizer off), so the code gives no value to match."""
    _check_choice("framework", framework, FRAMEWORKS)
    _check_choice("projector", projector, PROJECTORS)
    mi_weight = (1e-4 if family == "cifar" else 1e-2) if projector == "mlp_mi" else 0.0
    if framework == "simclr":
        return ObjectiveConfig(framework="simclr", temperature=0.2, mi_weight=mi_weight)
    return ObjectiveConfig(framework="barlow", lambda_offdiag=0.0051, scale=0.1, mi_weight=mi_weight)


def projector_kind(projector: ProjectorConfig, objective: ObjectiveConfig) -> str:
    """The zoo's projector name (ibzoo.names.PROJECTORS) that a pair of configs describes: the inverse of
    :func:`paper_projector_config` and :func:`paper_objective_config`, for configs of any size."""
    kind = "topk" if projector.topk_latents is not None else "mlp"
    if projector.fsq_levels is not None:
        return "topk_fsq" if kind == "topk" else "fsq"
    return "mlp_mi" if kind == "mlp" and objective.mi_weight > 0 else kind


def _recipe(backbone: str, framework: str, projector: str, family: Family) -> ModelInfo:
    architecture, _, tags = BACKBONES[backbone]
    # Batch sizes are the reference runs' totals: IN-100 SimCLR 128 x 2 GPUs, Barlow Twins 256 x 2 GPUs.
    batch_size = 512 if (family, framework) == ("imagenet", "barlow") else 256
    lr = 0.4 if (family, framework) == ("cifar", "simclr") else 0.3
    # The online classifier's lr (solo-learn's optimizer.classifier_lr): 0.15 in cifar/barlow.yaml, 0.1 in
    # the other three scripts/pretrain yamls. It trains on detached features, so it never changes the encoder.
    classifier_lr = 0.15 if (family, framework) == ("cifar", "barlow") else 0.1
    return ModelInfo(
        name=f"{backbone}_{framework}_{projector}",
        architecture=architecture,
        family=family,
        framework=framework,
        projector=projector,
        projector_config=paper_projector_config(framework, projector, family),
        objective_config=paper_objective_config(framework, projector, family),
        optimizer_config=OptimizerConfig(
            name="lars", lr=lr, weight_decay=1e-4, lars_eta=0.02, warmup_epochs=10
        ),
        epochs=200 if family == "cifar" else 100,
        batch_size=batch_size,
        # Every reference yaml sets sync_batchnorm: True; it acts only with several GPU processes.
        sync_batchnorm=True,
        online_classifier_lr=classifier_lr,
        pretrained_tags=tags,
    )


# Every name's recipe in each family: the untagged name takes its backbone's, a tag its dataset's.
_RECIPES: dict[tuple[str, Family], ModelInfo] = {
    (info.name, info.family): info
    for info in (
        _recipe(b, f, p, family)
        for b in BACKBONES
        for f in FRAMEWORKS
        for p in PROJECTORS
        for family in ("cifar", "imagenet")
    )
}
MODEL_INFOS: dict[str, ModelInfo] = {
    f"{b}_{f}_{p}": _RECIPES[(f"{b}_{f}_{p}", BACKBONES[b][1])]
    for b in BACKBONES
    for f in FRAMEWORKS
    for p in PROJECTORS
}


def zoo_name_tag(name: str) -> str | None:
    """``name`` as the zoo's ``name.tag``, an untagged name taking its default (first) tag as timm resolves
    it; None for a name outside the zoo or a tag it does not have."""
    base, tag = split_model_name_tag(name)
    if base not in MODEL_INFOS:
        return None
    tag = tag or MODEL_INFOS[base].pretrained_tags[0]
    return f"{base}.{tag}" if tag in MODEL_INFOS[base].pretrained_tags else None


def tag_repo_id(name: str) -> str | None:
    """The Hub repo of a zoo name's tag ("ibzoo/resnet18_cifar_simclr_topk.cifar10"), published or not;
    None outside the zoo (see :func:`zoo_name_tag`)."""
    name_tag = zoo_name_tag(name)
    return f"{HUB_ORGANIZATION}/{name_tag}" if name_tag is not None else None


def is_unpublished(name: str) -> bool:
    """Whether ``name`` is a zoo name whose tag has a repo id but no weights on huggingface.co yet."""
    name_tag = zoo_name_tag(name)
    return name_tag is not None and name_tag not in PUBLISHED


def not_published_error(name: str, tried: str = "") -> PretrainedWeightsUnavailableError:
    """The error for ``pretrained=True`` on a zoo name whose weights are not on huggingface.co yet: where
    they would be, how to train them, how to load them from a mirror, and what was ``tried``, if anything."""
    name_tag = zoo_name_tag(name)
    base, tag = split_model_name_tag(name_tag)
    framework = MODEL_INFOS[base].framework
    return PretrainedWeightsUnavailableError(
        f"{name_tag} has no published weights yet (they will be at {tag_repo_id(name)} on "
        f"huggingface.co; ibzoo.list_pretrained() lists the published ones). Train them: python "
        f"train/pretrain.py --model {base} --recipe train/recipes/{framework}_{tag}.yaml --output-dir RUN "
        f"(README, Pretraining), then load 'local-dir:RUN/model'; or serve the repo from a mirror "
        f"(HF_ENDPOINT) and load it with ibzoo.create_model({name_tag!r}, pretrained=True)."
        + (f" Tried: {tried}." if tried else "")
    )


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
        kwargs.setdefault("num_classes", 0)  # the zoo hands out encoders: pooled features by default
        # Every BatchNorm gamma starts at 1, as in the reference's torchvision resnet18() (PKU-ML/
        # Projector_Theory, solo/backbones): timm's default zero_init_last=True starts each residual
        # block's last gamma at 0, and LARS, which leaves 1-D parameters out of its adaptation, keeps them
        # near 0 for most of a short run. Pass zero_init_last=True for timm's init.
        kwargs.setdefault("zero_init_last", False)
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


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo name; KeyError with close matches.

    A ``.tag`` suffix selects the recipe of the tag's dataset (``resnet18_simclr_mlp.fmnist`` takes the
    CIFAR recipe, ``resnet18_simclr_mlp`` the ImageNet-100 one); a tag the zoo does not know is left to
    the caller to report.
    """
    base, tag = split_model_name_tag(name)
    if base not in MODEL_INFOS:
        raise KeyError(f"Unknown ibzoo model {name!r}. {did_you_mean(base, MODEL_INFOS)}")
    info = MODEL_INFOS[base]
    return _RECIPES[(base, DATASETS[tag].family)] if tag in DATASETS else info


_module = sys.modules[__name__]
for _info in MODEL_INFOS.values():
    setattr(_module, _info.name, register_model(_make_entrypoint(_info)))

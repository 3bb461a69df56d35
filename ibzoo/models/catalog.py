"""The zoo's catalogue: every ``{backbone}_{framework}_{projector}`` name and its recipe.

Each name pairs a timm backbone with a joint-embedding framework (:mod:`ibzoo.frameworks`, one file each)
and one of the projectors of "Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR
2025, arXiv:2503.00507):

============  =====================================================================================
``mlp``       the framework's plain MLP projector (the baseline)
``fsq``       the MLP projector followed by finite-scalar quantization (structural regularization A)
``topk``      the sparse top-k autoencoder projector (structural regularization B)
``topk_fsq``  top-k followed by quantization
``mlp_mi``    the MLP projector trained with the matrix mutual-information regularizer
============  =====================================================================================

A name's recipe is its framework's (heads, loss settings, optimiser, epochs, batch) in its family; the
framework files cite the reference configuration each value comes from. A pair whose framework
withholds it (``Framework.withheld``: it did not beat an untrained network) keeps its recipe for
experiments but gets no zoo name (:data:`WITHHELD`). :mod:`ibzoo.models.zoo` registers every name with
timm; :mod:`ibzoo.models.publication` says where its weights live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from timm.models import split_model_name_tag

from ibzoo.frameworks import FRAMEWORKS, Family, get_framework
from ibzoo.models.datasets import DATASETS
from ibzoo.names import PROJECTORS, did_you_mean
from ibzoo.objectives import ObjectiveConfig
from ibzoo.optim import OptimizerConfig
from ibzoo.projectors import ProjectorConfig

__all__ = [
    "BACKBONES",
    "BACKBONE_DEFAULTS",
    "MODEL_INFOS",
    "WITHHELD",
    "ModelInfo",
    "get_model_info",
    "paper_objective_config",
    "paper_projector_config",
    "projector_kind",
    "withheld_error",
    "zoo_name_tag",
]

# backbone name -> (timm architecture, the untagged name's recipe family, pretrained tags). A tag's own
# recipe follows its dataset's family: ``resnet18_*.fmnist`` (the standard stem at 32 px, which trains
# about 19x faster than the CIFAR stem on a CPU; train/benchmark_fmnist.py) takes the CIFAR recipe.
BACKBONES: dict[str, tuple[str, Family, tuple[str, ...]]] = {
    "resnet18_cifar": ("resnet18_cifar", "cifar", ("cifar10", "cifar100")),
    "resnet50_cifar": ("resnet50_cifar", "cifar", ("cifar10", "cifar100")),
    "resnet18": ("resnet18", "imagenet", ("in100", "fmnist")),
    "resnet50": ("resnet50", "imagenet", ("in100",)),
}

# What every zoo backbone is built with unless the caller says otherwise: encoders hand out pooled features,
# and every BatchNorm gamma starts at 1, as in the reference's torchvision resnet18() (PKU-ML/
# Projector_Theory, solo/backbones): timm's default zero_init_last=True starts each residual block's last
# gamma at 0, and LARS, which leaves 1-D parameters out of its adaptation, keeps them near 0 for most of a
# short run. Pass zero_init_last=True for timm's init.
BACKBONE_DEFAULTS: dict[str, Any] = {"num_classes": 0, "zero_init_last": False}


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

    @property
    def default_tag(self) -> str:
        """The tag an untagged name stands for, as timm resolves it: the first."""
        return self.pretrained_tags[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_projector(projector: str) -> None:
    if projector not in PROJECTORS:
        raise ValueError(f"Unknown projector {projector!r}; choose one of {', '.join(PROJECTORS)}.")


def paper_projector_config(framework: str, projector: str, family: Family = "imagenet") -> ProjectorConfig:
    """The ``projector`` kind of ``framework`` in ``family``, as its framework file builds it (MLP dims
    from the reference yamls, top-k 100000 / 1000, the FSQ levels of the paper's text)."""
    return get_framework(framework).projector_config(projector, family)


def paper_objective_config(framework: str, projector: str, family: Family = "imagenet") -> ObjectiveConfig:
    """The framework's loss settings in ``family``; the MI regularizer's weight is 1e-4 on CIFAR-sized data
    and 1e-2 on ImageNet-sized data for ``mlp_mi``, else off.

    The weights come from the paper's text for SimCLR and Barlow Twins: every Projector_Theory
    scripts/pretrain yaml ships with ``lmbd: 0`` (the regularizer off), so the code gives no value to
    match. The other frameworks take the same weights, for want of a published one."""
    _check_projector(projector)
    mi_weight = (1e-4 if family == "cifar" else 1e-2) if projector == "mlp_mi" else 0.0
    settings = get_framework(framework).settings[family]
    return ObjectiveConfig(framework=framework, mi_weight=mi_weight, **settings)


def projector_kind(projector: ProjectorConfig, objective: ObjectiveConfig) -> str:
    """The zoo's projector name (ibzoo.names.PROJECTORS) that a pair of configs describes: the inverse of
    :func:`paper_projector_config` and :func:`paper_objective_config`, for configs of any size."""
    kind = "topk" if projector.topk_latents is not None else "mlp"
    if projector.fsq_levels is not None:
        return "topk_fsq" if kind == "topk" else "fsq"
    return "mlp_mi" if kind == "mlp" and objective.mi_weight > 0 else kind


def _recipe(backbone: str, framework: str, projector: str, family: Family) -> ModelInfo:
    architecture, _, tags = BACKBONES[backbone]
    recipe = get_framework(framework).recipes[family]
    return ModelInfo(
        name=f"{backbone}_{framework}_{projector}",
        architecture=architecture,
        family=family,
        framework=framework,
        projector=projector,
        projector_config=paper_projector_config(framework, projector, family),
        objective_config=paper_objective_config(framework, projector, family),
        # LARS with eta 0.02, clipped, biases and norms excluded (solo/args/pretrain.py, every yaml).
        optimizer_config=OptimizerConfig(
            name="lars",
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            lars_eta=0.02,
            warmup_epochs=recipe.warmup_epochs,
        ),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        # Every reference yaml sets sync_batchnorm: True; it acts only with several GPU processes.
        sync_batchnorm=True,
        online_classifier_lr=recipe.classifier_lr,
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
_DEFAULT_RECIPES: dict[str, ModelInfo] = {
    f"{b}_{f}_{p}": _RECIPES[(f"{b}_{f}_{p}", BACKBONES[b][1])]
    for b in BACKBONES
    for f in FRAMEWORKS
    for p in PROJECTORS
}
WITHHELD: dict[str, str] = {
    f"{b}_{f}_{p}": reason
    for b in BACKBONES
    for f in FRAMEWORKS
    for p, reason in get_framework(f).withheld.items()
}
"""The names of the pairs a framework withholds from the zoo (``Framework.withheld``) -> why."""
MODEL_INFOS: dict[str, ModelInfo] = {
    name: info for name, info in _DEFAULT_RECIPES.items() if name not in WITHHELD
}
"""The zoo: every name registered with timm, listed by ``ibzoo.list_models()``."""


def withheld_error(name: str) -> KeyError:
    """The error for a name in :data:`WITHHELD`: why the zoo leaves it out, how to build or train it."""
    base, tag = split_model_name_tag(name)
    info = _DEFAULT_RECIPES[base]
    build = f"{info.architecture!r}, zero_init_last={BACKBONE_DEFAULTS['zero_init_last']}"  # the zoo's init
    return KeyError(
        f"{base} is not in the zoo: {WITHHELD[base]}. For an experiment, build the pair with "
        f"ibzoo.create_pretraining_model({build}, framework={info.framework!r}, "
        f"projector={info.projector!r}) "
        f"(its backbone: ibzoo.create_model({build}, num_classes={BACKBONE_DEFAULTS['num_classes']})), or "
        "train its recipe with "
        f"train/pretrain.py --model {base}.{tag if tag in info.pretrained_tags else info.default_tag} "
        "--experiment."
    )


def zoo_name_tag(name: str) -> str | None:
    """``name`` as the zoo's ``name.tag``, an untagged name taking its default (first) tag as timm resolves
    it; None for a name outside the zoo or a tag it does not have."""
    base, tag = split_model_name_tag(name)
    if base not in MODEL_INFOS:
        return None
    tag = tag or MODEL_INFOS[base].default_tag
    return f"{base}.{tag}" if tag in MODEL_INFOS[base].pretrained_tags else None


def get_model_info(name: str, *, withheld: bool = False) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo name; KeyError with close matches, or for a name in
    :data:`WITHHELD` with why (``withheld=True``: its recipe, for an experiment).

    A ``.tag`` suffix selects the recipe of the tag's dataset (``resnet18_simclr_mlp.fmnist`` takes the
    CIFAR recipe, ``resnet18_simclr_mlp`` the ImageNet-100 one); a tag the zoo does not know is left to
    the caller to report.
    """
    base, tag = split_model_name_tag(name)
    if base in WITHHELD and not withheld:
        raise withheld_error(name)
    if base not in _DEFAULT_RECIPES:
        raise KeyError(f"Unknown ibzoo model {name!r}. {did_you_mean(base, MODEL_INFOS)}")
    info = _DEFAULT_RECIPES[base]
    return _RECIPES[(base, DATASETS[tag].family)] if tag in DATASETS else info

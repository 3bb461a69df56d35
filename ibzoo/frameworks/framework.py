"""``Framework``: everything ibzoo knows of one joint-embedding method, stated in that method's own file.

A framework file (``simclr.py``, ``barlow_twins.py``, ``byol.py``, ``vicreg.py``, ``mocov3.py``) holds its
loss, and one ``Framework`` value with its heads, its views, its paper presets and where the bottleneck
projectors of "Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025,
arXiv:2503.00507) go, each quoting the reference file it follows. ``registry.py`` lists them; nothing
else in ibzoo names a framework. To add a sixth: one new file here and one entry in ``registry.py``.

Families: the zoo's data sets take one of two recipes, "cifar" (32 px images: CIFAR, Fashion-MNIST) and
"imagenet" (224 px: ImageNet-100), as solo-learn's ``scripts/pretrain/{cifar,imagenet-100}`` do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ibzoo.names import PROJECTORS
from ibzoo.projectors import ProjectorConfig
from ibzoo.projectors.topk import TopKInit
from ibzoo.view_recipe import ViewRecipe

__all__ = ["Family", "Framework", "Recipe"]

Family = Literal["cifar", "imagenet"]

# The sparse top-k autoencoder of the paper's reference code (PKU-ML/Projector_Theory, methods/simclr.py and
# methods/barlow_twins.py, scripts/pretrain/cifar/*.yaml): 100000 latents, 1000 kept per row.
TOPK_LATENTS, TOPK_K = 100_000, 1_000


@dataclass(frozen=True)
class Recipe:
    """A framework's training recipe on one family of data sets, read from its reference yaml."""

    lr: float
    """LARS base learning rate per 256 images."""
    weight_decay: float
    batch_size: int
    """Global batch of the reference runs (per GPU x GPUs)."""
    epochs: int
    classifier_lr: float
    """The online linear classifier's lr (solo-learn's ``optimizer.classifier_lr``)."""
    warmup_epochs: float = 10
    """solo-learn's ``scheduler.warmup_epochs`` default, which every reference yaml keeps."""


@dataclass(frozen=True)
class Framework:
    """One joint-embedding framework: its loss, heads, views, presets and bottleneck placement.

    Settings are the :class:`~ibzoo.objectives.ObjectiveConfig` fields the framework reads, with the
    reference's values per family; a field it does not read is refused there, so one framework never
    silently takes another's values.
    """

    name: str
    """The name in zoo names and configs (``resnet18_cifar_{name}_topk``)."""
    title: str
    """How tables and model cards write it."""
    citation: str
    """The paper, for docstrings and cards."""
    loss: Callable[..., nn.Module]
    """The loss class; called with the settings named in ``loss_args``."""
    loss_args: tuple[str, ...]
    settings: Mapping[Family, Mapping[str, Any]]
    """Every ObjectiveConfig field it reads, with its value in each family."""
    heads: Mapping[Family, ProjectorConfig]
    """The plain projector (the ``mlp`` baseline) in each family."""
    topk_stem: ProjectorConfig | None
    """The MLP part kept in front of the top-k autoencoder (ending in ReLU at its hidden width); None: the
    autoencoder replaces the head and works at the backbone's width (SimCLR)."""
    fsq_levels: int
    """FSQ levels of its ``fsq`` and ``topk_fsq`` heads."""
    recipes: Mapping[Family, Recipe]
    views: Callable[[int], tuple[ViewRecipe, ...]]
    """View recipes at an image size; view v takes recipe v % len(recipes)."""
    predictor: ProjectorConfig | None = None
    """Template of the online predictor (BYOL, MoCo v3): its hidden width is the ``predictor_hidden``
    setting and its output width the projector's."""
    topk_fsq_standardize: bool = False
    """Standardize the top-k output before quantizing in ``topk_fsq`` (ibzoo's deviation, see
    :class:`~ibzoo.projectors.DiscretizedProjector`)."""
    topk_init: TopKInit = "independent"
    """The top-k autoencoder's init in ``topk`` and ``topk_fsq``: the reference's ``"independent"``, or
    ``"tied"`` where a framework's file says why it deviates (see
    :meth:`~ibzoo.projectors.TopKSparseProjector.reset_parameters`)."""
    withheld: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Projectors the zoo names no model with for this framework, each with the measurement that keeps
    it out: a zoo name promises that it trains and that its published weights beat an untrained network.
    ``ibzoo.create_pretraining_model(backbone, framework=..., projector=...)`` still builds the pair, and
    ``train/pretrain.py --experiment`` trains it (``ibzoo.models.catalog.withheld_error`` says how)."""

    @property
    def has_target(self) -> bool:
        """Whether it trains against a momentum (EMA) copy of backbone and projector."""
        return "momentum_base" in self.settings["cifar"]

    def build_loss(self, settings: Any) -> nn.Module:
        """The loss module, from an object carrying the settings as attributes (an ObjectiveConfig)."""
        return self.loss(**{name: getattr(settings, name) for name in self.loss_args})

    def projector_config(self, projector: str, family: Family) -> ProjectorConfig:
        """The zoo's ``projector`` kind (``ibzoo.names.PROJECTORS``) for this framework in ``family``."""
        if projector not in PROJECTORS:
            raise ValueError(f"Unknown projector {projector!r}; choose one of {', '.join(PROJECTORS)}.")
        head = self.heads[family]
        if projector in ("mlp", "mlp_mi"):
            return head
        if projector == "fsq":
            return dataclasses.replace(head, fsq_levels=self.fsq_levels)
        sizes = dict(topk_latents=TOPK_LATENTS, topk_k=TOPK_K, topk_init=self.topk_init)
        if self.topk_stem is None:
            topk = ProjectorConfig(hidden_features=(), out_features=None, **sizes)
        else:
            topk = dataclasses.replace(self.topk_stem, **sizes)
        if projector == "topk":
            return topk
        return dataclasses.replace(
            topk, fsq_levels=self.fsq_levels, fsq_standardize=self.topk_fsq_standardize
        )

    def predictor_config(self, out_features: int, hidden: int) -> ProjectorConfig | None:
        """The predictor for a projector of width ``out_features``; None without one."""
        if self.predictor is None:
            return None
        return dataclasses.replace(self.predictor, hidden_features=(hidden,), out_features=out_features)

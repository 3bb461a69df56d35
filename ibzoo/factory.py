"""``create_model`` and friends: how a name becomes a backbone or a full pretraining model.

Zoo names are registered with timm (see :mod:`ibzoo.models.zoo`), so these functions are thin: they add
the defaults an encoder zoo wants (pooled features, no classifier), the projector and objective for
pretraining, and error messages that say what to do. Pretrained weights and a checkpoint's recorded
configs come through one door, :mod:`ibzoo.loading`, which reads each published model's config.json once.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import split_model_name_tag
from torch import nn

from ibzoo.frameworks import FRAMEWORK_NAMES
from ibzoo.loading import load_backbone, load_projector_weights, load_published
from ibzoo.models.catalog import (
    MODEL_INFOS,
    WITHHELD,
    ModelInfo,
    get_model_info,
    paper_objective_config,
    paper_projector_config,
    withheld_error,
)
from ibzoo.models.pretraining import SSLModel
from ibzoo.models.publication import names_a_source
from ibzoo.names import PROJECTORS, did_you_mean
from ibzoo.objectives import ObjectiveConfig
from ibzoo.projectors import ProjectorConfig

__all__ = ["create_model", "create_pretraining_model", "list_models", "list_pretrained", "model_info"]


def _check_arguments(model_name: Any, kwargs: dict[str, Any]) -> None:
    """Refuse a model name or a size argument of the wrong type here, naming it, rather than deep in timm."""
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(
            f"model_name must be a model name such as 'resnet18_cifar_simclr_topk', 'hf-hub:org/repo' or "
            f"'local-dir:/path', got {model_name!r}."
        )
    for key, minimum in (("num_classes", 0), ("in_chans", 1)):
        value = kwargs.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{key}={value!r} must be an integer, not a {type(value).__name__}.")
        if value < minimum:
            raise ValueError(f"{key}={value} must be >= {minimum}.")


def _check_known(model_name: str) -> None:
    if names_a_source(model_name):
        return
    base = split_model_name_tag(model_name)[0]
    if base in WITHHELD:
        raise withheld_error(model_name)
    if base in MODEL_INFOS or timm.is_model(base):
        return
    # The zoo's names are registered with timm too; did_you_mean lists each once.
    raise KeyError(f"Unknown model {model_name!r}. {did_you_mean(base, [*MODEL_INFOS, *timm.list_models()])}")


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The pre-projector backbone of ``model_name`` as an ordinary timm model.

    ``model_name`` is a zoo name (optionally with a pretrained tag, ``resnet18_cifar_simclr_topk.cifar10``),
    ``hf-hub:org/repo``, ``local-dir:/path`` or any timm name. Zoo names return pooled features by
    default (``num_classes=0``); every timm keyword argument (``num_classes``, ``features_only``,
    ``in_chans``, ``global_pool``, ``drop_rate``, ``pretrained_cfg_overlay``, ``checkpoint_path``, ...)
    is honoured.
    """
    _check_arguments(model_name, kwargs)
    _check_known(model_name)
    return load_backbone(model_name, pretrained, kwargs)[0]


def create_pretraining_model(
    model_name: str,
    pretrained: bool = False,
    *,
    framework: str | None = None,
    projector: str | None = None,
    projector_config: ProjectorConfig | None = None,
    objective_config: ObjectiveConfig | None = None,
    **kwargs: Any,
) -> SSLModel:
    """A full :class:`~ibzoo.models.pretraining.SSLModel` (backbone + projector + objective).

    For a zoo name the projector and objective come from its recipe, or with ``pretrained=True`` from
    the checkpoint, which may size them differently (the ``.fmnist`` top-k layers are smaller);
    ``projector_config`` / ``objective_config`` override them. Any other timm backbone is paired by naming
    the framework (one of :data:`ibzoo.frameworks.FRAMEWORK_NAMES`: simclr, barlow, byol, vicreg,
    mocov3) and projector (:data:`ibzoo.names.PROJECTORS`: mlp, fsq, topk, topk_fsq, mlp_mi), e.g.
    ``create_pretraining_model("convnext_tiny", framework="simclr", projector="topk")``.
    An ibzoo checkpoint named ``hf-hub:org/repo`` or ``local-dir:/path`` brings its own projector and
    objective configs. With ``pretrained=True`` the projector's published weights are loaded too, to
    continue training.
    Remaining keyword arguments go to the backbone (timm); ``num_classes`` is always 0.
    """
    _check_arguments(model_name, kwargs)
    _check_known(model_name)
    # The projector reads pooled (B, C) features: refuse what would fail at the first step instead.
    if kwargs.get("features_only") or kwargs.get("global_pool") == "":
        given = (
            "features_only=True" if kwargs.get("features_only") else f"global_pool={kwargs['global_pool']!r}"
        )
        raise ValueError(
            f"create_pretraining_model({model_name!r}, {given}): the projector needs pooled features of "
            "shape (batch, channels); drop that argument (global_pool='avg', 'max', ... are fine). For a "
            "feature pyramid, use ibzoo.create_model(..., features_only=True)."
        )
    info = get_model_info(model_name) if split_model_name_tag(model_name)[0] in MODEL_INFOS else None
    published = None  # the published model model_name names, once its config.json is read
    if info is not None:
        if (framework, projector) not in ((None, None), (info.framework, info.projector)):
            raise ValueError(
                f"{model_name} is already {info.framework} + {info.projector}; drop framework= / projector= "
                "or pass the backbone's timm name instead."
            )
    elif names_a_source(model_name) and (framework, projector) == (None, None):
        published = load_published(model_name)  # an ibzoo checkpoint records its projector and objective
        recorded_projector, recorded_objective = published.pretraining_configs()
        projector_config = projector_config or recorded_projector
        objective_config = objective_config or recorded_objective
    elif projector_config is None or objective_config is None:
        if framework is None or projector is None:
            raise ValueError(
                f"{model_name!r} is not a zoo name: pass framework= (one of {', '.join(FRAMEWORK_NAMES)}) "
                f"and projector= (one of {', '.join(PROJECTORS)}), or projector_config= and "
                "objective_config=."
            )
        projector_config = projector_config or paper_projector_config(framework, projector)
        objective_config = objective_config or paper_objective_config(framework, projector)
    kwargs["num_classes"] = 0
    # With pretrained, the published model is the one the backbone's weights came from, with their projector.
    backbone, published = load_backbone(model_name, pretrained, kwargs, published, with_projector=True)
    if info is not None:
        recorded = None
        if pretrained and published is not None and (projector_config is None or objective_config is None):
            recorded = published.zoo_configs(info.framework, info.projector)
        default_projector, default_objective = recorded or (info.projector_config, info.objective_config)
        projector_config = projector_config or default_projector
        objective_config = objective_config or default_objective
    model = SSLModel(backbone, projector_config, objective_config)
    if pretrained:
        load_projector_weights(model, published, model_name)
    return model


def list_models(pattern: str = "*", pretrained: bool = False, include_tags: bool = False) -> list[str]:
    """Zoo names matching a shell-style ``pattern``.

    ``include_tags=True`` lists every ``name.tag`` the zoo has a recipe and a Hub repo id for, published
    or not (as ``timm.list_models(include_tags=True)``); ``pretrained=True`` only the ``name.tag`` entries
    whose weights are published on huggingface.co (``ibzoo.models.publication.PUBLISHED``).
    """
    names = timm.list_models(pattern, pretrained=pretrained, include_tags=include_tags or pretrained)
    return sorted(n for n in names if split_model_name_tag(n)[0] in MODEL_INFOS)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Every ``name.tag`` matching ``pattern`` whose weights are published on huggingface.co."""
    return list_models(pattern, pretrained=True)


def model_info(model_name: str) -> ModelInfo:
    """Framework, projector, recipe and pretrained tags of a zoo name."""
    return get_model_info(model_name)

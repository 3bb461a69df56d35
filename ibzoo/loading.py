"""The one door for loading published ibzoo models: config.json read once, weights from safetensors.

A published model (a Hub repo or a folder, :class:`~ibzoo.published_source.PublishedSource`)
holds the backbone in ``model.safetensors``, the projector in ``projector.safetensors`` and both
configurations in ``config.json``. :func:`load_published` reads its config.json once
(:meth:`~ibzoo.published_source.PublishedSource.read_config` checks it) and gives the factory
(:mod:`ibzoo.factory`) what it needs: where the published model lives, the projector and objective
configs it records and, on demand, the projector's weights. The projector comes from the same
place as the backbone: where :func:`~ibzoo.models.publication.locate_weights` found its weights (a zoo
name's ``hf_hub_id``, ``hf-hub:org/repo[@revision]``, ``local-dir:/path``, or the folder of a
``pretrained_cfg_overlay=dict(file=".../model.safetensors")``), resolved once, in :func:`load_backbone`.

Only safetensors and JSON files are read: :func:`load_backbone` fetches the backbone's safetensors
file itself and hands timm that local file (:func:`ibzoo.weights.create_from_file`), so timm's
fallbacks to ``pytorch_model.bin`` and ``.pth`` URLs (``torch.load``) are never reached, and a
pickle-only source is refused naming the file (:mod:`ibzoo.weights`). A config.json written by a newer
ibzoo (major.minor) is refused. Every failure a user can meet is re-raised with the source tried and the
remedy (:func:`~ibzoo.published_source.explained_errors`).

Publishing (:mod:`ibzoo.hub`: ``save_pretrained``, ``push_to_hub``, cards and plots) builds on this
module; nothing here imports it, so loading a model never imports the card renderer or the plots.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from timm.models import split_model_name_tag
from torch import Tensor, nn

from ibzoo.models.catalog import MODEL_INFOS
from ibzoo.models.pretraining import SSLModel
from ibzoo.models.publication import locate_weights, names_a_source, source_of
from ibzoo.objectives import ObjectiveConfig, recorded_objective_config
from ibzoo.projectors import ProjectorConfig
from ibzoo.published_source import (
    CONFIG_FILE,
    PROJECTOR_FILE,
    PretrainedWeightsUnavailableError,
    PublishedSource,
    explained_errors,
)
from ibzoo.weights import (
    CheckpointError,
    check_state_dict,
    create_from_file,
    load_weights_file,
    read_safetensors,
)

# With the errors loading raises, defined where they arise (ibzoo.weights, ibzoo.published_source).
__all__ = [
    "CheckpointError",
    "PretrainedWeightsUnavailableError",
    "PublishedModel",
    "backbone_architecture",
    "load_backbone",
    "load_projector_weights",
    "load_published",
    "published_folder",
]


@dataclasses.dataclass(frozen=True)
class PublishedModel:
    """A published model as loading needs it: where it lives and its config.json, read once.

    Attributes:
        name: What it was loaded as (``hf-hub:...``, ``local-dir:...``, a zoo name), named in errors.
        source: Where its files lie.
        config: Its config.json (timm's format), checked by :func:`load_published`.
    """

    name: str
    source: PublishedSource
    config: dict[str, Any]

    @property
    def section(self) -> dict[str, Any] | None:
        """config.json's "ibzoo" section; None for a plain timm checkpoint, which has no projector."""
        return self.config.get("ibzoo")

    def pretraining_configs(self) -> tuple[ProjectorConfig, ObjectiveConfig]:
        """The projector and objective configs the checkpoint records; a plain timm one is refused."""
        if self.section is None:
            raise CheckpointError(
                f"{self.source} is a plain timm checkpoint ({self.config.get('architecture')}) without an "
                "ibzoo projector: pass framework= and projector= to create_pretraining_model to pair it "
                "with a new projector."
            )
        return _recorded_configs(self.source, self.section)

    def zoo_configs(self, framework: str, projector: str) -> tuple[ProjectorConfig, ObjectiveConfig] | None:
        """The recorded projector and objective configs when the checkpoint is an ibzoo one of this
        framework and projector kind; else None.

        A zoo tag's checkpoint may size its projector unlike the name's recipe (the ``.fmnist`` top-k
        layers are smaller): its recorded configs are the ones its projector weights fit. A checkpoint of
        another kind is left to :func:`load_projector_weights`, which reports the mismatch.
        """
        section = self.section
        if section is None or (section.get("framework"), section.get("projector")) != (framework, projector):
            return None
        return _recorded_configs(self.source, section)

    def projector_state(self) -> tuple[dict[str, Tensor], Path]:
        """The projector's tensors (``projector.safetensors``) and the local file they were read from."""
        with explained_errors(self.name, self.source, "projector weights"):
            path = self.source.fetch(PROJECTOR_FILE)
            return read_safetensors(path, "projector"), path


def _recorded_configs(
    source: PublishedSource, section: Mapping[str, Any]
) -> tuple[ProjectorConfig, ObjectiveConfig]:
    """The projector and objective configs of config.json's ibzoo section. A wrong, unknown or missing
    entry is the file's fault, and the error says so (not the caller's, nor a TypeError from inside)."""
    try:
        projector, objective = section.get("projector_config"), section.get("objective_config")
        if not (isinstance(projector, Mapping) and isinstance(objective, Mapping)):
            raise TypeError("projector_config and objective_config must be JSON objects")
        return ProjectorConfig(**projector), recorded_objective_config(dict(objective))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"The {CONFIG_FILE} of {source} has an invalid ibzoo section ({error}); it was not written by "
            "ibzoo.hub.save_pretrained, or was edited since. Re-save the checkpoint."
        ) from None


def load_published(source: str | PublishedSource, name: str | None = None) -> PublishedModel:
    """The published model ``source`` names, with its config.json read and checked once.

    Args:
        source: A ``hf-hub:org/repo[@revision]`` or ``local-dir:/path`` name, a zoo name with a pretrained
            tag, or a :class:`~ibzoo.published_source.PublishedSource`.
        name: What the model is loaded as, named in errors (default: ``source``).

    Raises:
        CheckpointError: config.json is not valid JSON, not timm's format, or from a newer ibzoo.
        PretrainedWeightsUnavailableError: config.json cannot be had (no such file, repo or revision;
            offline and not cached), with the source tried and the remedy.
    """
    if isinstance(source, str):
        name = name or source
        found = source_of(source)
        if found is None:
            raise ValueError(f"{source!r} names no published checkpoint (no Hub repo and no folder).")
        source = found
    name = name or source.name
    with explained_errors(name, source, "configuration"):
        return PublishedModel(name, source, source.read_config())


def load_backbone(
    model_name: str,
    pretrained: bool,
    kwargs: dict[str, Any],
    published: PublishedModel | None = None,
    with_projector: bool = False,
) -> tuple[nn.Module, PublishedModel | None]:
    """The backbone ``ibzoo.create_model`` returns, and the published model with its config.json read:
    ``published`` when the caller already loaded the one ``model_name`` names, else read here for a
    ``hf-hub:`` or ``local-dir:`` name, and when ``with_projector`` and ``pretrained``, wherever the
    weights were found (the projector lies beside them).

    Where the weights lie is resolved once (:func:`~ibzoo.models.publication.locate_weights`) and passed
    down: to the config read, the weights read, the errors and the caller for the projector. The
    weights are read from safetensors only (:func:`~ibzoo.weights.create_from_file`), never through
    timm's pickle fallbacks; weights the caller passed in memory, or none at all, are timm's business.
    """
    checkpoint_path = kwargs.pop("checkpoint_path", None)
    # The published model the name itself names (hf-hub:, local-dir:), resolved once: by the caller or here;
    # and what weights that do not fit it should have been.
    base = split_model_name_tag(model_name)[0]
    named, expected = None, repr(MODEL_INFOS[base].architecture if base in MODEL_INFOS else base)
    if names_a_source(model_name):
        named = published.source if published is not None else source_of(model_name)
        expected = "the architecture its config.json names"
    weights = locate_weights(model_name, kwargs, named) if pretrained else None
    source = weights.source if weights is not None else named
    wanted = (pretrained and with_projector) or named is not None
    bare_file = weights is not None and weights.bare_file  # timm's format: no config.json, no projector
    if wanted and source is not None and not bare_file and (published is None or published.source != source):
        # Refuses a config.json that is invalid or from a newer ibzoo before timm reads the weights.
        with explained_errors(model_name, source, "configuration"):
            published = PublishedModel(model_name, source, source.read_config())
    with explained_errors(model_name, source, "pretrained weights", expected):
        try:
            if weights is not None and weights.source is not None:
                path = weights.source.fetch(weights.filename)
                model = create_from_file(model_name, path, weights.origin, **kwargs)
            else:
                model = timm.create_model(model_name, pretrained=weights is not None, **kwargs)
        except TypeError as err:
            if "unexpected keyword argument" not in str(err):
                raise
            raise TypeError(
                f"{model_name}: {err}. create_model passes extra keyword arguments to the timm model class; "
                "check the spelling against timm.create_model's documentation."
            ) from None
        if checkpoint_path:
            load_weights_file(model, checkpoint_path)
    return model, published


def published_folder(path: str | Path) -> Path:
    """The published model's folder a user's ``path`` names: ``path`` itself when it holds config.json (a
    folder written by ``ibzoo.hub.save_pretrained``, a fine-tuned model, a Hub download), else its
    ``model/`` (the output folder of a pretraining run, ``train/pretrain.py --output-dir``).

    The folder named comes first: a path that is a published model is taken as it is.
    """
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"Neither {path / CONFIG_FILE} nor {path / 'model' / CONFIG_FILE} exists. Pass the output folder "
        "of a pretraining run that finished (train/pretrain.py --output-dir), or a folder with config.json "
        "and model.safetensors (ibzoo.hub.save_pretrained)."
    )


def backbone_architecture(backbone: nn.Module) -> str:
    """The registered timm architecture of a backbone ("resnet18_cifar" for any resnet18_cifar_* zoo name)."""
    architecture = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if architecture is None:
        raise ValueError("The backbone has no timm pretrained_cfg: build it with ibzoo.create_model or timm.")
    base = split_model_name_tag(architecture)[0]
    return MODEL_INFOS[base].architecture if base in MODEL_INFOS else architecture


def load_projector_weights(model: SSLModel, published: PublishedModel | None, model_name: str) -> None:
    """Load the projector of ``published``, the one the backbone's weights came from (found by
    :func:`ibzoo.models.publication.locate_weights`), into ``model.projector`` (strict), with the predictor
    and momentum target of a framework that has them (:meth:`SSLModel.heads`).

    Weights from no ibzoo checkpoint (a timm model's own) have no projector: the new one is kept, with a
    warning.
    """
    if published is None or published.section is None:
        warnings.warn(
            f"The weights of {model_name!r} come without an ibzoo projector; the projector starts from "
            "scratch.",
            stacklevel=3,
        )
        return
    _check_same_model(published, model)
    state_dict, path = published.projector_state()
    heads = model.heads()
    check_state_dict(state_dict, heads.state_dict(), str(path))
    try:
        heads.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split()[:24])  # the first missing keys or size mismatches are enough
        raise CheckpointError(
            f"{path} does not fit the projector that {published.source}'s config.json describes ({detail} "
            "...): the two files were not saved together. Re-save the checkpoint with "
            "ibzoo.hub.save_pretrained."
        ) from None


def _check_same_model(published: PublishedModel, model: SSLModel) -> None:
    config, section, source = published.config, published.section, published.source
    expected = backbone_architecture(model.backbone)
    if config.get("architecture") != expected:
        raise CheckpointError(
            f"{source} holds a {config.get('architecture')} ({section.get('model_name')}), but "
            f"{published.name!r} is a {expected}: point it at a checkpoint of a {expected}."
        )
    published = ProjectorConfig(**section["projector_config"])
    if published != model.projector_config:
        raise CheckpointError(
            f"{source} holds the projector of {section.get('model_name')}, but the model was built with "
            f"another one: pass projector_config={published!r} or the matching zoo name."
        )

"""Publishing ibzoo checkpoints on the Hugging Face Hub; loading them back lives in :mod:`ibzoo.loading`.

A published checkpoint is a folder (a Hub repo, or the ``DIR/model`` of a pretraining run) holding:

- ``model.safetensors``: the backbone's state dict under timm's own names, so that plain
  ``timm.create_model("hf-hub:org/repo", pretrained=True)`` loads it strictly;
- ``projector.safetensors``: the projector's state dict (with BYOL and MoCo v3 also the predictor and the
  momentum target: :meth:`SSLModel.heads`), for ``ibzoo.create_pretraining_model``;
- ``config.json``: timm's config (architecture, num_features, global_pool, pretrained_cfg, model_args)
  plus an "ibzoo" section (version, model name, framework, projector, projector and objective configs,
  training configuration, dataset, evaluation results); each setting is stored once: the training
  configuration's projector and objective are the projector and objective configs;
- ``README.md``: the model card (:mod:`ibzoo.model_card`);
- ``training_curves.png``: loss and information plane of the run (:mod:`ibzoo.plotting`), given its log.

Both weight files carry the safetensors metadata {"format": "pt", "ibzoo_version", "model_name",
"content": "backbone" | "projector"}. Every file is written atomically.

This module imports loading (:mod:`ibzoo.loading`, to check a folder before it is pushed), never the
other way round: loading a checkpoint imports neither the card renderer nor the plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg, save_for_hf, split_model_name_tag
from torch import nn

from ibzoo.atomic_files import TMP_SUFFIX, write_atomically
from ibzoo.factory import create_pretraining_model
from ibzoo.hub_requests import HUB_ERRORS, HubFailure, hub_failure, time_limits
from ibzoo.loading import backbone_architecture, load_published
from ibzoo.model_card import render_model_card
from ibzoo.models.catalog import MODEL_INFOS, projector_kind
from ibzoo.models.datasets import DATASETS
from ibzoo.models.pretraining import SSLModel
from ibzoo.models.publication import names_a_source, source_of
from ibzoo.plotting import plot_training_log
from ibzoo.published_source import (
    CONFIG_FILE,
    PROJECTOR_FILE,
    WEIGHTS_FILE,
    PretrainedWeightsUnavailableError,
    PublishedSource,
)
from ibzoo.version import __version__
from ibzoo.weights import CheckpointError

__all__ = ["CARD_FILE", "CURVES_FILE", "check_folder", "push_to_hub", "save_pretrained", "zoo_repo_id"]

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CURVES_FILE = "training_curves.png"


def _save_weights(module: nn.Module, path: Path, model_name: str, content: str) -> None:
    tensors = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    metadata = {"format": "pt", "ibzoo_version": __version__, "model_name": model_name, "content": content}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _write_timm_config(backbone: nn.Module, path: Path, model_config: Mapping[str, Any]) -> None:
    """Write timm's config.json of ``backbone`` (plus ``model_config``) to ``path``, atomically.

    timm's public exporter, ``save_for_hf``, writes the weights too; they are dropped here, as
    :func:`_save_weights` writes them with ibzoo's metadata.
    """
    with tempfile.TemporaryDirectory(prefix="ibzoo-timm-export-") as export:
        save_for_hf(backbone, export, model_config=dict(model_config), safe_serialization=True)
        write_atomically(path, lambda tmp: shutil.copyfile(Path(export) / CONFIG_FILE, tmp))


def _dataset(model_name: str, train_config: Mapping[str, Any] | None) -> str | None:
    """The pretraining dataset: the training configuration's, else the one a zoo name's tag stands for."""
    if train_config and (dataset := (train_config.get("data") or {}).get("dataset")):
        return dataset
    tag = split_model_name_tag(model_name)[1]
    return DATASETS[tag].hf_dataset if tag in DATASETS else None


def _tag_pretrained_cfg(model_name: str) -> dict[str, Any]:
    """The preprocessing that the zoo's table gives a tagged zoo name ("...cifar100"), else nothing."""
    base, tag = split_model_name_tag(model_name)
    if base not in MODEL_INFOS or tag not in MODEL_INFOS[base].pretrained_tags:
        return {}
    cfg = get_pretrained_cfg(model_name)
    keys = ("tag", "input_size", "pool_size", "mean", "std", "crop_pct", "interpolation")
    return {key: getattr(cfg, key) for key in keys}


def zoo_repo_id(model_name: str) -> str | None:
    """The Hub repo a checkpoint named ``model_name`` belongs to: a tagged zoo name's published repo
    ("ibzoo/resnet18_cifar_simclr_topk.cifar10") or an ``hf-hub:`` name's; None for anything else.

    An untagged zoo name is the user's own model: timm would resolve it to the default tag's repo, which
    holds other weights.
    """
    if not (names_a_source(model_name) or "." in model_name.split("/")[-1]):
        return None
    source = source_of(model_name)
    return source.repo_id if source is not None else None  # None for a local-dir: folder


def _default_repo_id(model_name: str) -> str:
    """Where the card's snippets point when no repo is given: the zoo's repo, else a placeholder."""
    name = re.sub(r"[^\w.-]+", "-", model_name.split(":")[-1].split("/")[-1]).strip("-.")[:80]
    return zoo_repo_id(model_name) or f"YOUR_ORG/{name or 'model'}"


def save_pretrained(
    model: SSLModel,
    folder: str | Path,
    *,
    model_name: str,
    pretrained_cfg: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
    results: Mapping[str, float] | None = None,
    log_file: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``model`` as a Hub-ready folder (see the module docstring); returns the folder.

    Args:
        model: The pretrained model; the backbone goes to model.safetensors, the projector to
            projector.safetensors.
        folder: Where to write (created if needed); files already there are replaced one by one, atomically.
        model_name: What the checkpoint is, e.g. "resnet18_cifar_simclr_topk.cifar10" (a zoo name with the
            tag of its dataset) or any label; recorded in the metadata and the card.
        pretrained_cfg: Overrides of the backbone's timm pretrained_cfg, e.g. the input_size, mean and std
            the model was trained with; a tagged zoo name's table entry is the default.
        train_config: The resolved training configuration (nested dicts), shown in the card. Its
            "projector" and "objective" are not stored again: the model's projector and objective configs
            are, and the card shows them with the rest.
        results: Evaluation results, as ibzoo.evaluation.evaluate_backbone returns them ("linear_top1" and
            "knn_top1" in percent go into the card's model-index).
        log_file: The run's log.jsonl, plotted into training_curves.png.
        repo_id: The Hub repo the folder is meant for, shown in the card's usage snippets (default: the zoo's
            repo of ``model_name``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone_only()
    # The model's own configs are what its weights fit; stored once, as projector_config / objective_config.
    if train_config is not None:
        train_config = {
            key: value for key, value in train_config.items() if key not in ("projector", "objective")
        }
    section = {
        "version": __version__,
        "model_name": model_name,
        "framework": model.objective_config.framework,
        "projector": projector_kind(model.projector_config, model.objective_config),
        "projector_config": dataclasses.asdict(model.projector_config),
        "objective_config": dataclasses.asdict(model.objective_config),
        "train_config": train_config,
        "dataset": _dataset(model_name, train_config),
        "results": results,
    }
    try:
        json.dumps(section)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"train_config and results must hold JSON values (dicts, lists, numbers, text): {err}."
        ) from None
    _save_weights(backbone, folder / WEIGHTS_FILE, model_name, "backbone")
    _save_weights(model.heads(), folder / PROJECTOR_FILE, model_name, "projector")
    # timm's exporter records model_args and the preprocessing; the architecture is the registered timm
    # name so that plain timm rebuilds the backbone without the zoo's projector-specific names.
    model_config = {
        "pretrained_cfg": {
            **_tag_pretrained_cfg(model_name),
            **(pretrained_cfg or {}),
            "architecture": backbone_architecture(backbone),
        },
        "ibzoo": section,
    }
    _write_timm_config(backbone, folder / CONFIG_FILE, model_config)
    curves = plot_training_log(Path(log_file)) if log_file is not None else None
    if curves is not None:
        write_atomically(folder / CURVES_FILE, lambda tmp: curves.save(tmp, format="PNG"))
    card = render_model_card(
        json.loads((folder / CONFIG_FILE).read_text()),
        repo_id=repo_id or _default_repo_id(model_name),
        curves_file=CURVES_FILE if curves is not None else None,
    )
    write_atomically(folder / CARD_FILE, card.save)
    return folder


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload a folder written by :func:`save_pretrained` to ``repo_id`` in one commit; returns its URL.

    The repo is created if needed, and so is the branch ``revision``. The token comes from ``token``, else
    from huggingface_hub (HF_TOKEN or ``hf auth login``). A failed push changes nothing locally: fix the
    cause and push the same folder again.
    """
    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except hf_errors.HFValidationError as err:
        raise ValueError(
            f"Cannot push {folder}: {repo_id!r} is not a Hub repo id ('org/name'): {err}"
        ) from None
    config = check_folder(folder)
    model_name = config.get("ibzoo", {}).get("model_name", folder.name)
    operations = [
        CommitOperationAdd(path.relative_to(folder).as_posix(), path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(TMP_SUFFIX) and path.name != CARD_FILE
    ]
    api = HfApi(token=token, library_name="ibzoo", library_version=__version__)
    try:
        with time_limits():
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # with its namespace
            # The card in the folder names the repo save_pretrained was told of; the pushed one, this repo.
            curves_file = CURVES_FILE if (folder / CURVES_FILE).is_file() else None
            card = render_model_card(config, repo_id=repo_id, curves_file=curves_file)
            operations.append(CommitOperationAdd(CARD_FILE, str(card).encode()))
            if revision is not None and not create_pr:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.create_commit(
                repo_id,
                operations,
                revision=revision,
                commit_message=commit_message or f"Upload {model_name} (ibzoo {__version__})",
                create_pr=create_pr,
            )
    except HUB_ERRORS as err:
        raise ConnectionError(_push_failed(folder, repo_id, hub_failure(err))) from err
    logger.info("Pushed %s to %s", folder, commit.pr_url or commit.commit_url)
    return commit.commit_url


def _push_failed(folder: Path, repo_id: str, failure: HubFailure) -> str:
    """The message of a failed push: what the Hub did, and that the folder is unchanged."""
    again = f"push it again with `python train/push_to_hub.py {folder} --repo-id {repo_id}`"
    if failure.kind == "offline":
        return f"Cannot push {folder} to {repo_id}: huggingface_hub is offline; unset HF_HUB_OFFLINE."
    if failure.kind == "unauthorized":
        cause = "not allowed: log in with `hf auth login` or set HF_TOKEN to a token with write access"
        remedy = f"The folder is unchanged: {again}."
    elif failure.kind in ("timeout", "cut_short"):
        cause = failure.detail.rstrip(".")
        remedy = f"The folder is unchanged: {again}."
    elif failure.kind == "unreachable":
        cause = f"{constants.ENDPOINT} could not be reached: {failure.detail}"
        remedy = f"The folder is unchanged: check the connection (or HF_ENDPOINT), then {again}."
    elif failure.kind == "server_error":
        cause = f"the Hub answered HTTP {failure.status}, a server error: {failure.detail}"
        remedy = f"The folder is unchanged: {again} later."
    else:
        cause = f"the Hub refused the request: {failure.detail}"
        remedy = "The folder is unchanged; pushed again as it is, it fails alike: fix what the Hub names."
    return f"Pushing {folder} to {repo_id} at {constants.ENDPOINT} failed ({cause}). {remedy}"


def check_folder(folder: str | Path) -> dict[str, Any]:
    """Load ``folder`` as ``create_pretraining_model("local-dir:...", pretrained=True)`` would, with every
    check of loading (config, version, weights, projector), and return its config.json.

    :func:`push_to_hub` calls it before the first byte leaves, so a broken folder is never published. It
    lives with publishing because it builds the whole model through the factory, which loading serves.
    """
    folder = Path(folder)
    missing = [name for name in (WEIGHTS_FILE, PROJECTOR_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}: write it with ibzoo.hub.save_pretrained first."
        )
    source = PublishedSource(folder=folder)
    try:
        create_pretraining_model(source.name, pretrained=True)
    except (CheckpointError, PretrainedWeightsUnavailableError) as err:
        raise CheckpointError(f"{folder} cannot be published, it does not load: {err}") from err
    return load_published(source).config

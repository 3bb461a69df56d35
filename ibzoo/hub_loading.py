"""Loading published ibzoo checkpoints, and errors that name what was tried and what to do instead.

The projector of a checkpoint comes from the same place as its backbone: a zoo name's ``hf_hub_id``,
``hf-hub:org/repo[@revision]``, ``local-dir:/path``, or the folder of a
``pretrained_cfg_overlay=dict(file=".../model.safetensors")``. Only safetensors files are read, so
nothing downloaded is ever unpickled; a config.json written by a newer ibzoo (major.minor) is refused.
Every failure a user can meet (offline and not cached, unknown repo or revision, missing file, another
architecture or projector, truncated file, newer ibzoo) is re-raised with the source tried and the remedy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import safetensors
from huggingface_hub import constants, hf_hub_download
from huggingface_hub import errors as hf_errors
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg
from torch import Tensor, nn

from ibzoo.models.pretraining import SSLModel
from ibzoo.models.zoo import MODEL_INFOS
from ibzoo.objectives import ObjectiveConfig
from ibzoo.projectors import ProjectorConfig
from ibzoo.version import __version__

__all__ = [
    "CONFIG_FILE",
    "PROJECTOR_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "CheckpointSource",
    "PretrainedWeightsUnavailableError",
    "backbone_architecture",
    "load_projector_weights",
    "pretrained_weights_errors",
    "pretraining_configs",
    "published_zoo_configs",
]

WEIGHTS_FILE = "model.safetensors"
PROJECTOR_FILE = "projector.safetensors"
CONFIG_FILE = "config.json"


def _hf_split(hub_id: str) -> tuple[str, str | None]:
    """``"org/repo@revision"`` -> ``("org/repo", "revision")``; no ``@``: revision None (timm's syntax)."""
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Pretrained weights could not be found or downloaded: offline, no such repo, revision or file."""


class CheckpointError(ValueError):
    """A checkpoint was found but cannot be used: corrupt, for another model, or from a newer ibzoo."""


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a published checkpoint lives: a Hub repo at a revision, or a local folder."""

    repo_id: str | None = None
    revision: str | None = None
    folder: Path | None = None

    @classmethod
    def from_name(cls, model_name: str) -> CheckpointSource | None:
        """The source of ``hf-hub:org/repo[@rev]``, ``local-dir:/path`` or a zoo/timm name with a Hub repo."""
        if model_name.startswith("local-dir:"):
            return cls(folder=Path(model_name.removeprefix("local-dir:")))
        if model_name.startswith("hf-hub:"):
            return cls(*_hf_split(model_name.removeprefix("hf-hub:")))
        with contextlib.suppress(RuntimeError):  # timm's answer to an unknown pretrained tag
            cfg = get_pretrained_cfg(model_name)
            if cfg is not None and cfg.hf_hub_id:
                return cls(*_hf_split(cfg.hf_hub_id))
        return None

    @classmethod
    def from_backbone(cls, backbone: nn.Module) -> CheckpointSource | None:
        """Where timm took ``backbone``'s pretrained weights from (its resolved ``pretrained_cfg``)."""
        cfg = getattr(backbone, "pretrained_cfg", {})
        if cfg.get("source") == "local-dir":
            return cls(folder=Path(cfg["file"]))
        if cfg.get("file") and cfg.get("source") != "hf-hub":
            return cls(folder=Path(cfg["file"]).parent)
        return cls(*_hf_split(cfg["hf_hub_id"])) if cfg.get("hf_hub_id") else None

    def __str__(self) -> str:
        if self.folder is not None:
            return f"folder {str(self.folder)!r}"
        revision = f" (revision {self.revision!r})" if self.revision else ""
        return f"Hub repo {self.repo_id!r}{revision} at {constants.ENDPOINT}"

    def fetch(self, filename: str) -> Path:
        """The local path of ``filename`` (downloaded into the Hugging Face cache for a repo)."""
        if self.folder is None:
            try:
                path = hf_hub_download(
                    self.repo_id,
                    filename,
                    revision=self.revision,
                    library_name="ibzoo",
                    library_version=__version__,
                )
            except hf_errors.RemoteEntryNotFoundError:
                raise PretrainedWeightsUnavailableError(f"{self} has no {filename}. {_REPUBLISH}") from None
            return Path(path)
        path = self.folder / filename
        if not path.is_file():
            raise PretrainedWeightsUnavailableError(f"{self} has no {filename}. {_REPUBLISH}")
        return path


_REPUBLISH = (
    "An ibzoo checkpoint holds model.safetensors, projector.safetensors and config.json: write one with "
    "ibzoo.hub.save_pretrained and upload it with ibzoo.hub.push_to_hub (train/push_to_hub.py)."
)


def _where_else() -> str:
    return (
        f"To use a mirror, set HF_ENDPOINT (now {constants.ENDPOINT}) before importing ibzoo; to use a local "
        "copy, pass 'local-dir:/path/to/folder' (a folder written by ibzoo.hub.save_pretrained) or "
        "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors')."
    )


@contextlib.contextmanager
def _explained_errors(model_name: str, source: CheckpointSource | None, what: str) -> Iterator[None]:
    """Re-raise download and loading failures of ``what`` with the source tried and the remedy."""
    where = str(source) if source is not None else "its pretrained source"
    try:
        yield
    except (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError) as err:
        reason = (
            "huggingface_hub is offline (HF_HUB_OFFLINE=1) and they are not in its cache; run once online to "
            "fill the cache"
            if constants.is_offline_mode()
            else f"{constants.ENDPOINT} could not be reached and they are not cached; check the connection"
        )
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r} from {where}: {reason}. {_where_else()}"
        ) from err
    except hf_errors.RepositoryNotFoundError as err:
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r}: {where} does not exist (or is private: log in with "
            f"`hf auth login` or set HF_TOKEN). {_where_else()}"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r}: {where} has no such revision; use a branch, tag or "
            f"commit id that exists, e.g. 'hf-hub:{source.repo_id if source else 'org/repo'}@main'."
        ) from err
    except hf_errors.HfHubHTTPError as err:
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r} from {where}: {str(err).splitlines()[0]}. "
            f"{_where_else()}"
        ) from err
    except safetensors.SafetensorError as err:
        raise CheckpointError(
            f"The {what} of {model_name!r} from {where} are truncated or corrupt ({err}). Download them "
            f"again (delete the repo's folder under {constants.HF_HUB_CACHE} first) or re-save the "
            "checkpoint with ibzoo.hub.save_pretrained."
        ) from err
    except RuntimeError as err:
        if "Error(s) in loading state_dict" not in str(err):
            raise
        base = model_name.split(".", 1)[0]
        expected = MODEL_INFOS[base].architecture if base in MODEL_INFOS else base
        detail = " ".join(str(err).split()[:24])  # the first missing keys or size mismatches are enough
        raise CheckpointError(
            f"The {what} given for {model_name!r} do not fit its architecture {expected!r}: they were saved "
            f"from another model ({detail} ...). Point {model_name!r} at a checkpoint of a {expected} (its "
            f"default source is {where})."
        ) from err


@contextlib.contextmanager
def pretrained_weights_errors(model_name: str) -> Iterator[None]:
    """Re-raise the backbone's download or load failures with the source tried and how to point elsewhere."""
    with _explained_errors(model_name, CheckpointSource.from_name(model_name), "pretrained weights"):
        yield


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise CheckpointError(
            f"config.json names an unreadable ibzoo version {version!r}; re-save the checkpoint."
        )
    return int(match[1]), int(match[2])


def _read_config(source: CheckpointSource) -> dict[str, Any]:
    """config.json of ``source``, refused when a newer ibzoo (major.minor) wrote it."""
    path = source.fetch(CONFIG_FILE)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"config.json of {source} is not valid JSON ({err}); re-save the checkpoint."
        ) from None
    written = config.get("ibzoo", {}).get("version", "0.0")
    if _major_minor(written) > _major_minor(__version__):
        raise CheckpointError(
            f"{source} was written by ibzoo {written}, newer than the installed ibzoo {__version__}: "
            f"upgrade with pip install -U 'ibzoo>={'.'.join(map(str, _major_minor(written)))}'."
        )
    return config


def backbone_architecture(backbone: nn.Module) -> str:
    """The registered timm architecture of a backbone ("resnet18_cifar" for any resnet18_cifar_* zoo name)."""
    architecture = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if architecture is None:
        raise ValueError("The backbone has no timm pretrained_cfg: build it with ibzoo.create_model or timm.")
    base = architecture.split(".", 1)[0]
    return MODEL_INFOS[base].architecture if base in MODEL_INFOS else architecture


def _load_safetensors(path: Path, content: str) -> dict[str, Tensor]:
    with safetensors.safe_open(str(path), framework="pt") as weights:
        found = (weights.metadata() or {}).get("content", content)
    if found != content:
        raise CheckpointError(f"{path} holds the {found}, not the {content}; re-save the checkpoint.")
    return load_file(path)


def pretraining_configs(model_name: str) -> tuple[ProjectorConfig, ObjectiveConfig]:
    """The projector and objective configs recorded by a ``hf-hub:...`` or ``local-dir:...`` checkpoint."""
    if not model_name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"pretraining_configs reads 'hf-hub:' or 'local-dir:' checkpoints, not {model_name!r}."
        )
    source = CheckpointSource.from_name(model_name)
    with _explained_errors(model_name, source, "configuration"):
        config = _read_config(source)
    section = config.get("ibzoo")
    if section is None:
        raise CheckpointError(
            f"{source} is a plain timm checkpoint ({config.get('architecture')}) without an ibzoo projector: "
            "pass framework= and projector= to create_pretraining_model to pair it with a new projector."
        )
    return _recorded_configs(section)


def published_zoo_configs(
    backbone: nn.Module, model_name: str, framework: str, projector: str
) -> tuple[ProjectorConfig, ObjectiveConfig] | None:
    """The projector and objective configs recorded by the checkpoint ``backbone``'s weights came from,
    when it is an ibzoo checkpoint of the same framework and projector kind; else None.

    A zoo tag's checkpoint may size its projector unlike the name's recipe (the ``.fmnist`` top-k layers
    are smaller): its recorded configs are the ones its projector weights fit. A checkpoint of another
    kind is left to :func:`load_projector_weights`, which reports the mismatch.
    """
    source = CheckpointSource.from_backbone(backbone)
    if source is None:
        return None
    with _explained_errors(model_name, source, "configuration"):
        section = _read_config(source).get("ibzoo")
    if section is None or (section.get("framework"), section.get("projector")) != (framework, projector):
        return None
    return _recorded_configs(section)


def _recorded_configs(section: Mapping[str, Any]) -> tuple[ProjectorConfig, ObjectiveConfig]:
    return ProjectorConfig(**section["projector_config"]), ObjectiveConfig(**section["objective_config"])


def load_projector_weights(model: SSLModel, model_name: str) -> None:
    """Load the published projector of ``model_name`` into ``model.projector`` (strict).

    The projector is read from wherever timm took the backbone's weights. Weights that are not an ibzoo
    checkpoint (a timm model's own) have no projector: the new one is kept, with a warning.
    """
    source = CheckpointSource.from_backbone(model.backbone)
    with _explained_errors(model_name, source, "projector weights"):
        config = _read_config(source) if source is not None else {}
        if "ibzoo" not in config:
            warnings.warn(
                f"The weights of {model_name!r} come without an ibzoo projector; the projector starts from "
                "scratch.",
                stacklevel=3,
            )
            return
        _check_same_model(config, model, model_name, source)
        state_dict = _load_safetensors(source.fetch(PROJECTOR_FILE), "projector")
    model.projector.load_state_dict(state_dict)


def _check_same_model(
    config: Mapping[str, Any], model: SSLModel, model_name: str, source: CheckpointSource
) -> None:
    section = config["ibzoo"]
    expected = backbone_architecture(model.backbone)
    if config.get("architecture") != expected:
        raise CheckpointError(
            f"{source} holds a {config.get('architecture')} ({section.get('model_name')}), but "
            f"{model_name!r} is a {expected}: point it at a checkpoint of a {expected}."
        )
    published = ProjectorConfig(**section["projector_config"])
    if published != model.projector_config:
        raise CheckpointError(
            f"{source} holds the projector of {section.get('model_name')}, but the model was built with "
            f"another one: pass projector_config={published!r} or the matching zoo name."
        )

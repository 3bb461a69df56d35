"""Where a published ibzoo checkpoint lives, how its files are fetched, and errors that say so.

A checkpoint is a Hub repo at a revision or a local folder (:class:`CheckpointSource`) holding
``model.safetensors`` (the backbone), ``projector.safetensors`` and ``config.json``. A file is fetched
through huggingface_hub's cache; a missing one is refused naming the source, and a pickle found in its
place is refused naming the pickle (:mod:`ibzoo.weights`). :func:`explained_errors` re-raises every
failure a user can meet while fetching or reading (offline and not cached, unknown repo or revision,
server error, truncated file, weights of another model) with the source tried and the remedy.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import safetensors
from huggingface_hub import constants, hf_hub_download
from huggingface_hub import errors as hf_errors
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from ibzoo.hub_requests import HUB_ERRORS, HubFailure, hub_failure, time_limits
from ibzoo.models.catalog import MODEL_INFOS
from ibzoo.models.publication import is_unpublished, not_published_error, tag_repo_id
from ibzoo.version import __version__
from ibzoo.weights import PICKLE_SUFFIXES, CheckpointError, PretrainedWeightsUnavailableError, refuse_pickle

__all__ = [
    "CONFIG_FILE",
    "PROJECTOR_FILE",
    "WEIGHTS_FILE",
    "CheckpointSource",
    "PretrainedWeightsUnavailableError",
    "explained_errors",
]

WEIGHTS_FILE = "model.safetensors"
PROJECTOR_FILE = "projector.safetensors"
CONFIG_FILE = "config.json"


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
            return cls.from_hub_id(model_name.removeprefix("hf-hub:"))
        with contextlib.suppress(RuntimeError):  # timm's answer to an unknown pretrained tag
            cfg = get_pretrained_cfg(model_name)
            if cfg is not None and cfg.hf_hub_id:
                return cls.from_hub_id(cfg.hf_hub_id)
        repo_id = tag_repo_id(model_name)  # a zoo tag not published yet: its repo, on a mirror or local Hub
        return cls(repo_id) if repo_id is not None else None

    @classmethod
    def from_hub_id(cls, hub_id: str) -> CheckpointSource:
        """The Hub repo ``"org/repo@revision"`` (timm's syntax; no ``@``: the default branch)."""
        repo_id, _, revision = hub_id.partition("@")
        return cls(repo_id, revision or None)

    @classmethod
    def from_backbone(cls, backbone: nn.Module) -> CheckpointSource | None:
        """Where timm took ``backbone``'s pretrained weights from (its resolved ``pretrained_cfg``)."""
        cfg = getattr(backbone, "pretrained_cfg", {})
        if cfg.get("source") == "local-dir":
            return cls(folder=Path(cfg["file"]))
        if cfg.get("file") and cfg.get("source") != "hf-hub":
            return cls(folder=Path(cfg["file"]).parent)
        return cls.from_hub_id(cfg["hf_hub_id"]) if cfg.get("hf_hub_id") else None

    @property
    def name(self) -> str:
        """Its name for ``ibzoo.create_model``: ``local-dir:PATH`` or ``hf-hub:ORG/NAME[@REVISION]``."""
        if self.folder is not None:
            return f"local-dir:{self.folder}"
        return f"hf-hub:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def __str__(self) -> str:
        if self.folder is not None:
            return f"folder {str(self.folder)!r}"
        revision = f" (revision {self.revision!r})" if self.revision else ""
        return f"Hub repo {self.repo_id!r}{revision} at {constants.ENDPOINT}"

    def fetch(self, filename: str) -> Path:
        """The local path of ``filename`` (downloaded into the Hugging Face cache for a repo)."""
        if self.folder is None:
            try:
                with time_limits():
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
            pickled = _pickle_instead(self.folder, filename)
            if pickled is not None:
                refuse_pickle(pickled)
            raise PretrainedWeightsUnavailableError(f"{self} has no {filename}. {_REPUBLISH}")
        return path


def _pickle_instead(folder: Path, filename: str) -> Path | None:
    """The pickle ``folder`` holds in place of the safetensors ``filename``, if any: one of the same stem
    (projector.bin for projector.safetensors), or for the backbone timm's names (pytorch_model.bin, ...)."""
    if not filename.endswith(".safetensors") or not folder.is_dir():
        return None
    stem = filename.removesuffix(".safetensors")
    pickles = [path for path in sorted(folder.iterdir()) if path.name.endswith(PICKLE_SUFFIXES)]
    same_stem = [path for path in pickles if path.name.split(".")[0] == stem]
    if same_stem or filename != WEIGHTS_FILE:
        return same_stem[0] if same_stem else None
    backbone = [path for path in pickles if not path.name.startswith("projector.")]
    return backbone[0] if backbone else None


_REPUBLISH = (
    "An ibzoo checkpoint holds model.safetensors, projector.safetensors and config.json (weights are read "
    "from safetensors only, never from pytorch_model.bin or other pickles): write one with "
    "ibzoo.hub.save_pretrained and upload it with ibzoo.hub.push_to_hub (train/push_to_hub.py)."
)


def _where_else() -> str:
    return (
        f"To use a mirror, set HF_ENDPOINT (now {constants.ENDPOINT}) before importing ibzoo; to use a local "
        "copy, pass 'local-dir:/path/to/folder' (a folder written by ibzoo.hub.save_pretrained) or "
        "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors')."
    )


def _why_not(failure: HubFailure) -> str:
    """Why a download failed, and what to do, in a few words."""
    if failure.kind == "offline":
        return (
            "huggingface_hub is offline (HF_HUB_OFFLINE=1) and they are not in its cache; run once online "
            "to fill the cache"
        )
    if failure.kind == "timeout":
        return failure.detail.rstrip(".")
    if failure.kind == "server_error":
        return (
            f"{constants.ENDPOINT} answered HTTP {failure.status}, a server error, and they are not cached; "
            "try again later"
        )
    if failure.kind == "unreachable":
        return f"{constants.ENDPOINT} could not be reached and they are not cached; check the connection"
    if failure.kind == "unauthorized":
        return f"{constants.ENDPOINT} refused access (HTTP {failure.status}); log in with `hf auth login`"
    return failure.detail


@contextlib.contextmanager
def explained_errors(model_name: str, source: CheckpointSource | None, what: str) -> Iterator[None]:
    """Re-raise download and loading failures of ``what`` with the source tried and the remedy."""
    where = str(source) if source is not None else "its pretrained source"
    try:
        yield
    except hf_errors.HFValidationError as err:
        repo = source.repo_id if source is not None else model_name
        raise ValueError(
            f"{model_name!r}: {repo!r} is not a valid Hub repo id ({err}); name a repo as "
            "'hf-hub:org/name' or 'hf-hub:org/name@revision'."
        ) from None
    except hf_errors.RepositoryNotFoundError as err:
        if is_unpublished(model_name):
            raise not_published_error(model_name, f"{where} does not exist") from err
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r}: {where} does not exist (or is private: log in with "
            f"`hf auth login` or set HF_TOKEN). {_where_else()}"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r}: {where} has no such revision; use a branch, tag or "
            f"commit id that exists, e.g. 'hf-hub:{source.repo_id if source else 'org/repo'}@main'."
        ) from err
    except HUB_ERRORS as err:
        raise PretrainedWeightsUnavailableError(
            f"Could not get the {what} of {model_name!r} from {where}: {_why_not(hub_failure(err))}. "
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
        base = split_model_name_tag(model_name)[0]
        if model_name.startswith(("hf-hub:", "local-dir:")):
            expected = "the architecture its config.json names"
        else:
            expected = repr(MODEL_INFOS[base].architecture if base in MODEL_INFOS else base)
        detail = " ".join(str(err).split()[:24])  # the first missing keys or size mismatches are enough
        raise CheckpointError(
            f"The {what} from {where} do not fit {model_name!r}, {expected} ({detail} ...). A few keys "
            "or shapes named: the file was damaged or edited, so re-save it; many: it holds another "
            f"model, so point {model_name!r} at weights of the same architecture."
        ) from err

"""Where a published ibzoo model lives, how its files are fetched, and errors that say so.

A published model is a Hub repo at a revision or a local folder (:class:`PublishedSource`) holding
``model.safetensors`` (the backbone), ``projector.safetensors`` and ``config.json``. A file is fetched
through huggingface_hub's cache; a missing one is refused naming the source, and a pickle found in its
place is refused naming the pickle (:mod:`ibzoo.weights`). config.json is read and checked here
(:meth:`PublishedSource.read_config`: timm's format, and not written by a newer ibzoo).
:func:`explained_errors` re-raises every failure a user can meet while fetching or reading (offline and
not cached, unknown repo or revision, server error, truncated file, weights of another model) with the
source tried and the remedy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors
from huggingface_hub import constants, hf_hub_download
from huggingface_hub import errors as hf_errors

from ibzoo.hub_requests import HUB_ERRORS, HubFailure, hub_failure, time_limits
from ibzoo.version import __version__
from ibzoo.weights import (
    PICKLE_SUFFIXES,
    CheckpointError,
    PretrainedWeightsUnavailableError,
    pickle_refusal,
    remedy_for,
)

__all__ = [
    "CONFIG_FILE",
    "FOLDER_PREFIX",
    "HUB_PREFIX",
    "PROJECTOR_FILE",
    "WEIGHTS_FILE",
    "PretrainedWeightsUnavailableError",
    "PublishedSource",
    "WeightsSource",
    "explained_errors",
]

HUB_PREFIX = "hf-hub:"
FOLDER_PREFIX = "local-dir:"
WEIGHTS_FILE = "model.safetensors"
PROJECTOR_FILE = "projector.safetensors"
CONFIG_FILE = "config.json"


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise CheckpointError(
            f"config.json names an unreadable ibzoo version {version!r}; re-save the checkpoint."
        )
    return int(match[1]), int(match[2])


@dataclasses.dataclass(frozen=True)
class PublishedSource:
    """Where a published model lives: a Hub repo at a revision, or a local folder. A name becomes one in
    :func:`ibzoo.models.publication.source_of`."""

    repo_id: str | None = None
    revision: str | None = None
    folder: Path | None = None
    # For a zoo tag whose weights are not on huggingface.co yet: what to tell a user when its repo cannot
    # be found (how to train them), set where the name is resolved (ibzoo.models.publication.source_of).
    not_published: str | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Its name for ``ibzoo.create_model``: ``local-dir:PATH`` or ``hf-hub:ORG/NAME[@REVISION]``."""
        if self.folder is not None:
            return f"{FOLDER_PREFIX}{self.folder}"
        return f"{HUB_PREFIX}{self.hub_id}"

    @property
    def hub_id(self) -> str | None:
        """timm's ``hf_hub_id`` of a repo, ``ORG/NAME[@REVISION]``; None for a folder."""
        if self.repo_id is None:
            return None
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

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
                raise pickle_refusal(pickled)
            raise PretrainedWeightsUnavailableError(f"{self} has no {filename}. {_REPUBLISH}")
        return path

    def read_config(self) -> dict[str, Any]:
        """config.json, checked to be timm's format (plus an ibzoo section) and refused when a newer ibzoo
        (major.minor) wrote it."""
        path = self.fetch(CONFIG_FILE)
        try:
            config = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(
                f"{CONFIG_FILE} of {self} ({path}) is not valid JSON ({err}). {remedy_for(path)}."
            ) from None
        expected = {"architecture": str, "pretrained_cfg": dict, "model_args": dict, "ibzoo": dict}
        wrong = [
            f"{key!r} is a {type(config[key]).__name__}, not a {kind.__name__}"
            for key, kind in expected.items()
            if isinstance(config, dict) and key in config and not isinstance(config[key], kind)
        ]
        if not isinstance(config, dict) or "architecture" not in config or wrong:
            problem = "; ".join(wrong) or (
                "it has no 'architecture'"
                if isinstance(config, dict)
                else f"it is a JSON {type(config).__name__}"
            )
            raise CheckpointError(
                f"{CONFIG_FILE} of {self} ({path}) is not a timm model config: {problem}. Re-save the "
                "checkpoint with ibzoo.hub.save_pretrained (or timm's save_for_hf)."
            )
        written = config.get("ibzoo", {}).get("version", "0.0")
        if _major_minor(str(written)) > _major_minor(__version__):
            raise CheckpointError(
                f"{self} was written by ibzoo {written}, newer than the installed ibzoo {__version__}: "
                f"upgrade with pip install -U 'ibzoo>={'.'.join(map(str, _major_minor(written)))}'."
            )
        return config


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a model name's pretrained backbone weights lie, resolved once by
    :func:`ibzoo.models.publication.locate_weights`.

    Attributes:
        source: The published model (repo or folder) holding them, with its config.json and
            projector beside; None when the caller passed a state dict in memory or nothing names any.
        filename: The weights file in ``source`` (``model.safetensors``, or the name of an overlay's
            ``file``).
        origin: The ``pretrained_cfg`` entries that name this source (``source``, ``hf_hub_id``, ``file``,
            ...), which the loaded model's ``pretrained_cfg`` keeps.
    """

    source: PublishedSource | None
    filename: str
    origin: dict[str, Any]

    @property
    def bare_file(self) -> bool:
        """Whether the weights are an overlay's ``file`` in a folder without config.json: timm's own format,
        with no published model (and no ibzoo projector) around it."""
        return bool(
            self.origin.get("source") != "local-dir"
            and self.origin.get("file")
            and self.source is not None
            and self.source.folder is not None
            and not (self.source.folder / CONFIG_FILE).is_file()
        )


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
    if failure.kind in ("timeout", "cut_short"):
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
def explained_errors(
    model_name: str, source: PublishedSource | None, what: str, expected: str | None = None
) -> Iterator[None]:
    """Re-raise download and loading failures of ``what`` with the source tried and the remedy;
    ``expected`` says what weights that do not fit should have been (an architecture)."""
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
        if source is not None and source.not_published:
            raise PretrainedWeightsUnavailableError(
                f"{source.not_published} Tried: {where} does not exist."
            ) from err
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
        detail = " ".join(str(err).split()[:24])  # the first missing keys or size mismatches are enough
        raise CheckpointError(
            f"The {what} from {where} do not fit {model_name!r}, {expected or 'its architecture'} "
            f"({detail} ...). A few keys or shapes named: the file was damaged or edited, so re-save it; "
            f"many: it holds another model, so point {model_name!r} at weights of the same architecture."
        ) from err

"""Loading published ibzoo checkpoints, and errors that name what was tried and what to do instead.

The projector of a checkpoint comes from the same place as its backbone: a zoo name's ``hf_hub_id``,
``hf-hub:org/repo[@revision]``, ``local-dir:/path``, or the folder of a
``pretrained_cfg_overlay=dict(file=".../model.safetensors")``. Only safetensors and JSON files are read:
:func:`create_pretrained` reads the backbone's weights itself and hands timm the checked tensors, so
timm's fallbacks to ``pytorch_model.bin`` and ``.pth`` URLs (``torch.load``) are never reached, and a
pickle-only source is refused naming the file (:mod:`ibzoo.weights`). A config.json written by a newer
ibzoo (major.minor) is refused.
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
import timm
from huggingface_hub import constants, hf_hub_download
from huggingface_hub import errors as hf_errors
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg, resolve_pretrained_cfg, split_model_name_tag

# timm has no public function for "which file would load_pretrained read for this cfg": ibzoo must read
# exactly that file itself (safetensors only), so it asks the private helper timm's loader uses.
from timm.models._builder import _resolve_pretrained_source
from torch import Tensor, nn

from ibzoo.models.pretraining import SSLModel
from ibzoo.models.zoo import MODEL_INFOS
from ibzoo.objectives import ObjectiveConfig
from ibzoo.projectors import ProjectorConfig
from ibzoo.version import __version__
from ibzoo.weights import PICKLE_SUFFIXES, CheckpointError, check_state_dict, refuse_pickle

__all__ = [
    "CONFIG_FILE",
    "PROJECTOR_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "CheckpointSource",
    "PretrainedWeightsUnavailableError",
    "backbone_architecture",
    "check_source_config",
    "create_pretrained",
    "load_projector_weights",
    "load_safetensors_checkpoint",
    "pretrained_weights_errors",
    "pretraining_configs",
    "published_zoo_configs",
    "read_config",
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


def _http_status(error: BaseException) -> int | None:
    """The HTTP status behind ``error`` (huggingface_hub wraps a failed request in a cache miss), if any."""
    seen = error
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if status is not None:
            return status
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _explained_errors(model_name: str, source: CheckpointSource | None, what: str) -> Iterator[None]:
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
    except (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError) as err:
        status = _http_status(err)
        if constants.is_offline_mode():
            reason = (
                "huggingface_hub is offline (HF_HUB_OFFLINE=1) and they are not in its cache; run once "
                "online to fill the cache"
            )
        elif status is not None and status >= 500:
            reason = (
                f"{constants.ENDPOINT} answered HTTP {status}, a server error, and they are not cached; try "
                "again later"
            )
        else:
            reason = (
                f"{constants.ENDPOINT} could not be reached and they are not cached; check the connection"
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


@contextlib.contextmanager
def pretrained_weights_errors(
    model_name: str, pretrained_cfg_overlay: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Re-raise the backbone's download or load failures with the source tried and how to point elsewhere.

    A ``pretrained_cfg_overlay`` naming a local ``file`` is the source then, not the name's Hub repo.
    """
    file = (pretrained_cfg_overlay or {}).get("file")
    source = CheckpointSource(folder=Path(file).parent) if file else CheckpointSource.from_name(model_name)
    with _explained_errors(model_name, source, "pretrained weights"):
        yield


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise CheckpointError(
            f"config.json names an unreadable ibzoo version {version!r}; re-save the checkpoint."
        )
    return int(match[1]), int(match[2])


def read_config(source: CheckpointSource) -> dict[str, Any]:
    """config.json of ``source``, checked to be timm's format (plus an ibzoo section) and refused when a
    newer ibzoo (major.minor) wrote it."""
    path = source.fetch(CONFIG_FILE)
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{CONFIG_FILE} of {source} ({path}) is not valid JSON ({err}); re-save the checkpoint."
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
            f"{CONFIG_FILE} of {source} ({path}) is not a timm model config: {problem}. Re-save the "
            "checkpoint with ibzoo.hub.save_pretrained (or timm's save_for_hf)."
        )
    written = config.get("ibzoo", {}).get("version", "0.0")
    if _major_minor(str(written)) > _major_minor(__version__):
        raise CheckpointError(
            f"{source} was written by ibzoo {written}, newer than the installed ibzoo {__version__}: "
            f"upgrade with pip install -U 'ibzoo>={'.'.join(map(str, _major_minor(written)))}'."
        )
    return config


def check_source_config(model_name: str) -> None:
    """Refuse the config.json of a ``hf-hub:`` or ``local-dir:`` name before timm reads it: invalid or
    wrong-typed JSON, or written by a newer ibzoo. Other names have no such file."""
    if model_name.startswith(("hf-hub:", "local-dir:")):
        with _explained_errors(model_name, CheckpointSource.from_name(model_name), "configuration"):
            read_config(CheckpointSource.from_name(model_name))


def backbone_architecture(backbone: nn.Module) -> str:
    """The registered timm architecture of a backbone ("resnet18_cifar" for any resnet18_cifar_* zoo name)."""
    architecture = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if architecture is None:
        raise ValueError("The backbone has no timm pretrained_cfg: build it with ibzoo.create_model or timm.")
    base = split_model_name_tag(architecture)[0]
    return MODEL_INFOS[base].architecture if base in MODEL_INFOS else architecture


def _load_safetensors(path: Path, content: str) -> dict[str, Tensor]:
    """The tensors of the safetensors file ``path``, which must hold ``content`` ("backbone", "projector")
    when its metadata says; a truncated file is named, with the remedy for where it lies."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as weights:
            found = (weights.metadata() or {}).get("content", content)
        tensors = load_file(path) if found == content else None
    except safetensors.SafetensorError as err:
        cache = Path(constants.HF_HUB_CACHE).resolve()
        remedy = (
            f"Download it again: delete the repo's folder under {cache} first"
            if cache in Path(path).resolve().parents
            else "Re-save the checkpoint with ibzoo.hub.save_pretrained (or copy it again)"
        )
        raise CheckpointError(f"{path} is truncated or corrupt ({err}). {remedy}.") from None
    if tensors is None:
        raise CheckpointError(f"{path} holds the {found}, not the {content}; re-save the checkpoint.")
    return tensors


_SOURCE_KEYS = ("source", "file", "url", "hf_hub_id", "hf_hub_filename", "state_dict", "custom_load")


def _weights_origin(model_name: str, kwargs: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """The pretrained_cfg entries that say where timm would take ``model_name``'s weights from."""
    if model_name.startswith("local-dir:"):
        cfg = {"source": "local-dir", "file": model_name.removeprefix("local-dir:")}
    elif model_name.startswith("hf-hub:"):
        cfg = {"source": "hf-hub", "hf_hub_id": model_name.removeprefix("hf-hub:")}
    else:
        architecture, tag = split_model_name_tag(model_name)
        resolved = resolve_pretrained_cfg(architecture, kwargs.get("pretrained_cfg") or tag or None, overlay)
        return {key: value for key, value in resolved.to_dict().items() if key in _SOURCE_KEYS}
    return {**cfg, **{key: value for key, value in overlay.items() if key in _SOURCE_KEYS}}


def _read_pretrained_weights(origin: Mapping[str, Any]) -> tuple[dict[str, Tensor], str] | None:
    """The backbone weights ``origin`` names, read from a safetensors file, and where they came from.

    None for an in-memory ``state_dict`` (the caller's own) or no source at all (timm says so).
    """
    load_from, location = _resolve_pretrained_source(dict(origin))
    if load_from in ("", "state_dict"):
        return None
    if origin.get("custom_load"):
        refuse_pickle(
            location if isinstance(location, str) else "/".join(location), "weights in a custom format"
        )
    if load_from == "url":
        refuse_pickle(location)
    if load_from == "file":
        path = Path(location)
        if not path.name.endswith(".safetensors"):
            refuse_pickle(path)
        if not path.is_file():
            raise PretrainedWeightsUnavailableError(f"Pretrained weights file {path} does not exist.")
    elif load_from == "local-dir":
        path = CheckpointSource(folder=Path(location)).fetch(WEIGHTS_FILE)
    else:  # hf-hub: a repo id, or (repo id, file name)
        repo, filename = (location, WEIGHTS_FILE) if isinstance(location, str) else location
        if not filename.endswith(".safetensors"):
            if filename != "pytorch_model.bin":  # timm's default, whose safetensors twin is model.safetensors
                refuse_pickle(f"{repo}/{filename}")
            filename = WEIGHTS_FILE
        path = CheckpointSource(*_hf_split(repo)).fetch(filename)
    return _load_safetensors(path, "backbone"), str(path)


def create_pretrained(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=True, **kwargs)``, reading the weights from safetensors.

    The weights are read here, from wherever timm would take them (the name's Hub repo, a ``local-dir:``
    folder, a ``pretrained_cfg_overlay`` file), and handed to timm as an in-memory state dict, so that
    timm still adapts them (input channels, classifier) but never falls back to a pickle. The model's
    ``pretrained_cfg`` keeps the original source; the tensors are checked against the model
    (:func:`ibzoo.weights.check_state_dict`).
    """
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    origin = _weights_origin(model_name, kwargs, overlay)
    found = _read_pretrained_weights(origin)
    if found is None:
        return timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay=overlay or None, **kwargs
        )
    state_dict, where = found
    tensors = dict(state_dict)  # timm edits the dict it is given (drops a classifier, adapts the stem)
    # An empty source makes timm take the state dict ahead of every other location.
    loading = {**overlay, "state_dict": state_dict, "source": ""}
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=loading, **kwargs)
    model.pretrained_cfg.pop("state_dict", None)
    for key in ("source", "custom_load"):
        model.pretrained_cfg.pop(key, None)
        if origin.get(key) is not None:
            model.pretrained_cfg[key] = origin[key]
    check_state_dict(tensors, model.state_dict(), where)
    return model


def load_safetensors_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``model`` strictly, as timm's ``checkpoint_path=`` does."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        refuse_pickle(path)
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(f"checkpoint_path {path} does not exist.")
    state_dict = _load_safetensors(path, "backbone")
    check_state_dict(state_dict, model.state_dict(), str(path))
    model.load_state_dict(state_dict)


def pretraining_configs(model_name: str) -> tuple[ProjectorConfig, ObjectiveConfig]:
    """The projector and objective configs recorded by a ``hf-hub:...`` or ``local-dir:...`` checkpoint."""
    if not model_name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"pretraining_configs reads 'hf-hub:' or 'local-dir:' checkpoints, not {model_name!r}."
        )
    source = CheckpointSource.from_name(model_name)
    with _explained_errors(model_name, source, "configuration"):
        config = read_config(source)
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
        section = read_config(source).get("ibzoo")
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
        config = read_config(source) if source is not None else {}
        if "ibzoo" not in config:
            warnings.warn(
                f"The weights of {model_name!r} come without an ibzoo projector; the projector starts from "
                "scratch.",
                stacklevel=3,
            )
            return
        _check_same_model(config, model, model_name, source)
        path = source.fetch(PROJECTOR_FILE)
        state_dict = _load_safetensors(path, "projector")
    check_state_dict(state_dict, model.projector.state_dict(), str(path))
    try:
        model.projector.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split()[:24])  # the first missing keys or size mismatches are enough
        raise CheckpointError(
            f"{path} does not fit the projector that {source}'s config.json describes ({detail} ...): the "
            "two files were not saved together. Re-save the checkpoint with ibzoo.hub.save_pretrained."
        ) from None


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

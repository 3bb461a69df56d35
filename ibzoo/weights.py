"""Reading weights somebody else wrote: safetensors only, and the checks every loaded tensor passes.

ibzoo never unpickles a file (``torch.load``, ``pickle``): unpickling runs whatever code the file names,
and even PyTorch's ``weights_only`` mode is a filter over a format made to run code. Weights are read
from safetensors files, which hold only tensors and text metadata; pickled ones (``pytorch_model.bin``,
``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``) are refused with an error that names the file
(:func:`pickle_refusal`). Every tensor loaded into a model is checked (:func:`check_state_dict`): NaN or
infinite values and integer or boolean tensors for floating-point parameters are refused, naming the
tensor; a cast between floating-point types is reported.

A file is read here too: its metadata must say it holds what is asked for (:func:`check_content`), a
damaged one is named with the remedy for where it lies (:func:`remedy_for`: the Hugging Face cache or a
folder), and a file that lacks some of a model's tensors is refused (:func:`refuse_missing_tensors`).
:func:`create_from_file` builds a timm model from such a file. Where the file comes from is
:mod:`ibzoo.models.publication`'s and :mod:`ibzoo.published_source`'s business; :mod:`ibzoo.loading` puts
them together.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import safetensors
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import load_file
from torch import nn

__all__ = [
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "PretrainedWeightsUnavailableError",
    "check_content",
    "check_dtypes",
    "check_loaded",
    "check_state_dict",
    "create_from_file",
    "load_weights_file",
    "pickle_refusal",
    "read_safetensors",
    "refuse_missing_tensors",
    "remedy_for",
]

# Suffixes of PyTorch's pickle-based files, as timm, Accelerate and torch.save name them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")


class CheckpointError(ValueError):
    """Found weights cannot be used: corrupt, pickled, for another model, or from a newer ibzoo."""


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Pretrained weights could not be found or downloaded: not published, offline, no such repo, revision
    or file."""


def pickle_refusal(path: str | Path, what: str = "weights") -> CheckpointError:
    """The error that refuses the pickled ``path`` (``raise pickle_refusal(path)``): why it is not read and
    how to convert it."""
    return CheckpointError(
        f"{path} holds {what} as a pickle, which ibzoo never reads: unpickling a file runs any code it "
        "names. Use safetensors weights (model.safetensors) instead; a pickle whose author you trust "
        "converts with `safetensors.torch.save_file(torch.load(PATH, weights_only=True), "
        "'model.safetensors')`."
    )


def _check_finite(state_dict: Mapping[str, torch.Tensor], origin: str) -> None:
    """Refuse a floating-point tensor holding NaN or infinity, naming it.

    One float32 sum per tensor (float64 for float64 tensors) reads each weight once and allocates nothing
    the size of the weights: a sum is non-finite when a value is, so the exact per-tensor check runs
    only then, to name the culprit (or to find that the sum merely overflowed, which finite weights of
    any model reach only above 1e32). A float64 sum cost 20x a float32 one on a CPU, and an
    ``isfinite(...).all()`` per tensor a boolean copy and a second pass: either made the check most of a
    load's extra time over timm's.
    """
    floats = [(key, tensor) for key, tensor in state_dict.items() if tensor.is_floating_point()]
    if not floats:
        return
    sums = torch.stack([tensor.sum(dtype=_sum_dtype(tensor)).cpu() for _, tensor in floats])
    if bool(torch.isfinite(sums).all()):
        return
    for key, tensor in floats:
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"Tensor {key!r} of {origin} holds NaN or infinite values: the training that wrote it "
                "diverged or the file is damaged. Use an earlier checkpoint or re-save a good one."
            )


def _sum_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], origin: str
) -> None:
    """Refuse tensors of ``state_dict`` that would load wrongly into a model whose state is ``reference``.

    Refused, naming the tensor: NaN or infinite values; an integer or boolean tensor for a floating-point
    entry (loading would turn it into whole numbers silently); a floating-point tensor for an integer
    entry. A cast between floating-point types is reported with a warning that says whether it is
    lossless. Keys missing from ``reference`` are left to ``load_state_dict``'s own strictness.

    Args:
        state_dict: The tensors read from a file.
        reference: The model's own ``state_dict()`` (dtypes are what matters).
        origin: The file or source, for messages.
    """
    _check_finite(state_dict, origin)
    check_dtypes({key: tensor.dtype for key, tensor in state_dict.items()}, reference, origin, state_dict.get)


def check_loaded(path: str | Path, loaded: Mapping[str, torch.Tensor]) -> set[str]:
    """:func:`check_state_dict` for a safetensors file that timm has just loaded into a model, without
    reading it again: the stored dtypes come from the file's header, the values from the model's state
    dict ``loaded`` (loading keeps the model's dtypes), and only a tensor stored in another floating-point
    type than the model's is read, to tell a lossless cast from a rounding one. Returns the names of the
    stored tensors (from the same header read), for the caller's completeness check."""
    with safetensors.safe_open(str(path), framework="pt") as weights:
        names = set(weights.keys())
        stored = {key: _SAFETENSORS_DTYPES.get(weights.get_slice(key).get_dtype()) for key in names}
        known = {key: dtype for key, dtype in stored.items() if dtype is not None}
        _check_finite({key: loaded[key] for key in known if key in loaded}, str(path))
        check_dtypes(known, loaded, str(path), weights.get_tensor)
    return names


# safetensors' dtype names (its header's "dtype") for the types PyTorch loads.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def check_dtypes(
    dtypes: Mapping[str, torch.dtype],
    reference: Mapping[str, torch.Tensor | torch.dtype],
    origin: str,
    read: Callable[[str], torch.Tensor],
) -> None:
    """The dtype half of :func:`check_state_dict`: ``dtypes`` of the stored tensors against ``reference``
    (the model's tensors or dtypes); ``read(key)`` gives a stored tensor whose float type differs."""
    casts: dict[tuple[torch.dtype, torch.dtype], list[str]] = {}
    rounded: list[str] = []
    for key, dtype in dtypes.items():
        target = reference.get(key)
        target = target.dtype if isinstance(target, torch.Tensor) else target
        if target is None or dtype == target:
            continue
        if target.is_floating_point != dtype.is_floating_point:
            raise CheckpointError(
                f"Tensor {key!r} of {origin} is {dtype}, but the model's is {target}: loading "
                "it would change its values silently. Re-save the weights from a model of this "
                "architecture (ibzoo.hub.save_pretrained)."
            )
        if dtype.is_floating_point:
            casts.setdefault((dtype, target), []).append(key)
            tensor = read(key)
            if not torch.equal(tensor.to(target).to(dtype), tensor):
                rounded.append(key)
    for (source, target), keys in casts.items():
        lossy = [key for key in keys if key in rounded]
        how = (
            f"rounding {len(lossy)} of them (first: {lossy[0]!r})"
            if lossy
            else "a lossless cast: every value is kept exactly"
        )
        warnings.warn(
            f"{origin}: {len(keys)} tensors are stored as {source} and load as the model's {target}, {how}.",
            stacklevel=3,
        )


def remedy_for(path: Path) -> str:
    """What to do about a damaged file: a download is fetched again once its cached copy is gone (the
    cache would otherwise keep serving it), a local file is saved again."""
    cache = Path(constants.HF_HUB_CACHE).resolve()
    if cache in Path(path).resolve().parents:
        return f"Download it again: delete the repo's folder under {cache} first"
    return "Re-save the checkpoint with ibzoo.hub.save_pretrained (or copy it again)"


def check_content(path: Path, content: str) -> None:
    """Refuse the safetensors file ``path`` when its metadata says it holds something other than
    ``content`` ("backbone", "projector"), or its header is damaged, naming the remedy for where it lies."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as weights:
            found = (weights.metadata() or {}).get("content", content)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({err}). {remedy_for(path)}.") from None
    if found != content:
        raise CheckpointError(f"{path} holds the {found}, not the {content}; re-save the checkpoint.")


def read_safetensors(path: Path, content: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, which must hold ``content`` ("backbone", "projector")
    when its metadata says; a truncated file is named, with the remedy for where it lies."""
    check_content(path, content)
    try:
        return load_file(path)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({err}). {remedy_for(path)}.") from None


def refuse_missing_tensors(model: nn.Module, tensors: Collection[str], where: str) -> None:
    """With a new classifier (``num_classes`` other than the checkpoint's) timm loads leniently, so a tensor
    absent from the file would silently keep its random init. Only the classifier may be absent."""
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    missing = [
        key
        for key in model.state_dict()
        if key not in tensors and not any(key.startswith(f"{head}.") for head in heads)
    ]
    if missing:
        raise CheckpointError(
            f"{where} lacks {len(missing)} of the model's tensors ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); they would keep their random init. The file is not a "
            "whole checkpoint of this architecture: re-save it (ibzoo.hub.save_pretrained) or point at "
            "another one."
        )


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``model`` strictly, as timm's ``checkpoint_path=`` does."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise pickle_refusal(path)
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(f"checkpoint_path {path} does not exist.")
    state_dict = read_safetensors(path, "backbone")
    check_state_dict(state_dict, model.state_dict(), str(path))
    model.load_state_dict(state_dict)


def create_from_file(model_name: str, path: Path, origin: Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=True, **kwargs)`` with the backbone weights of the local
    safetensors file ``path``, which ``origin`` (the ``pretrained_cfg`` entries of where it was found)
    names in the model's ``pretrained_cfg``.

    The file is checked to hold a backbone and handed to timm as its ``file``: timm reads it once and
    still adapts it (input channels, classifier, its filters) but never falls back to a pickle. The loaded
    tensors are then checked without reading the file again (:func:`check_loaded`).
    """
    check_content(path, "backbone")
    # An empty source makes timm read the file ahead of every other location.
    overlay = {**(kwargs.pop("pretrained_cfg_overlay", None) or {}), "file": str(path), "source": ""}
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({err}). {remedy_for(path)}.") from None
    for key in ("source", "custom_load", "file", "hf_hub_id"):
        if origin.get(key) is not None:
            model.pretrained_cfg[key] = origin[key]
        elif key != "hf_hub_id":
            model.pretrained_cfg.pop(key, None)
    refuse_missing_tensors(model, check_loaded(path, model.state_dict()), str(path))
    return model

"""Reading weights somebody else wrote: safetensors only, and the checks every loaded tensor passes.

ibzoo never unpickles a file (``torch.load``, ``pickle``): unpickling runs whatever code the file names,
and even PyTorch's ``weights_only`` mode is a filter over a format made to run code. Weights are read
from safetensors files, which hold only tensors and text metadata; pickled ones (``pytorch_model.bin``,
``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``) are refused with an error that names the file
(:func:`refuse_pickle`). Every tensor loaded into a model is checked (:func:`check_state_dict`): NaN or
infinite values and integer or boolean tensors for floating-point parameters are refused, naming the
tensor; a cast between floating-point types is reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import torch

__all__ = [
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "PretrainedWeightsUnavailableError",
    "check_state_dict",
    "refuse_pickle",
]

# Suffixes of PyTorch's pickle-based files, as timm, Accelerate and torch.save name them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tar")


class CheckpointError(ValueError):
    """Found weights cannot be used: corrupt, pickled, for another model, or from a newer ibzoo."""


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Pretrained weights could not be found or downloaded: not published, offline, no such repo, revision
    or file."""


def refuse_pickle(path: str | Path, what: str = "weights") -> NoReturn:
    """Raise CheckpointError for the pickled ``path``: say why it is not read and how to convert it."""
    raise CheckpointError(
        f"{path} holds {what} as a pickle, which ibzoo never reads: unpickling a file runs any code it "
        "names. Use safetensors weights (model.safetensors) instead; a pickle whose author you trust "
        "converts with `safetensors.torch.save_file(torch.load(PATH, weights_only=True), "
        "'model.safetensors')`."
    )


def _check_finite(state_dict: Mapping[str, torch.Tensor], origin: str) -> None:
    """Refuse a floating-point tensor holding NaN or infinity, naming it.

    One float64 sum per tensor reads each weight once and allocates nothing the size of the weights (an
    ``isfinite(...).all()`` per tensor makes a boolean copy and a second pass, and was most of a load's
    extra time over timm's): a sum is non-finite exactly when a value is, or when a float64 sum overflows
    (1e308; float32 weights cannot reach it), so the per-tensor check runs only to name the culprit.
    """
    floats = [(key, tensor) for key, tensor in state_dict.items() if tensor.is_floating_point()]
    if not floats:
        return
    sums = torch.stack([tensor.sum(dtype=torch.float64).cpu() for _, tensor in floats])
    if bool(torch.isfinite(sums).all()):
        return
    for key, tensor in floats:
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"Tensor {key!r} of {origin} holds NaN or infinite values: the training that wrote it "
                "diverged or the file is damaged. Use an earlier checkpoint or re-save a good one."
            )


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
    casts: dict[tuple[torch.dtype, torch.dtype], list[str]] = {}
    rounded: list[str] = []
    for key, tensor in state_dict.items():
        target = reference.get(key)
        if target is None or tensor.dtype == target.dtype:
            continue
        if target.is_floating_point() != tensor.is_floating_point():
            raise CheckpointError(
                f"Tensor {key!r} of {origin} is {tensor.dtype}, but the model's is {target.dtype}: loading "
                "it would change its values silently. Re-save the weights from a model of this "
                "architecture (ibzoo.hub.save_pretrained)."
            )
        if tensor.is_floating_point():
            casts.setdefault((tensor.dtype, target.dtype), []).append(key)
            if not torch.equal(tensor.to(target.dtype).to(tensor.dtype), tensor):
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

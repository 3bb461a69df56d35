"""Run state (optimiser, schedule, scaler, RNG, trainer) as JSON plus safetensors, never as a pickle.

PyTorch state dicts are nested dicts, lists and tuples of tensors and plain values (numbers, strings,
booleans, None). :func:`save_state_files` writes one as ``STEM.json``, the structure with every tensor
replaced by ``{"__tensor__": NAME}``, and ``STEM.safetensors``, the tensors by NAME (only when there are
any). Reading them back (:func:`load_state_files`) parses JSON and safetensors only, so a checkpoint
folder someone else wrote can be wrong but cannot run code: unlike ``torch.load``, nothing here imports
or calls what a file names.

JSON has no tuples and only string keys, so a tuple is written as ``{"__tuple__": [...]}`` and a dict
with other keys (an optimiser's integer parameter ids) as ``{"__items__": [[key, value], ...]}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

__all__ = ["StateFileError", "load_state_files", "save_state_files", "write_bytes"]

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_MARKERS = (_TENSOR, _TUPLE, _ITEMS)


class StateFileError(ValueError):
    """A state file is missing, unreadable or not in the shape :func:`save_state_files` writes."""


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, so that a full disk raises OSError(ENOSPC) here."""
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        # A copy: safetensors refuses tensors that share memory, and the caller keeps training.
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and key not in _MARKERS for key in value):
            return {key: _encode(item, tensors, f"{where}.{key}") for key, item in value.items()}
        return {
            _ITEMS: [
                [_encode(key, tensors, f"{where} key"), _encode(item, tensors, f"{where}[{key!r}]")]
                for key, item in value.items()
            ]
        }
    raise TypeError(
        f"{where} is a {type(value).__name__}; run state is saved as JSON and safetensors, which hold "
        "tensors, numbers, strings, booleans, None and lists, tuples and dicts of them."
    )


def _decode(node: Any, tensors: dict[str, torch.Tensor], file: Path) -> Any:
    if isinstance(node, list):
        return [_decode(item, tensors, file) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and (marker := next(iter(node))) in _MARKERS:
        content = node[marker]
        if marker == _TENSOR:
            if not isinstance(content, str) or content not in tensors:
                raise StateFileError(f"{file} names a tensor {content!r} that its .safetensors lacks.")
            return tensors[content]
        if marker == _TUPLE and isinstance(content, list):
            return tuple(_decode(item, tensors, file) for item in content)
        if marker == _ITEMS and isinstance(content, list) and all(_is_pair(item) for item in content):
            return {_hashable(_decode(k, tensors, file), file): _decode(v, tensors, file) for k, v in content}
        raise StateFileError(f"{file} holds a malformed {marker} entry.")
    return {key: _decode(item, tensors, file) for key, item in node.items()}


def _is_pair(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2


def _hashable(key: Any, file: Path) -> Any:
    if isinstance(key, dict | list | torch.Tensor):
        raise StateFileError(f"{file} holds a dict key that is a {type(key).__name__}.")
    return key


def save_state_files(state: Any, folder: Path, stem: str) -> None:
    """Write ``state`` as ``folder/STEM.json`` (+ ``folder/STEM.safetensors`` when it holds tensors).

    Raises:
        TypeError: ``state`` holds something other than tensors and plain values; the message says where.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, stem)
    if tensors:
        write_bytes(folder / f"{stem}.safetensors", save_safetensors_bytes(tensors))
    write_bytes(folder / f"{stem}.json", (json.dumps(skeleton) + "\n").encode())


def load_state_files(folder: Path, stem: str) -> Any:
    """What :func:`save_state_files` wrote as ``STEM``; StateFileError names the file that is wrong."""
    file = folder / f"{stem}.json"
    try:
        skeleton = json.loads(file.read_text())
    except FileNotFoundError:
        raise StateFileError(f"{file} is missing.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateFileError(f"{file} is not valid JSON ({error}).") from None
    tensors: dict[str, torch.Tensor] = {}
    tensor_file = folder / f"{stem}.safetensors"
    if tensor_file.is_file():
        try:
            tensors = load_safetensors_bytes(tensor_file.read_bytes())
        except safetensors.SafetensorError as error:
            raise StateFileError(f"{tensor_file} is not a readable safetensors file ({error}).") from None
    return _decode(skeleton, tensors, file)

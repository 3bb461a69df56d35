"""Configuration dataclasses as command lines and YAML recipes: one channel for every setting.

A (nested) dataclass becomes argparse flags with dotted names for nested fields, e.g.
``--optimizer.lr 0.3 --projector.topk-latents 4096 --data.dataset PATH``; a YAML recipe mirrors the
same nesting with the field names as keys. Both are read into plain nested dicts of *overrides*
(only what was given), merged in order of precedence with :func:`merge`, and turned into the
dataclass by :func:`from_dict`, whose ``__post_init__`` validation then applies.

The scripts that start from a trained model (``train/evaluate.py``, ``train/finetune.py``) take their
own few settings as plain argparse flags and share three groups, defined once here, with the meanings
``train/pretrain.py`` gives the same flags: the data set as ``--data.*`` (:class:`~ibzoo.data.DataConfig`,
pretraining's flags, built by :func:`add_dataclass_arguments`), the model as ``--model-dir DIR | --model
NAME [--random-init]``, and how they run: ``--batch-size`` (the GLOBAL batch, over all processes),
``--num-workers`` (per process), ``--seed``, ``--cpu`` (:func:`add_run_arguments`).
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import dataclasses
import difflib
import inspect
import itertools
import math
import textwrap
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from ibzoo.data import DataConfig
from ibzoo.loading import published_folder
from ibzoo.training.loader import default_num_workers

__all__ = [
    "add_data_arguments",
    "add_dataclass_arguments",
    "add_model_source_arguments",
    "add_run_arguments",
    "check_keys",
    "check_types",
    "data_config_from_args",
    "finite_float",
    "from_dict",
    "load_yaml",
    "merge",
    "model_source",
    "overrides_from_namespace",
    "per_process_batch_size",
]

_NONE_WORDS = ("none", "null")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for ``X | None``, (annotation, False) otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


def _nested_dataclass(annotation: Any) -> type | None:
    inner, _ = _unwrap_optional(annotation)
    return inner if dataclasses.is_dataclass(inner) else None


def _field_docs(cls: type) -> dict[str, str]:
    """Help texts of ``cls``'s fields: attribute docstrings, else its docstring's Args/Attributes entries."""
    docs: dict[str, str] = {}
    for line in (cls.__doc__ or "").splitlines():
        name, sep, text = line.strip().partition(": ")
        if sep and name.isidentifier():
            docs[name] = text
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # classes defined without source (e.g. interactively)
        return docs
    body = tree.body[0].body
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _converter(kind: type, optional: bool, flag: str):
    """argparse ``type=`` for a scalar: bool/int/float/str, 'none' -> None when the field is optional."""

    def convert(text: str) -> Any:
        if optional and text.lower() in _NONE_WORDS:
            return None
        if kind is bool:
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise argparse.ArgumentTypeError(f"{flag} takes true or false, not {text!r}")
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", required: Collection[str] = ()
) -> None:
    """Add one flag per (nested) field of dataclass ``cls`` to ``parser``.

    Flags are ``--{prefix}{name with dashes}``; nested dataclass fields recurse with ``prefix + "name."``.
    Every flag defaults to "not given" (:data:`argparse.SUPPRESS`), so that the parsed namespace holds
    only overrides. Booleans also get ``--no-...``; other optional fields accept ``none``; tuples take
    any number of values (none for an empty tuple); ``Literal`` fields list their choices. The flags of
    the fields of ``cls`` named in ``required`` must be given (argparse says so otherwise).
    """
    check_keys(cls, dict.fromkeys(required), "add_dataclass_arguments(required=...)")
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    group = parser.add_argument_group(f"{prefix[:-1]} ({cls.__name__})") if prefix else parser
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if (nested := _nested_dataclass(annotation)) is not None:
            add_dataclass_arguments(parser, nested, prefix=f"{prefix}{field.name}.")
            continue
        flag = f"--{prefix}{field.name.replace('_', '-')}"
        kwargs: dict[str, Any] = dict(dest=f"{prefix}{field.name}", default=argparse.SUPPRESS)
        kwargs["required"] = field.name in required
        kwargs["help"] = docs.get(field.name, "")
        inner, optional = _unwrap_optional(annotation)
        if inner is bool:  # None (a recipe's default) is simply not giving the flag
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(inner) is tuple:
            element = typing.get_args(inner)[0]
            kwargs.update(nargs="*", type=_converter(element, False, flag), metavar=element.__name__.upper())
        elif typing.get_origin(inner) is Literal:
            choices = list(typing.get_args(inner)) + ([None] if optional else [])
            kwargs.update(choices=choices, type=_converter(str, optional, flag))
        else:
            kwargs.update(type=_converter(inner, optional, flag), metavar=inner.__name__.upper())
        group.add_argument(flag, **kwargs)


def overrides_from_namespace(namespace: argparse.Namespace) -> dict[str, Any]:
    """The given flags of a namespace from :func:`add_dataclass_arguments` as a nested dict."""
    nested: dict[str, Any] = {}
    for dotted, value in vars(namespace).items():
        *parents, name = dotted.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = value
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts: ``override`` wins, nested dicts merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _unknown_key_error(cls: type, key: str, path: str, source: str) -> KeyError:
    names = [field.name for field in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=2)
    hint = f"did you mean {' or '.join(repr(f'{path}{name}') for name in close)}? " if close else ""
    return KeyError(f"{source}: unknown setting {path + key!r}; {hint}known: {', '.join(names)}.")


def check_keys(cls: type, values: Mapping[str, Any], source: str, path: str = "") -> None:
    """Raise KeyError naming ``source`` when ``values`` holds a key that is no field of ``cls``."""
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key_error(cls, key, path, source)
        nested = _nested_dataclass(hints[key])
        if nested is not None and isinstance(value, Mapping):
            check_keys(nested, value, source, f"{path}{key}.")


_PLURALS = {"an integer": "integers", "a number": "numbers", "a string": "strings", "a path": "paths"}


def _expected(annotation: Any, value: Any) -> str | None:
    """What ``annotation`` asks for, in words, when ``value`` is not one; None when it is."""
    inner, optional = _unwrap_optional(annotation)
    if value is None:
        return None if optional or inner is Any else "a value, not null"
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is typing.Literal:
        return None if value in args else f"one of {', '.join(repr(arg) for arg in args)}"
    if origin in (tuple, list, collections.abc.Sequence) and args:
        item = args[0]
        items = _expected(item, object()) or "values"
        items = _PLURALS.get(items, items)
        if not isinstance(value, (list, tuple)):
            return f"a list of {items}"
        return f"a list of {items}" if any(_expected(item, element) for element in value) else None
    if dataclasses.is_dataclass(inner):
        return None if isinstance(value, Mapping) else "a mapping of settings"
    checks = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "a string"),
        Path: (lambda v: isinstance(v, (str, Path)), "a path"),
    }
    if inner in checks:
        accepts, words = checks[inner]
        return None if accepts(value) else words
    return None  # Any, or a type validated by the dataclass itself


def check_types(cls: type, values: Mapping[str, Any], source: str, path: str = "") -> None:
    """Raise ValueError naming ``source``, the setting, the value and the type it needs, for a value of
    ``values`` (a recipe, a config.json section) that is not of its field's type: a recipe's ``lr: fast``
    or ``optimizer: 5`` would otherwise fail deep inside, as a raw TypeError or AttributeError."""
    check_keys(cls, values, source, path)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        nested = _nested_dataclass(hints[key])
        if nested is not None and isinstance(value, Mapping):
            check_types(nested, value, source, f"{path}{key}.")
        elif (expected := _expected(hints[key], value)) is not None:
            hint = ""
            if expected == "a number" and isinstance(value, str) and _is_number(value):
                hint = f" (YAML reads {value} as text: write it with a decimal point, e.g. 1.0e-4)"
            raise ValueError(f"{source}: {path}{key}={value!r} must be {expected}{hint}.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_dict(cls: type, values: Mapping[str, Any], source: str = "configuration", path: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts (nested dataclasses too); lists become tuples.

    A number that is NaN or infinite is refused here, naming ``source`` and the setting: no setting of
    ibzoo means anything non-finite, and a NaN passes every ``<=`` a dataclass checks (a NaN learning
    rate used to train, exit 0 and write NaN weights).
    """
    check_types(cls, values, source, path)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        nested = _nested_dataclass(hints[key])
        if nested is not None and isinstance(value, Mapping):
            value = from_dict(nested, value, source, f"{path}{key}.")
        elif isinstance(value, list):
            value = tuple(value)
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{source}: {path}{key}={value!r} is not a finite number; give a real one.")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:  # a missing required field
        raise ValueError(f"{source}: {cls.__name__} {error}.") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML recipe as a nested dict; FileNotFoundError / ValueError name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} not found; pass an existing YAML file to --recipe.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"Recipe {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"Recipe {path} must hold a mapping of settings, not {type(values).__name__}.")
    return values


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data set as ``--data.*`` flags, one per :class:`~ibzoo.data.DataConfig` field, like pretraining's.

    ``--data.dataset`` is required; read the result with :func:`data_config_from_args`.
    """
    add_dataclass_arguments(parser, DataConfig, prefix="data.", required=("dataset",))


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """The :class:`~ibzoo.data.DataConfig` of the ``--data.*`` flags of :func:`add_data_arguments`.

    For scripts that fit on ``train_split`` and score on ``eval_split``: a ValueError names the fix when
    the flags leave no evaluation split or fail DataConfig's checks.
    """
    config = from_dict(DataConfig, overrides_from_namespace(args).get("data", {}), source="command line")
    if config.eval_split is None:
        raise ValueError("--data.eval-split none: this script scores on an evaluation split; name one.")
    return config


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


_positive_int.__name__ = "int"  # argparse names the type in its error messages


def finite_float(lower: float, inclusive: bool) -> Callable[[str], float]:
    """argparse ``type=`` for a finite number above ``lower`` (or at it, when ``inclusive``): NaN passes
    every comparison a script would make later, so it is refused here."""
    bound = f">= {lower:g}" if inclusive else f"> {lower:g}"

    def convert(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and (value >= lower if inclusive else value > lower)):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    convert.__name__ = "float"  # argparse names the type in its error messages
    return convert


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int, batch: str) -> None:
    """How a script runs, with ``train/pretrain.py``'s meanings: ``--batch-size``, ``--num-workers``,
    ``--seed`` and ``--cpu``.

    ``--batch-size`` is the GLOBAL batch, as pretraining's: the images of one ``batch`` over all
    processes, each process taking an equal share (:func:`per_process_batch_size`). ``--num-workers``
    counts DataLoader workers per process, by default as many as fit the machine
    (:func:`ibzoo.training.loader.default_num_workers`).

    Args:
        parser: The script's parser.
        batch_size: The default global batch.
        batch: What one batch is, e.g. "images per optimisation step".
    """
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        help=f"GLOBAL batch: {batch} over all processes, split evenly between them (default: %(default)s)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader worker processes per process (default: min(4, CPU cores per process), "
        "%(default)s here)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of everything random: initial weights, data order, augmentations (default: %(default)s)",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when an accelerator exists")


def per_process_batch_size(batch_size: int, num_processes: int, accumulation_steps: int = 1) -> int:
    """Images per process and micro-batch of the global ``--batch-size``: ``batch_size / (num_processes x
    accumulation_steps)``; a ValueError names the nearest sizes that divide evenly."""
    shards = num_processes * accumulation_steps
    if batch_size % shards:
        lower, higher = batch_size // shards * shards, (batch_size // shards + 1) * shards
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must divide evenly over "
            f"{num_processes} processes x {accumulation_steps} accumulation steps = {shards}; "
            f"pass e.g. --batch-size {higher}" + (f" or {lower}." if lower else ".")
        )
    return batch_size // shards


def add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model-dir DIR | --model NAME [--random-init]``: the model a script starts from.

    A published model's folder (or a pretraining run's) or a model name's pretrained weights by default,
    the untrained reference with ``--random-init``; read the result with :func:`model_source`.
    """
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model-dir",
        "--checkpoint",  # its earlier name; "checkpoint" now means a resume state only
        dest="model_dir",
        metavar="DIR",
        help="pretraining output folder (its model/ is used) or a folder with config.json; loads its weights "
        "(--checkpoint is the same flag's older name)",
    )
    source.add_argument(
        "--model",
        metavar="NAME",
        help="zoo name with a pretrained tag (resnet18_cifar_simclr_topk.cifar10), timm name, "
        "hf-hub:org/repo or local-dir:/path; loads its pretrained weights unless --random-init",
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="build --model with random weights: the untrained reference",
    )


def model_source(args: argparse.Namespace) -> tuple[str, bool]:
    """``(model name, pretrained)`` for :func:`ibzoo.create_model` from the model source flags.

    ``--model-dir DIR`` becomes ``local-dir:`` and the folder :func:`ibzoo.loading.published_folder` finds,
    with its weights; ``--model NAME`` is pretrained unless ``--random-init``.

    Raises:
        ValueError: ``--random-init`` with ``--model-dir``.
        FileNotFoundError: The folder holds no ``config.json`` (nor does its ``model/``).
    """
    if args.model_dir is None:
        return args.model, not args.random_init
    if args.random_init:
        raise ValueError(
            "--random-init goes with --model; a --model-dir always loads its weights. For its architecture "
            "untrained, pass --model local-dir:DIR/model --random-init."
        )
    return f"local-dir:{published_folder(args.model_dir).resolve()}", True

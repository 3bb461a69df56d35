"""The configuration of a pretraining run: one dataclass, saved verbatim as the run's ``run_config.json``.

Every hyper-parameter left unset comes from the model name's recipe (:func:`ibzoo.model_info`: projector,
objective, optimiser, epochs, global batch size, SyncBatchNorm, the online classifier's lr) and from its
timm ``pretrained_cfg`` (input size, mean, std). Precedence, lowest first::

    model recipe  <  YAML recipe (--recipe train/recipes/X.yaml)  <  command line

    python train/pretrain.py --model resnet18_cifar_simclr_topk --recipe train/recipes/simclr_cifar10.yaml \\
        --output-dir runs/topk --optimizer.lr 0.3 --projector.topk-latents 4096 --max-steps 100
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from timm.models import split_model_name_tag

from ibzoo.data import DataConfig
from ibzoo.models.catalog import WITHHELD, ModelInfo, get_model_info
from ibzoo.models.datasets import DATASETS
from ibzoo.models.zoo import pretrained_cfg_of
from ibzoo.names import REPO_ID
from ibzoo.objectives import ObjectiveConfig, recorded_objective_config
from ibzoo.optim import OptimizerConfig
from ibzoo.projectors import ProjectorConfig
from ibzoo.training.checkpoint import RUN_CONFIG_FILE
from ibzoo.training.cli import (
    add_dataclass_arguments,
    check_types,
    from_dict,
    load_yaml,
    merge,
    overrides_from_namespace,
    per_process_batch_size,
)
from ibzoo.training.loader import default_num_workers

__all__ = [
    "RESUMABLE_CHANGES",
    "PretrainConfig",
    "parse_pretrain_args",
    "pretrain_config_from_overrides",
    "upgraded_run_config",
]

MixedPrecision = Literal["no", "fp16", "bf16"]

# Settings a resumed run may change: how long this invocation runs and how it is operated, not what is
# trained. Any other difference means the output folder holds another run.
RESUMABLE_CHANGES = frozenset(
    {
        "output_dir",
        "max_steps",
        "max_epochs_this_run",
        "resume",
        "num_workers",
        "log_every",
        "log_with",
        "checkpoint_every",
        "keep_checkpoints",
        "push_to_hub",
        "mixed_precision",
        "cpu",
        "compile",
        "skip_bad_images",  # only ever changes a run that would otherwise have stopped
        "experiment",  # permission to train a withheld pair, not a setting of the run
    }
)


def _recipe_defaults(info: ModelInfo) -> dict[str, Any]:
    """The model-dependent fields as the zoo's recipe sets them (copies: configs are mutable)."""
    return {
        "projector": dataclasses.replace(info.projector_config),
        "objective": dataclasses.replace(info.objective_config),
        "optimizer": dataclasses.replace(info.optimizer_config),
        "epochs": info.epochs,
        "batch_size": info.batch_size,
        "sync_batchnorm": info.sync_batchnorm,
        "online_classifier_lr": info.online_classifier_lr,
    }


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run; unset model-dependent fields come from the recipe."""

    model: str
    """Zoo name (ibzoo.list_models()), optionally with the pretrained tag whose preprocessing to use."""
    data: DataConfig
    """The pretraining images (its train_split) and their columns."""
    output_dir: str
    """Folder for run_config.json, checkpoints/, log.jsonl, tensorboard/ and the final model/; its name
    names the run in the trackers."""
    projector: ProjectorConfig | None = None
    """The bottleneck projector; default: the model's recipe."""
    objective: ObjectiveConfig | None = None
    """The SSL loss and MI regulariser; default: the model's recipe."""
    optimizer: OptimizerConfig | None = None
    """Optimiser, base lr (per 256 images, scaled linearly) and schedule; default: the model's recipe."""
    epochs: int | None = None
    """Passes over the data; sets the warmup-cosine schedule's length. Default: the model's recipe."""
    batch_size: int | None = None
    """GLOBAL batch: images per optimisation step over all processes and accumulation steps."""
    sync_batchnorm: bool | None = None
    """SyncBatchNorm across processes (GPU runs with several processes); default: the model's recipe."""
    image_size: int | None = None
    """Side of the square views; default: the model's pretrained_cfg input size."""
    mean: tuple[float, ...] | None = None
    """Per-channel normalisation mean; default: the model's pretrained_cfg."""
    std: tuple[float, ...] | None = None
    """Per-channel normalisation std; default: the model's pretrained_cfg."""
    seed: int = 0
    """Seed of the initial weights, the data order and every augmentation (per epoch and image)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimisation step (the per-process batch shrinks accordingly)."""
    mixed_precision: MixedPrecision | None = None
    """Autocast dtype; default: accelerate launch's --mixed_precision / accelerate config, else no.

    The reference runs use fp16 (``precision: 16-mixed`` in every Projector_Theory scripts/pretrain yaml);
    train/recipes suggest bf16: as fast on GPUs that have it, no loss scaling to tune, and the only dtype
    CPU autocast offers. The SSL losses, the MI term and FSQ compute in float32 under either."""
    cpu: bool = False
    """Train on the CPU even when an accelerator is present."""
    num_workers: int = dataclasses.field(default_factory=default_num_workers)
    """DataLoader worker processes per training process (0: load in the training process); default:
    min(4, CPU cores per process)."""
    compile: bool = False
    """torch.compile the backbone: for GPUs; the first steps are slow while it compiles."""
    augment_on_device: bool = False
    """Workers only decode to uint8; the two views are augmented batched on the accelerator in the step."""
    zero_init_last: bool = False
    """Start each residual block's last BatchNorm gamma at 0 (timm's default) instead of 1 (the reference's
    torchvision init, the zoo's); for ablations."""
    skip_bad_images: bool = False
    """An image that does not decode is replaced by the next one that does (with a warning naming its file),
    instead of stopping the run with an error naming it."""
    online_classifier: bool = True
    """Train a linear classifier on detached backbone features alongside, when the data has labels."""
    online_classifier_lr: float | None = None
    """Base lr of the online classifier (per 256 images, scaled like the optimiser's); no weight decay.
    Default: the model's recipe."""
    log_every: int = 50
    """Optimisation steps between log records (losses, information plane, accuracy, lr, images/s)."""
    log_with: tuple[str, ...] = ("tensorboard",)
    """Accelerate trackers to log to (an empty list for log.jsonl only)."""
    checkpoint_every: int = 1
    """Epochs between checkpoints; the last step is always checkpointed."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept; older ones are deleted once a newer one is complete."""
    max_steps: int | None = None
    """Stop after this many optimisation steps in total (short runs); the schedule stays per epochs."""
    max_epochs_this_run: int | None = None
    """Stop this invocation after this many epochs and checkpoint; run again to continue."""
    resume: str = "auto"
    """"auto": continue from output_dir's checkpoints if any; "never"; or a checkpoint folder's path."""
    push_to_hub: str | None = None
    """Push the final model/ folder to this Hub repo (org/name) at the end."""
    experiment: bool = False
    """Train a pair the zoo withholds (``ibzoo.models.catalog.WITHHELD``; the name's error says why) from
    its recipe, for an experiment."""

    def __post_init__(self) -> None:
        info = get_model_info(self.hub_model_name, withheld=self.experiment)
        if self.experiment and info.name not in WITHHELD:
            raise ValueError(
                f"{self.model} is in the zoo; drop --experiment (it is for pairs the zoo withholds)."
            )
        for name, value in _recipe_defaults(info).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        _check_framework(self.model, info, self.objective.framework)
        tag = self.pretrained_tag
        if tag is not None and tag not in info.pretrained_tags:
            raise ValueError(
                f"{self.model}: unknown tag {tag!r}; {info.name} has {', '.join(info.pretrained_tags)}."
            )
        preprocessing = pretrained_cfg_of(self.hub_model_name)
        if self.image_size is None:
            self.image_size = preprocessing.input_size[-1]
        self.mean = tuple(preprocessing.mean if self.mean is None else self.mean)
        self.std = tuple(preprocessing.std if self.std is None else self.std)
        self.log_with = tuple(self.log_with)
        self._validate()

    def _validate(self) -> None:
        positive = ("epochs", "batch_size", "image_size", "gradient_accumulation_steps", "log_every")
        positive += ("checkpoint_every", "keep_checkpoints", "max_steps", "max_epochs_this_run")
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"PretrainConfig.{name}={value!r} must be a positive integer.")
        if self.num_workers < 0:
            raise ValueError(f"PretrainConfig.num_workers={self.num_workers} must be >= 0.")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean={self.mean} and std={self.std} need 3 values each, std > 0 (RGB).")
        if self.online_classifier_lr <= 0:
            raise ValueError(f"online_classifier_lr={self.online_classifier_lr} must be > 0.")
        if self.optimizer.warmup_epochs > self.epochs:
            raise ValueError(
                f"optimizer.warmup_epochs={self.optimizer.warmup_epochs} exceeds epochs={self.epochs}; "
                "lower --optimizer.warmup-epochs or raise --epochs."
            )
        if self.push_to_hub is not None and not REPO_ID.fullmatch(self.push_to_hub):
            raise ValueError(f"push_to_hub={self.push_to_hub!r} must be a Hub repo id, ORG/NAME.")
        if self.resume not in ("auto", "never") and not Path(self.resume).is_dir():
            raise FileNotFoundError(
                f"resume={self.resume!r} is neither 'auto', 'never' nor a checkpoint folder; pass e.g. "
                f"--resume {Path(self.output_dir) / 'checkpoints' / 'epoch-0010'}."
            )

    @property
    def pretrained_tag(self) -> str | None:
        """The zoo tag this run reproduces: the model name's suffix, else the tag of data.dataset, if any."""
        return _zoo_tag(self.model, self.data.dataset)

    @property
    def hub_model_name(self) -> str:
        """What the final checkpoint is: ``name.tag`` when the run reproduces a zoo tag, else the name.
        Its recipe (:func:`ibzoo.models.catalog.get_model_info`) is the one the run defaults to."""
        base, tag = split_model_name_tag(self.model)[0], self.pretrained_tag
        return f"{base}.{tag}" if tag else base

    def per_process_batch_size(self, num_processes: int, accumulation_steps: int) -> int:
        """Images per process and micro-batch: batch_size / (num_processes x accumulation_steps)."""
        return per_process_batch_size(self.batch_size, num_processes, accumulation_steps)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as JSON values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without :data:`RESUMABLE_CHANGES`: equal for every invocation of one run."""
        return {key: value for key, value in self.to_dict().items() if key not in RESUMABLE_CHANGES}


def upgraded_run_config(saved: dict[str, Any]) -> dict[str, Any]:
    """``run_config.json`` of a run that an older ibzoo started, in today's form, to compare with a resumed
    invocation: projector settings added since at their defaults (which is what those runs did), and the
    settings of other frameworks that ibzoo recorded before the framework files dropped, as loading a
    checkpoint does (:func:`ibzoo.objectives.recorded_objective_config`). A section that does not parse is
    left as it is, so that its difference is reported."""
    upgraded = dict(saved)
    for key, build in (
        ("projector", lambda values: from_dict(ProjectorConfig, values, RUN_CONFIG_FILE)),
        ("objective", recorded_objective_config),
    ):
        if isinstance(saved.get(key), dict):
            with contextlib.suppress(TypeError, ValueError):
                upgraded[key] = json.loads(json.dumps(dataclasses.asdict(build(saved[key]))))
    return upgraded


def _check_framework(model: str, info: ModelInfo, framework: str) -> None:
    if framework != info.framework:
        raise ValueError(
            f"{model} is a {info.framework} model but objective.framework={framework!r}; drop the override "
            f"or pick a {framework} model name."
        )


def _zoo_tag(model: str, dataset: str | None) -> str | None:
    """The tag of ``model`` (``name.tag``), else the zoo tag whose Hub dataset is ``dataset``, else None."""
    base, tag = split_model_name_tag(model)
    if tag:
        return tag
    tags = get_model_info(base, withheld=True).pretrained_tags  # whether it may be trained is checked apart
    return next((tag for tag in tags if DATASETS[tag].hf_dataset == dataset), None)


def pretrain_config_from_overrides(values: dict[str, Any], source: str = "configuration") -> PretrainConfig:
    """Build a :class:`PretrainConfig` from nested overrides on top of the model's recipe.

    ``values`` holds what the YAML recipe and the command line gave, e.g.
    ``{"model": ..., "data": {"dataset": ...}, "optimizer": {"lr": 0.3}}``; nested dataclass fields
    merge key by key with the model's recipe, and the fields not given take the recipe's values.
    """
    missing = [
        flag
        for flag, given in (
            ("--model", "model" in values),
            ("--data.dataset", "dataset" in values.get("data", {})),
            ("--output-dir", "output_dir" in values),
        )
        if not given
    ]
    if missing:
        raise ValueError(
            f"{source}: pass {', '.join(missing)} (on the command line or in the --recipe file)."
        )
    base, tag = split_model_name_tag(values["model"])[0], _zoo_tag(values["model"], values["data"]["dataset"])
    info = get_model_info(f"{base}.{tag}" if tag else base, withheld=bool(values.get("experiment")))
    # Before the recipe's settings are merged in: they are the name's framework's.
    _check_framework(values["model"], info, values.get("objective", {}).get("framework", info.framework))
    # Only a nested setting that is partly overridden (``--optimizer.lr``) needs the recipe's values under it,
    # key by key; every field left unset gets its recipe default in PretrainConfig.__post_init__, once.
    recipe = {
        name: dataclasses.asdict(value)
        for name, value in _recipe_defaults(info).items()
        if dataclasses.is_dataclass(value) and isinstance(values.get(name), Mapping)
    }
    return from_dict(PretrainConfig, merge(recipe, values), source)


def parse_pretrain_args(argv: list[str] | None = None) -> PretrainConfig:
    """The :class:`PretrainConfig` of a command line: ``--recipe FILE`` plus one flag per field."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Precedence, lowest first: the model's recipe, the --recipe file, the command line. "
        "Nested settings are dotted: --optimizer.lr, --projector.topk-latents, --data.image-column.",
    )
    parser.add_argument("--recipe", type=Path, help="YAML file of settings (train/recipes/*.yaml)")
    add_dataclass_arguments(parser, PretrainConfig)
    namespace = parser.parse_args(argv)
    recipe_path = namespace.recipe
    del namespace.recipe
    command_line = overrides_from_namespace(namespace)
    if recipe_path is None:
        return pretrain_config_from_overrides(command_line, source="command line")
    source = f"recipe {recipe_path}"
    recipe = load_yaml(recipe_path)
    check_types(PretrainConfig, recipe, source)
    try:
        return pretrain_config_from_overrides(merge(recipe, command_line), source="command line")
    except ValueError:
        # Blame the recipe when its own values, with only the command line's model, data set and output
        # folder, fail too; otherwise the command line's values are what broke it.
        essentials = {key: command_line[key] for key in ("model", "output_dir") if key in command_line}
        if "dataset" in command_line.get("data", {}):
            essentials["data"] = {"dataset": command_line["data"]["dataset"]}
        try:
            pretrain_config_from_overrides(merge(recipe, essentials), source=source)
        except ValueError as error:
            message = str(error)
            raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None
        raise

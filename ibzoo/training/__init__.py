"""Pretraining with Hugging Face Accelerate: configuration, data, the training loop, logs and checkpoints.

``train/pretrain.py`` reads top to bottom with these pieces:

- :mod:`ibzoo.training.config`: :class:`PretrainConfig` (model recipe < YAML < command line);
- :mod:`ibzoo.training.cli`: any dataclass as dotted command-line flags and YAML recipes;
- :mod:`ibzoo.training.loader`: the two-view DataLoader whose order and augmentation depend only on
  (seed, epoch, image), so resumed runs are exact;
- :mod:`ibzoo.training.loop`: the module trained (SSL model + online classifier), the step and the epoch;
- :mod:`ibzoo.training.run_log`: running means, ``log.jsonl`` and trackers;
- :mod:`ibzoo.training.checkpoint`: atomic checkpoints, resume, and the output folder's run check.
"""

from ibzoo.training.checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    OutputDirBusyError,
    OutputDirLock,
    TrainerState,
    check_output_dir,
    checkpoint_name,
    config_differences,
    run_differences,
    write_run_config,
)
from ibzoo.training.config import (
    PretrainConfig,
    parse_pretrain_args,
    pretrain_config_from_overrides,
    upgraded_run_config,
)
from ibzoo.training.loader import build_pretrain_loader
from ibzoo.training.loop import (
    Pretrainer,
    PretrainingModule,
    PretrainStepOutput,
    build_pretrain_optimizer,
    parameter_digest,
    replica_digests,
)
from ibzoo.training.run_log import RunLog, RunningMeans, flat_hparams

__all__ = [
    "CheckpointManager",
    "CorruptCheckpointError",
    "OutputDirBusyError",
    "OutputDirLock",
    "PretrainConfig",
    "PretrainStepOutput",
    "Pretrainer",
    "PretrainingModule",
    "RunLog",
    "RunningMeans",
    "TrainerState",
    "build_pretrain_loader",
    "build_pretrain_optimizer",
    "check_output_dir",
    "checkpoint_name",
    "config_differences",
    "flat_hparams",
    "parameter_digest",
    "parse_pretrain_args",
    "pretrain_config_from_overrides",
    "replica_digests",
    "run_differences",
    "upgraded_run_config",
    "write_run_config",
]

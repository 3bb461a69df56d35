"""Pretrain an ibzoo model (a framework with a bottleneck projector) with Hugging Face Accelerate.

Every hyper-parameter defaults to the model name's recipe; a YAML recipe and the command line override it.

    python train/pretrain.py --model resnet18_cifar_simclr_topk --recipe train/recipes/simclr_cifar10.yaml \\
        --output-dir runs/simclr-topk-cifar10
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 train/pretrain.py \\
        --model resnet18_barlow_fsq --recipe train/recipes/barlow_in100.yaml --output-dir runs/barlow-in100

Running the same command again continues from the folder's last checkpoint. The output folder gets
run_config.json, checkpoints/, log.jsonl, tensorboard/<run name>/ and, at the end, the Hub-ready model/.
"""

import errno
import logging
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)

import ibzoo
from ibzoo.augment import INTERPOLATION
from ibzoo.batched_augment import build_batched_pretrain_augment
from ibzoo.data import load_image_dataset
from ibzoo.hub import push_to_hub, save_pretrained
from ibzoo.models.zoo import backbone_source
from ibzoo.optim import warmup_cosine_schedule
from ibzoo.training import (
    CheckpointManager,
    OutputDirBusyError,
    OutputDirLock,
    PretrainConfig,
    Pretrainer,
    PretrainingModule,
    RunLog,
    TrainerState,
    build_pretrain_loader,
    build_pretrain_optimizer,
    check_output_dir,
    checkpoint_name,
    flat_hparams,
    parse_pretrain_args,
    replica_digests,
    upgraded_run_config,
    write_run_config,
)

logger = logging.getLogger("pretrain")


def parse_config(argv: list[str] | None) -> PretrainConfig:
    """The run's configuration; a mistake in the settings is one argparse-style line (on every process)."""
    try:
        return parse_pretrain_args(argv)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"pretrain.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def claim_output_dir(accelerator: Accelerator, output_dir: Path) -> OutputDirLock | None:
    """The main process's lock on the output folder (None on the others); when another run holds it, every
    process stops with that one-line refusal (broadcast, so that no process waits for the others)."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = OutputDirLock(output_dir)
        except (OutputDirBusyError, ValueError) as error:
            refusal = str(error)
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        print(f"pretrain.py: error: {refusal}", file=sys.stderr)
        raise SystemExit(2)
    return lock


def build_accelerator(config: PretrainConfig, output_dir: Path) -> Accelerator:
    """The Accelerator of the run: processes, mixed precision, accumulation and trackers."""
    return Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=list(config.log_with) or None,
        # Local trackers (TensorBoard) write under DIR/tensorboard/<run name>/.
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=output_dir / "tensorboard"),
        # The schedule is stepped by hand once per optimisation step: Accelerate's own stepping would
        # advance it once per process, a convention for schedules counted in per-process batches.
        step_scheduler_with_optimizer=False,
        # Pinned batches copied asynchronously to the GPU overlap with the previous step.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )


class TrainingData(NamedTuple):
    """The pretraining images as the loop consumes them."""

    num_images: int
    num_classes: int | None
    loader: torch.utils.data.DataLoader
    augment: torch.nn.Module | None
    """With --augment-on-device: the batched two-view augmentation run on the accelerator in the step."""
    per_process_batch: int
    steps_per_epoch: int


def build_training_data(config: PretrainConfig, accelerator: Accelerator) -> TrainingData:
    """The loader of the training split. The global batch is split over processes and accumulation steps;
    every process gets whole batches drawn from (seed, epoch), so a resumed run sees the same images and
    augmentations."""
    per_process_batch = config.per_process_batch_size(
        accelerator.num_processes, accelerator.gradient_accumulation_steps
    )
    train_data = load_image_dataset(config.data, config.data.train_split)
    loader = build_pretrain_loader(
        train_data,
        framework=config.objective.framework,
        image_size=config.image_size,
        mean=config.mean,
        std=config.std,
        global_batch_size=config.batch_size,
        per_process_batch_size=per_process_batch,
        seed=config.seed,
        num_workers=config.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        augment_on_device=config.augment_on_device,
        skip_bad_images=config.skip_bad_images,
        low_priority_workers=accelerator.device.type == "cpu",  # the step's threads need every core
    )
    # With --augment-on-device the workers only decode; the views are made batched on the accelerator.
    augment = None
    if config.augment_on_device:
        augment = build_batched_pretrain_augment(
            config.objective.framework, config.image_size, config.mean, config.std
        ).to(accelerator.device)
    return TrainingData(
        num_images=len(train_data.dataset),
        num_classes=train_data.num_classes,
        loader=loader,
        augment=augment,
        per_process_batch=per_process_batch,
        steps_per_epoch=len(train_data.dataset) // config.batch_size,
    )


def build_module(
    config: PretrainConfig, num_classes: int | None, accelerator: Accelerator
) -> PretrainingModule:
    """Backbone + projector + objective from the config, and the online classifier on Z1 (when the data
    has labels and the config asks for it), laid out for the accelerator."""
    name, backbone_args = backbone_source(config.hub_model_name)
    ssl_model = ibzoo.create_pretraining_model(
        name,
        projector_config=config.projector,
        objective_config=config.objective,
        **{**backbone_args, "zero_init_last": config.zero_init_last},
    )
    module = PretrainingModule(ssl_model, num_classes if config.online_classifier else None)
    if config.sync_batchnorm and accelerator.num_processes > 1:
        if accelerator.device.type == "cpu":
            logger.warning("SyncBatchNorm needs GPUs; the CPU processes keep per-process BatchNorm.")
        else:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if accelerator.device.type == "cuda":  # NHWC convolutions are the fast ones on tensor cores
        module = module.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
    if config.compile:
        # In place: the parameter names, hence checkpoints and the Hub folder, stay those of the eager model.
        module.ssl_model.backbone.compile()
    return module


def start_records(config: PretrainConfig, accelerator: Accelerator, output_dir: Path, step: int) -> RunLog:
    """The trackers, run_config.json and the run's log, once the run has started (and resumed)."""
    if config.log_with:
        # Trackers name the run after its output folder: the W&B / MLflow / Comet project, the TensorBoard
        # run folder, so runs logged to one place stay apart.
        accelerator.init_trackers(output_dir.resolve().name, config=flat_hparams(config.to_dict()))
    if accelerator.is_main_process:  # only now: a run that failed to start leaves no record behind
        write_run_config(output_dir, config.to_dict())
    return RunLog(accelerator, output_dir / "log.jsonl", resumed_step=step)


def export_model(
    config: PretrainConfig, accelerator: Accelerator, module: PretrainingModule, log: RunLog, step: int
) -> Path:
    """Write the Hub-ready DIR/model (and push it with --push-to-hub); returns the folder."""
    output_dir = Path(config.output_dir)
    digests = replica_digests(accelerator, accelerator.unwrap_model(module).ssl_model.backbone)
    log.write({"backbone_parameter_sha256": digests}, step=step)
    model_dir = output_dir / "model"
    if accelerator.is_main_process:
        try:
            save_pretrained(
                accelerator.unwrap_model(module).ssl_model,
                model_dir,
                model_name=config.hub_model_name,
                pretrained_cfg={  # the preprocessing trained with, for evaluation and timm's create_transform
                    "input_size": (3, config.image_size, config.image_size),
                    "mean": config.mean,
                    "std": config.std,
                    "interpolation": INTERPOLATION,
                },
                train_config=config.to_dict(),
                log_file=output_dir / "log.jsonl",
                repo_id=config.push_to_hub,
            )
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            # Every file of the folder is written atomically, and the last step is checkpointed already.
            raise OSError(
                errno.ENOSPC,
                f"No space left on device while writing {model_dir}; the run itself is complete in its last "
                "checkpoint. Free disk space and run the same command again: it only writes the folder.",
            ) from error
        if config.push_to_hub:
            push_to_hub(model_dir, config.push_to_hub)
    accelerator.wait_for_everyone()
    return model_dir


def main(argv: list[str] | None = None) -> Path:
    """Pretrain as the command line says; returns DIR/model, or DIR/checkpoints when paused before the end."""
    config = parse_config(argv)
    output_dir = Path(config.output_dir)
    accelerator = build_accelerator(config, output_dir)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    # The folder is this run's for its lifetime: a second process on it is refused before it touches a file.
    folder_lock = claim_output_dir(accelerator, output_dir)
    try:
        return pretrain(config, accelerator, output_dir)
    finally:
        if folder_lock is not None:
            folder_lock.release()


def pretrain(config: PretrainConfig, accelerator: Accelerator, output_dir: Path) -> Path:
    """The run in its claimed output folder (see :func:`main`)."""
    # Setup: data, model, optimiser and schedule, resumed from the last checkpoint.
    check_output_dir(output_dir, config.identity(), config.resume, upgrade=upgraded_run_config)
    set_seed(config.seed)

    data = build_training_data(config, accelerator)
    module = build_module(config, data.num_classes, accelerator)
    optimizer = build_pretrain_optimizer(
        module, config.optimizer, config.batch_size, config.online_classifier_lr
    )
    total_steps = data.steps_per_epoch * config.epochs
    warmup_steps = round(config.optimizer.warmup_epochs * data.steps_per_epoch)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps, config.optimizer.min_lr_ratio)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, data.loader, scheduler)

    # The trainer state travels inside each checkpoint, next to the model and optimiser.
    state = TrainerState()
    checkpoints = CheckpointManager(
        accelerator,
        output_dir / "checkpoints",
        keep=config.keep_checkpoints,
        model=module,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
    )
    checkpoints.resume(config.resume)
    log = start_records(config, accelerator, output_dir, state.global_step)
    trainer = Pretrainer(
        accelerator,
        module,
        optimizer,
        scheduler,
        state,
        log,
        steps_per_epoch=data.steps_per_epoch,
        global_batch_size=config.batch_size,
        log_every=config.log_every,
        total_steps=total_steps,
        augment=data.augment,
        seed=config.seed,
    )

    # Loop: epoch by epoch to the last step, or to the end of this invocation's share of epochs.
    last_step = min(total_steps, config.max_steps or total_steps)
    stop_epoch = min(config.epochs, state.epoch + (config.max_epochs_this_run or config.epochs))
    logger.info(
        "%s: %d images, global batch %d (%d per process), %d steps per epoch, step %d of %d",
        config.model,
        data.num_images,
        config.batch_size,
        data.per_process_batch,
        data.steps_per_epoch,
        state.global_step,
        last_step,
    )
    while state.global_step < last_step and state.epoch < stop_epoch:
        trainer.train_epoch(loader, state.epoch, last_step)
        finished = state.global_step >= last_step or state.epoch == stop_epoch
        if finished or state.epoch % config.checkpoint_every == 0:
            checkpoints.save(checkpoint_name(state, data.steps_per_epoch))

    # Export: the Hub-ready model, unless paused by --max-epochs-this-run (the next invocation continues).
    if state.global_step < last_step:
        accelerator.end_training()
        return output_dir / "checkpoints"
    model_dir = export_model(config, accelerator, module, log, state.global_step)
    accelerator.end_training()
    return model_dir


if __name__ == "__main__":
    main()

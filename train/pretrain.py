"""Pretrain an ibzoo model (SimCLR or Barlow Twins with a bottleneck projector) with Hugging Face Accelerate.

Every hyper-parameter defaults to the model name's recipe; a YAML recipe and the command line override it.

    python train/pretrain.py --model resnet18_cifar_simclr_topk --recipe train/recipes/simclr_cifar10.yaml \\
        --output-dir runs/simclr-topk-cifar10
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 train/pretrain.py \\
        --model resnet18_barlow_fsq --recipe train/recipes/barlow_in100.yaml --output-dir runs/barlow-in100

Running the same command again continues from the folder's last checkpoint. The output folder gets
run_config.json, checkpoints/, log.jsonl, tensorboard/<run name>/ and, at the end, the Hub-ready model/.
"""

import logging
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from timm.models import split_model_name_tag

import ibzoo
from ibzoo.augment import INTERPOLATION
from ibzoo.batched_augment import build_batched_pretrain_augment
from ibzoo.data import load_image_dataset
from ibzoo.hub import push_to_hub, save_pretrained
from ibzoo.optim import warmup_cosine_schedule
from ibzoo.training import (
    CheckpointManager,
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
    write_run_config,
)

logger = logging.getLogger("pretrain")


def main(argv: list[str] | None = None) -> Path:
    try:
        config = parse_pretrain_args(argv)
    except (ValueError, KeyError, FileNotFoundError) as error:
        # A mistake in the settings: one argparse-style line (on every process), not a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"pretrain.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    output_dir = Path(config.output_dir)
    # The schedule is stepped by hand once per optimisation step: Accelerate's own stepping would advance
    # it once per process, a convention for schedules counted in per-process batches.
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=list(config.log_with) or None,
        # Local trackers (TensorBoard) write under DIR/tensorboard/<run name>/.
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=output_dir / "tensorboard"),
        step_scheduler_with_optimizer=False,
        # Pinned batches copied asynchronously to the GPU overlap with the previous step.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    check_output_dir(output_dir, config.identity(), config.resume)
    set_seed(config.seed)

    # Data: the global batch is split over processes and accumulation steps; every process gets whole
    # batches drawn from (seed, epoch), so a resumed run sees the same images and augmentations.
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
    )
    # With --augment-on-device the workers only decode; the views are made batched on the accelerator.
    augment = None
    if config.augment_on_device:
        augment = build_batched_pretrain_augment(
            config.objective.framework, config.image_size, config.mean, config.std
        ).to(accelerator.device)
    steps_per_epoch = len(train_data.dataset) // config.batch_size
    total_steps = steps_per_epoch * config.epochs

    # Model: backbone + projector + objective from the config, and the online classifier on Z1.
    ssl_model = ibzoo.create_pretraining_model(
        split_model_name_tag(config.model)[0],
        projector_config=config.projector,
        objective_config=config.objective,
        zero_init_last=config.zero_init_last,
    )
    num_classes = train_data.num_classes if config.online_classifier else None
    module = PretrainingModule(ssl_model, num_classes)
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

    optimizer = build_pretrain_optimizer(
        module, config.optimizer, config.batch_size, config.online_classifier_lr
    )
    warmup_steps = round(config.optimizer.warmup_epochs * steps_per_epoch)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps, config.optimizer.min_lr_ratio)

    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)

    # Resume: the trainer state travels inside each checkpoint, next to the model and optimiser.
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
    if config.log_with:
        # Trackers name the run after its output folder: the W&B / MLflow / Comet project, the TensorBoard
        # run folder, so runs logged to one place stay apart.
        run_name = output_dir.resolve().name
        accelerator.init_trackers(run_name, config=flat_hparams(config.to_dict()))
    if accelerator.is_main_process:  # only now: a run that failed to start leaves no record behind
        write_run_config(output_dir, config.to_dict())
    log = RunLog(accelerator, output_dir / "log.jsonl", resumed_step=state.global_step)
    trainer = Pretrainer(
        accelerator,
        module,
        optimizer,
        scheduler,
        state,
        log,
        steps_per_epoch=steps_per_epoch,
        global_batch_size=config.batch_size,
        log_every=config.log_every,
        augment=augment,
        seed=config.seed,
    )

    last_step = min(total_steps, config.max_steps or total_steps)
    stop_epoch = min(config.epochs, state.epoch + (config.max_epochs_this_run or config.epochs))
    logger.info(
        "%s: %d images, global batch %d (%d per process), %d steps per epoch, step %d of %d",
        config.model,
        len(train_data.dataset),
        config.batch_size,
        per_process_batch,
        steps_per_epoch,
        state.global_step,
        last_step,
    )
    while state.global_step < last_step and state.epoch < stop_epoch:
        trainer.train_epoch(loader, state.epoch, last_step)
        finished = state.global_step >= last_step or state.epoch == stop_epoch
        if finished or state.epoch % config.checkpoint_every == 0:
            checkpoints.save(checkpoint_name(state, steps_per_epoch))

    if state.global_step < last_step:  # paused by --max-epochs-this-run: the next invocation continues
        accelerator.end_training()
        return output_dir / "checkpoints"
    digests = replica_digests(accelerator, accelerator.unwrap_model(module).ssl_model.backbone)
    log.write({"backbone_parameter_sha256": digests}, step=state.global_step)
    model_dir = output_dir / "model"
    if accelerator.is_main_process:
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
        if config.push_to_hub:
            push_to_hub(model_dir, config.push_to_hub)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return model_dir


if __name__ == "__main__":
    main()

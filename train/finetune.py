"""Fine-tune a backbone with a new classifier on a labelled data set, the Accelerate way.

--mode full trains every weight; --mode linear freezes the backbone (kept in eval mode, so BatchNorm
statistics stay as pretrained) and trains the classifier alone. Training images get a random resized
crop and a horizontal flip at the model's input size; evaluation uses the model's own preprocessing.
The result is a timm folder (config.json + model.safetensors) that ``timm.create_model("local-dir:...",
pretrained=True)`` loads, plus results.json with the top-1 accuracy of every epoch.

The model is a pretraining run or a Hub-ready folder (--model-dir), or a model name (--model) with its
pretrained weights; --random-init trains the name's architecture from scratch, the supervised reference.

    python train/finetune.py --model resnet18_cifar_simclr_topk.cifar10 --data.dataset uoft-cs/cifar10 \\
        --mode linear --epochs 30 --output-dir runs/topk-linear
    accelerate launch --mixed_precision bf16 train/finetune.py --model-dir runs/simclr-topk \\
        --data.dataset uoft-cs/cifar10 --mode full --optimizer sgd --output-dir runs/topk-full
    python train/finetune.py --model resnet18_cifar_simclr_mlp --random-init --data.dataset uoft-cs/cifar10 \\
        --mode full --output-dir runs/scratch
"""

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import timm.data
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.models import save_for_hf
from torch import nn
from torch.utils.data import DataLoader

import ibzoo
from ibzoo.augment import ViewRecipe, build_view_transform, collate, with_views
from ibzoo.data import load_image_dataset
from ibzoo.evaluation import extract_features, model_eval_transform, topk_accuracy
from ibzoo.optim import OptimizerConfig, build_optimizer, warmup_cosine_schedule
from ibzoo.training.cli import (
    add_data_arguments,
    add_model_source_arguments,
    add_run_arguments,
    data_config_from_args,
    model_source,
    per_process_batch_size,
)

# Per-optimiser defaults of --lr / --weight-decay (SGD's decay is coupled L2, AdamW's decoupled).
DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.1}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "sgd": 5e-4}
# Supervised augmentation: crop and flip only, no colour distortion.
SUPERVISED_VIEW = ViewRecipe(jitter_p=0.0, grayscale_p=0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the model, ``data_config`` and the optimiser defaults resolved."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument(
        "--num-classes", type=int, help="classifier width (default: from the dataset's labels)"
    )
    parser.add_argument(
        "--mode", choices=("full", "linear"), default="full", help="train everything or the head"
    )
    parser.add_argument(
        "--optimizer", choices=("adamw", "sgd"), default="adamw", help="SGD uses momentum 0.9"
    )
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {DEFAULT_LR})")
    parser.add_argument(
        "--weight-decay", type=float, help=f"on weights with ndim >= 2 only (default: {DEFAULT_WEIGHT_DECAY})"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--warmup-epochs", type=float, default=0.0, help="linear warmup before the cosine decay"
    )
    add_run_arguments(parser, batch_size=128, batch="images per optimisation step")
    parser.add_argument("--output-dir", type=Path, required=True, help="gets model/ and results.json")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}.")
    if args.num_classes is not None and args.num_classes < 1:
        parser.error(f"--num-classes must be >= 1, got {args.num_classes}.")
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    if args.weight_decay is None:
        args.weight_decay = DEFAULT_WEIGHT_DECAY[args.optimizer]
    try:
        args.data_config = data_config_from_args(args)
        args.model_name, args.pretrained = model_source(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def freeze_all_but_classifier(model: nn.Module) -> None:
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    mode: str,
) -> float:
    """One pass over ``loader``; returns the mean training loss over batches and processes."""
    # A frozen backbone stays in eval mode so that its BatchNorm statistics do not drift.
    model.train(mode == "full")
    loss_sum = torch.zeros((), device=accelerator.device)
    for batch in loader:
        loss = F.cross_entropy(model(batch["views"][0]), batch["label"])
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
    return accelerator.reduce(loss_sum, "mean").item() / len(loader)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Mixed precision and the process count come from `accelerate launch` / `accelerate config`.
    accelerator = Accelerator(cpu=args.cpu)
    set_seed(args.seed)
    results_path = args.output_dir / "results.json"
    if results_path.exists():
        raise ValueError(
            f"{results_path} exists: {args.output_dir} holds a finished run; pass another --output-dir."
        )

    dataset = args.data_config.dataset
    train_data = load_image_dataset(args.data_config, args.data_config.train_split)
    eval_data = load_image_dataset(args.data_config, args.data_config.eval_split)
    num_classes = args.num_classes if args.num_classes is not None else train_data.num_classes
    if num_classes is None:
        raise ValueError(f"{dataset} has no label column; name it with --data.label-column.")
    if num_classes < (train_data.num_classes or 0):
        raise ValueError(
            f"--num-classes {num_classes} is below the {train_data.num_classes} classes of {dataset}; "
            "leave it out to take the dataset's."
        )

    model = ibzoo.create_model(args.model_name, pretrained=args.pretrained, num_classes=num_classes)
    if args.mode == "linear":
        freeze_all_but_classifier(model)

    data_cfg = timm.data.resolve_model_data_config(model)
    train_transform = build_view_transform(
        SUPERVISED_VIEW, data_cfg["input_size"][-1], data_cfg["mean"], data_cfg["std"]
    )
    # Each process draws its share of the global batch; the prepared loader hands each process its batches.
    batch_size = per_process_batch_size(args.batch_size, accelerator.num_processes)
    train_loader = DataLoader(
        with_views(train_data, train_transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        collate_fn=collate,
        drop_last=True,  # a last batch of one image would break BatchNorm in training mode
    )
    if args.batch_size > len(train_data.dataset):
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the {len(train_data.dataset)} training images; "
            "pass a smaller one."
        )
    eval_loader = DataLoader(
        with_views(eval_data, model_eval_transform(model)),
        batch_size=batch_size,
        num_workers=args.num_workers,
        collate_fn=collate,
    )

    optimizer_config = OptimizerConfig(
        name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, lr_scaling="none"
    )
    optimizer = build_optimizer(model, optimizer_config, args.batch_size)
    # Counted on the unsharded loader: the prepared scheduler steps once per process each step.
    total_steps = args.epochs * len(train_loader)
    warmup_steps = math.floor(args.warmup_epochs * len(train_loader))
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )

    history = []
    for epoch in range(args.epochs):
        train_loss = train_one_epoch(model, train_loader, optimizer, scheduler, accelerator, args.mode)
        logits, labels = extract_features(model, eval_loader, accelerator)
        top1 = topk_accuracy(logits, labels)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "top1": top1})
        accelerator.print(f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f}  top-1 {top1:6.2f}")

    results = {
        "model": args.model_name,
        "pretrained": args.pretrained,
        "dataset": dataset,
        "mode": args.mode,
        "num_classes": num_classes,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "epochs": history,
        "final_top1": history[-1]["top1"],
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        class_names = train_data.class_names
        label_names = (
            {"label_names": list(class_names)} if class_names and len(class_names) == num_classes else {}
        )
        save_for_hf(
            accelerator.unwrap_model(model),
            args.output_dir / "model",
            safe_serialization=True,
            model_config=label_names,
        )
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        accelerator.print(f"saved {args.output_dir / 'model'} and {results_path}")
    return results


if __name__ == "__main__":
    main()

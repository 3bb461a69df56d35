"""Evaluate a frozen backbone: weighted k-NN and a linear probe on its pre-projector features.

The backbone comes from a pretraining run or a Hub-ready folder (--model-dir), or from a model name
(--model) with its pretrained weights; --random-init gives the name's untrained reference, made fair
with --recalibrate-bn N (BatchNorm statistics of N training images instead of the initial 0 / 1).
Preprocessing (input size, mean / std) comes from the model's own config.

    python train/evaluate.py --model-dir runs/simclr-topk --data.dataset uoft-cs/cifar10
    python train/evaluate.py --model resnet18_cifar_simclr_topk.cifar10 --data.dataset uoft-cs/cifar10 \\
        --protocol paper --output results/topk.json
    python train/evaluate.py --model resnet18_cifar_simclr_mlp --random-init --recalibrate-bn 4096 \
        --data.dataset data/digits
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

import ibzoo
from ibzoo.data import load_image_dataset
from ibzoo.evaluation import evaluate_backbone, recalibrate_batchnorm
from ibzoo.training.cli import (
    add_data_arguments,
    add_model_source_arguments,
    add_run_arguments,
    data_config_from_args,
    finite_float,
    model_source,
    per_process_batch_size,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``model_name``, ``pretrained`` and ``data_config`` resolved."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--knn-k", type=int, default=200, help="neighbours of the weighted k-NN")
    parser.add_argument(
        "--knn-temperature",
        type=finite_float(0, inclusive=False),
        default=0.1,
        help="temperature T of the k-NN weights",
    )
    parser.add_argument(
        "--protocol",
        choices=("paper", "fast"),
        default="fast",
        help="linear probe: paper's SGD or fast L-BFGS",
    )
    parser.add_argument(
        "--probe-l2",
        type=finite_float(0, inclusive=True),
        help="L2 weight of the fast probe; default: chosen on a held-out tenth of the training images",
    )
    parser.add_argument(
        "--recalibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="first recompute BatchNorm statistics on N training images (makes --random-init fair; "
        "with trained weights, a check of their statistics; 0: off)",
    )
    parser.add_argument(
        "--zero-init-last",
        action="store_true",
        help="with --random-init: timm's init (each residual block's last BatchNorm gamma at 0), "
        "not the zoo's (gamma at 1)",
    )
    add_run_arguments(parser, batch_size=256, batch="images per feature-extraction batch")
    parser.add_argument("--output", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.recalibrate_bn < 0:
        parser.error(f"--recalibrate-bn {args.recalibrate_bn}: pass a number of images >= 0.")
    if args.zero_init_last and not args.random_init:
        parser.error("--zero-init-last goes with --random-init: pretrained weights set every gamma.")
    try:
        args.data_config = data_config_from_args(args)
        args.model_name, args.pretrained = model_source(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    accelerator = Accelerator(cpu=args.cpu)
    set_seed(args.seed)

    model_name, pretrained, dataset = args.model_name, args.pretrained, args.data_config.dataset
    # num_classes=0: the pooled features even when the folder holds a fine-tuned classifier.
    init = {"zero_init_last": True} if args.zero_init_last else {}
    backbone = ibzoo.create_model(model_name, pretrained=pretrained, num_classes=0, **init)
    train_data = load_image_dataset(args.data_config, args.data_config.train_split)
    test_data = load_image_dataset(args.data_config, args.data_config.eval_split)
    if args.recalibrate_bn:
        recalibrate_batchnorm(backbone, train_data, args.recalibrate_bn)

    results = evaluate_backbone(
        backbone,
        train_data,
        test_data,
        knn_k=args.knn_k,
        knn_temperature=args.knn_temperature,
        protocol=args.protocol,
        probe_l2=args.probe_l2,
        batch_size=per_process_batch_size(args.batch_size, accelerator.num_processes),
        num_workers=args.num_workers,
        seed=args.seed,
        accelerator=accelerator,
    )
    record = {"model": model_name, "pretrained": pretrained, "dataset": dataset, **results}
    record.update(recalibrated_bn_images=args.recalibrate_bn, zero_init_last=args.zero_init_last)

    if accelerator.is_main_process:
        weights = "" if pretrained else " (random init)"
        print(f"model          {model_name}{weights}")
        print(f"dataset        {dataset}: {record['num_train']} train / {record['num_test']} test images")
        print(f"k-NN top-1     {record['knn_top1']:6.2f}   (k={record['knn_k']}, T={args.knn_temperature})")
        l2 = f", l2 {record['linear_l2']:g}" if record["linear_l2"] is not None else ""
        print(f"linear top-1   {record['linear_top1']:6.2f}   ({args.protocol} protocol{l2})")
        print(f"features       {record['feature_dim']}")
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()

"""A Fashion-MNIST table of every projector: same budget and seeds, frozen-feature accuracy on the test set.

For each framework (SimCLR, Barlow Twins) and projector (mlp, fsq, topk, topk_fsq, mlp_mi) this pretrains
``resnet18_cifar_{framework}_{projector}.fmnist`` with train/pretrain.py (one subprocess and output folder
per cell and seed), then scores the pre-projector features Z1 with weighted k-NN and the fast linear probe
(ibzoo.evaluation.evaluate_backbone) on the test split; an untrained backbone is the reference row, as in
"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507).

    python train/benchmark_fmnist.py --output-dir bench-fmnist                 # the full budget (~2 h)
    python train/benchmark_fmnist.py --output-dir bench-quick --budget quick   # smoke test
    python train/benchmark_fmnist.py --output-dir bench-fmnist --resume        # continue after a kill

Output: ``data/`` (the Fashion-MNIST subset as a datasets folder), ``runs/NAME/seedS/`` (pretraining runs,
which themselves resume from their checkpoints), ``results.json`` (settings, every cell and seed, wall
times; rewritten after each run, and finished runs are skipped with --resume), ``results.md`` (mean ± std
over seeds and the paired delta against mlp) and ``hub/ibzoo/NAME.fmnist`` (the first seed's model as a
Hub-ready folder, with its results in config.json and the model card).

Budgets. "full" is sized for about two hours on an idle 2-core CPU, where resnet18_cifar trains at about
60 images/s at 32 px (two views each) and runs inference about three times as fast: 20 pretraining runs
(2 frameworks x 5 projectors x 2 seeds) of 6 epochs over 3000 images at the tag's 32 px, global batch 128
(140 optimisation steps; 1 warmup epoch), i.e. 20 x 18000 / 60 = 100 min, plus about 10 min of feature
extraction for 22 evaluations of 3000 + 3000 images. The subset and epoch count are the largest that fit, as
more optimisation steps separate the projectors more; at 3000 test images one seed's accuracy has a
binomial standard error of about 0.7 points, so the paired deltas resolve differences of
a point or two. The top-k projector uses 4096 latents with k = 64 instead of the paper's 100000 / 1000:
the paper's decoder alone would be a 100000 x 512 matrix (51 M parameters, ~5x the backbone) updated
every step, which would dominate CPU time; 4096 / 64 keeps the paper's sparsity regime (k << latents,
1.6 % active vs 1 %) at a cost below the backbone's. "quick" is a smoke test of the whole pipeline
(16 px, 64 images, one epoch of 2 steps, one seed) whose numbers mean nothing. Time scales with
the machine's free cores: on a 2-core machine shared with other jobs we measured 3-4 images/s, where the
quick budget took 12 minutes; run the full budget in pieces with --resume, or on a GPU.
"""

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

import ibzoo
from ibzoo.benchmark_table import (
    RANDOM_INIT,
    find_run,
    load_results,
    record_run,
    render_markdown,
    save_results,
)
from ibzoo.data import DataConfig, build_fashion_mnist_dataset, load_image_dataset
from ibzoo.evaluation import evaluate_backbone
from ibzoo.hub import CARD_FILE, CONFIG_FILE, CURVES_FILE
from ibzoo.model_card import render_model_card
from ibzoo.models.zoo import DATASETS, FRAMEWORKS, HUB_ORGANIZATION, PROJECTORS

logger = logging.getLogger("benchmark_fmnist")

PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
TAG = "fmnist"
BUDGETS = {
    "full": dict(
        image_size=DATASETS[TAG].input_size[-1], subset=3000, epochs=6, batch_size=128, seeds=[0, 1]
    ),
    "quick": dict(image_size=16, subset=64, epochs=1, batch_size=32, seeds=[0]),
}
TOPK = dict(latents=4096, k=64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--projectors", nargs="+", choices=PROJECTORS, default=list(PROJECTORS))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the budget's")
    parser.add_argument("--subset", type=int, help="train and test images (the first N of each split)")
    parser.add_argument("--epochs", type=int, help="default: the budget's")
    parser.add_argument("--image-size", type=int, help="default: the budget's")
    parser.add_argument("--batch-size", type=int, help="global batch; default: the budget's")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers of each pretraining")
    parser.add_argument(
        "--idx-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX files"
    )
    parser.add_argument("--resume", action="store_true", help="keep output-dir's finished runs, do the rest")
    parser.add_argument("--cpu", action="store_true", help="pretrain on the CPU even with an accelerator")
    args = parser.parse_args(argv)
    for name, value in BUDGETS[args.budget].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def pretrain(name: str, seed: int, data_dir: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    """Pretrain one cell in its own process (fresh Accelerate state, a crash stays in its cell)."""
    argv = [sys.executable, str(PRETRAIN), "--model", f"{name}.{TAG}", "--data.dataset", str(data_dir)]
    argv += ["--output-dir", str(run_dir), "--seed", str(seed), "--epochs", str(args.epochs)]
    argv += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    # One warmup epoch of the recipe's ten: the schedule is 1 / 33 as long as the paper's.
    argv += ["--optimizer.warmup-epochs", str(min(1, args.epochs - 1))]
    argv += ["--num-workers", str(args.num_workers), "--log-every", "10", "--log-with"]
    if ibzoo.model_info(name).projector_config.topk_latents is not None:
        argv += ["--projector.topk-latents", str(TOPK["latents"]), "--projector.topk-k", str(TOPK["k"])]
    if args.cpu:
        argv.append("--cpu")
    subprocess.run(argv, check=True)
    return run_dir / "model"


def publish(model_dir: Path, hub_root: Path, name: str, results: dict) -> Path:
    """Copy a trained model folder to hub/ibzoo/NAME.fmnist and add its results to config.json and card."""
    repo_id = f"{HUB_ORGANIZATION}/{name}.{TAG}"
    folder = hub_root / repo_id
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / CONFIG_FILE).read_text())
    # The images are Fashion-MNIST's, built offline from its IDX files: the card links the Hub's copy.
    config["ibzoo"].update(results=results, dataset=DATASETS[TAG].hf_dataset)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    curves = CURVES_FILE if (folder / CURVES_FILE).is_file() else None
    render_model_card(config, repo_id=repo_id, curves_file=curves).save(folder / CARD_FILE)
    return folder


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    started = time.perf_counter()
    output_dir = args.output_dir
    results_file = output_dir / "results.json"
    settings = {key: getattr(args, key) for key in ("budget", "subset", "epochs", "image_size", "batch_size")}
    settings.update(topk_latents=TOPK["latents"], topk_k=TOPK["k"], probe="fast", knn_k=200)
    if results_file.exists() and not args.resume:
        raise ValueError(
            f"{results_file} exists; pass --resume to keep its runs or pick another --output-dir."
        )
    results = load_results(results_file) if results_file.exists() else {"settings": settings, "runs": []}
    if results["settings"] != settings:
        raise ValueError(
            f"{output_dir} holds a benchmark with settings {results['settings']}, not {settings}; "
            "pass the same --budget / --subset / --epochs / --image-size / --batch-size, or another "
            "--output-dir."
        )
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"

    data_dir = output_dir / "data"
    if not (data_dir / "dataset_dict.json").is_file():
        build_fashion_mnist_dataset(data_dir, args.idx_dir, subset=args.subset)
    train_data, test_data = (
        load_image_dataset(DataConfig(str(data_dir)), split) for split in ("train", "test")
    )

    # The untrained reference first: it costs one evaluation, so even an interrupted benchmark has it.
    cells = [RANDOM_INIT] + [(f, p) for f in args.frameworks for p in args.projectors]
    for seed in args.seeds:
        for framework, projector in cells:
            if find_run(results, framework, projector, seed):
                logger.info("%s %s seed %d: finished earlier, skipped", framework, projector, seed)
                continue
            name = f"resnet18_cifar_{framework}_{projector}"
            began = time.perf_counter()
            if (framework, projector) == RANDOM_INIT:
                torch.manual_seed(seed)
                overlay = dict(input_size=(3, args.image_size, args.image_size))
                backbone = ibzoo.create_model(
                    f"resnet18_cifar_simclr_mlp.{TAG}", pretrained_cfg_overlay=overlay
                )
            else:
                model_dir = pretrain(name, seed, data_dir, output_dir / "runs" / name / f"seed{seed}", args)
                backbone = ibzoo.create_model(f"local-dir:{model_dir}", pretrained=True)
            trained = time.perf_counter()
            scores = evaluate_backbone(backbone, train_data, test_data, protocol="fast", seed=seed)
            run = dict(framework=framework, projector=projector, seed=seed, **scores)
            run.update(train_seconds=trained - began, eval_seconds=time.perf_counter() - trained)
            record_run(results, run)
            save_results(results_file, results)
            logger.info("%s %s seed %d: %s", framework, projector, seed, json.dumps(run))
            if (framework, projector) != RANDOM_INIT and seed == args.seeds[0]:
                publish(model_dir, output_dir / "hub", name, scores)

    results["wall_seconds"] = results.get("wall_seconds", 0.0) + time.perf_counter() - started
    save_results(results_file, results)
    table = render_markdown(results)
    (output_dir / "results.md").write_text(table)
    print(table)  # the script's product, on stdout
    return results_file


if __name__ == "__main__":
    main()

"""A Fashion-MNIST table of every projector: same budget and seeds, frozen-feature accuracy on the test set.

For each framework (SimCLR, Barlow Twins) and projector (mlp, fsq, topk, topk_fsq, mlp_mi) this pretrains
``resnet18_cifar_{framework}_{projector}.fmnist`` with train/pretrain.py (one subprocess and output folder
per cell and seed), then scores the pre-projector features Z1 with weighted k-NN and the fast linear probe
(ibzoo.evaluation.evaluate_backbone) on the test split; an untrained backbone is the reference row, as in
"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507).

    python train/benchmark_fmnist.py --output-dir bench-fmnist                 # the full budget (~2 h)
    python train/benchmark_fmnist.py --output-dir bench-quick --budget quick   # smoke test
    python train/benchmark_fmnist.py --output-dir bench-fmnist --resume        # continue after a kill

The images come from the IDX files of ``apt-get install dataset-fashion-mnist`` (--idx-dir), else from
the Hub's copy, ``zalando-datasets/fashion_mnist`` (--fallback-dataset; the same images in the same order).

Output: ``data/`` (the Fashion-MNIST subset as a datasets folder), ``runs/NAME/seedS/`` (pretraining runs,
which themselves resume from their checkpoints), ``results.json`` (settings, every cell and seed, wall
times; rewritten after each run, and finished runs are skipped with --resume), ``results.md`` (mean ± std
over seeds and the paired delta against mlp) and ``hub/ibzoo/NAME.fmnist`` (the first seed's model as a
Hub-ready folder, with its results and the finished table in config.json and the model card; the
folders are written last, once the table is complete).

Budgets. "full" is sized for about two hours on an idle 2-core CPU. There resnet18_cifar at 32 px trains
at 2.4 s per step of 64 two-view images (26 images/s, each through the backbone twice; at batch 128 it
managed 21 images/s), and extracting the features of 2000 + 2000 images for the probes takes about
30 s. 20 pretraining runs (2 frameworks x 5 projectors x 2 seeds) of 4 epochs over 2000 images at the
tag's 32 px, global batch 64 (124 optimisation steps; 1 warmup epoch) cost 20 x 124 x 2.4 s = 100 min,
plus about 15 min of process start-up, checkpoints and 22 evaluations. The budget is spent on
optimisation steps rather than on more images or a larger batch, as a schedule this short leaves the
encoder far from converged and each step still moves it. 2000 test images give one seed's accuracy
a binomial standard error of about 0.8 points; the deltas are paired by seed on the same test images.
The top-k projector uses 4096 latents with
k = 64 instead of the paper's 100000 / 1000: the paper's decoder alone would be a 100000 x 512 matrix
(51 M parameters, ~5x the backbone) updated every step, which would dominate CPU time; 4096 / 64 keeps
the paper's sparsity regime (k << latents, 1.6 % active vs 1 %) at a cost below the backbone's.
"quick" is a smoke test of the whole pipeline (16 px, 64 images, one epoch of 2 steps, one seed) whose
numbers mean nothing. Time scales with the machine's free cores: run the full budget in pieces with
--resume if it must share them, or on a GPU.
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
from ibzoo.model_card import FRAMEWORK_TITLES, RESULT_METRICS, render_model_card
from ibzoo.models.zoo import DATASETS, FRAMEWORKS, HUB_ORGANIZATION, PROJECTORS

logger = logging.getLogger("benchmark_fmnist")

PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
TAG = "fmnist"
BUDGETS = {
    "full": dict(image_size=DATASETS[TAG].input_size[-1], subset=2000, epochs=4, batch_size=64, seeds=[0, 1]),
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
    parser.add_argument(
        "--fallback-dataset",
        default=DATASETS[TAG].hf_dataset,
        help="where to copy Fashion-MNIST from when --idx-dir has no IDX files (a Hub id or local folder)",
    )
    parser.add_argument("--resume", action="store_true", help="keep output-dir's finished runs, do the rest")
    parser.add_argument("--cpu", action="store_true", help="pretrain on the CPU even with an accelerator")
    args = parser.parse_args(argv)
    for name, value in BUDGETS[args.budget].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def model_name(framework: str, projector: str) -> str:
    return f"resnet18_cifar_{framework}_{projector}"


def run_dir(output_dir: Path, framework: str, projector: str, seed: int) -> Path:
    """Where a cell's pretraining run lives; its Hub-ready model is the ``model`` folder inside."""
    return output_dir / "runs" / model_name(framework, projector) / f"seed{seed}"


def pretrain(framework: str, projector: str, seed: int, data_dir: Path, args: argparse.Namespace) -> Path:
    """Pretrain one cell and seed into its :func:`run_dir` in its own process (fresh Accelerate state, a
    crash stays in its cell); returns its Hub-ready model folder."""
    name, folder = model_name(framework, projector), run_dir(args.output_dir, framework, projector, seed)
    argv = [sys.executable, str(PRETRAIN), "--model", f"{name}.{TAG}", "--data.dataset", str(data_dir)]
    argv += ["--output-dir", str(folder), "--seed", str(seed), "--epochs", str(args.epochs)]
    argv += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    # The recipe warms up for 10 of its 200 epochs; a run of a few epochs warms up for one.
    argv += ["--optimizer.warmup-epochs", str(min(1, args.epochs - 1))]
    argv += ["--num-workers", str(args.num_workers), "--log-every", "10", "--log-with"]
    if ibzoo.model_info(name).projector_config.topk_latents is not None:
        argv += ["--projector.topk-latents", str(TOPK["latents"]), "--projector.topk-k", str(TOPK["k"])]
    if args.cpu:
        argv.append("--cpu")
    if subprocess.run(argv).returncode != 0:
        raise SystemExit(
            f"Pretraining {name} seed {seed} failed (its error is above). Fix the cause and run the same "
            "command with --resume: finished runs are kept and this one continues from its checkpoint."
        )
    return folder / "model"


def publish(model_dir: Path, hub_root: Path, run: dict, benchmark: dict) -> Path:
    """Copy one run's model folder to hub/ibzoo/NAME.fmnist with its scores and the whole table in
    config.json and the model card."""
    name = model_name(run["framework"], run["projector"])
    repo_id = f"{HUB_ORGANIZATION}/{name}.{TAG}"
    folder = hub_root / repo_id
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / CONFIG_FILE).read_text())
    scores = {key: run[key] for key in RESULT_METRICS}
    description = (
        f"Every `resnet18_cifar_*.{TAG}` model was pretrained by `make bench-fmnist` "
        f"(train/benchmark_fmnist.py) with the same budget, {benchmark['budget']}; this checkpoint is "
        f"seed {run['seed']} of the row {FRAMEWORK_TITLES[run['framework']]} / {run['projector']}. "
        "Mean ± sample standard deviation over seeds; Δ is paired by seed against the framework's mlp "
        "projector. Frozen features, fast linear probe and weighted k-NN on the test images."
    )
    # The images are Fashion-MNIST's, built offline from its IDX files: the card links the Hub's copy,
    # and the benchmark's local folders mean nothing to a reader of the card.
    train_config = config["ibzoo"]["train_config"]
    train_config.pop("output_dir", None)
    train_config["data"]["dataset"] = DATASETS[TAG].hf_dataset
    config["ibzoo"].update(
        results=scores,
        dataset=DATASETS[TAG].hf_dataset,
        benchmark=dict(description=description, table=benchmark["table"]),
    )
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    curves = CURVES_FILE if (folder / CURVES_FILE).is_file() else None
    render_model_card(config, repo_id=repo_id, curves_file=curves).save(folder / CARD_FILE)
    return folder


def describe_budget(settings: dict) -> str:
    """The settings as one phrase for the model cards."""
    return (
        f"{settings['subset']} training images at {settings['image_size']} px, {settings['epochs']} epochs "
        f"at global batch {settings['batch_size']}, top-k projectors with {settings['topk_latents']} "
        f"latents and k = {settings['topk_k']}, scored on {settings['subset']} test images"
    )


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
        build_fashion_mnist_dataset(
            data_dir, args.idx_dir, subset=args.subset, fallback=args.fallback_dataset
        )
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
            began = time.perf_counter()
            if (framework, projector) == RANDOM_INIT:
                torch.manual_seed(seed)
                overlay = dict(input_size=(3, args.image_size, args.image_size))
                backbone = ibzoo.create_model(
                    f"resnet18_cifar_simclr_mlp.{TAG}", pretrained_cfg_overlay=overlay
                )
            else:
                model_dir = pretrain(framework, projector, seed, data_dir, args)
                backbone = ibzoo.create_model(f"local-dir:{model_dir}", pretrained=True)
            trained = time.perf_counter()
            scores = evaluate_backbone(backbone, train_data, test_data, protocol="fast", seed=seed)
            run = dict(framework=framework, projector=projector, seed=seed, **scores)
            run.update(train_seconds=trained - began, eval_seconds=time.perf_counter() - trained)
            record_run(results, run)
            save_results(results_file, results)
            logger.info("%s %s seed %d: %s", framework, projector, seed, json.dumps(run))

    table = render_markdown(results)
    (output_dir / "results.md").write_text(table)
    # Published last, so that every card holds the finished table: the first seed's model of each cell.
    benchmark = dict(budget=describe_budget(settings), table=table)
    for framework, projector in cells[1:]:
        run = find_run(results, framework, projector, args.seeds[0])
        model_dir = run_dir(output_dir, framework, projector, args.seeds[0]) / "model"
        publish(model_dir, output_dir / "hub", run, benchmark)
    results["wall_seconds"] = results.get("wall_seconds", 0.0) + time.perf_counter() - started
    save_results(results_file, results)
    print(table)  # the script's product, on stdout
    return results_file


if __name__ == "__main__":
    main()

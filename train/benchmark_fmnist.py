"""A Fashion-MNIST table of every projector, sized to tell a bottleneck from an MLP.

For each framework (SimCLR, Barlow Twins, BYOL, VICReg, MoCo v3) and projector (mlp, fsq, topk, topk_fsq,
mlp_mi), plus two SimCLR ablations (top-k with the tied init; mlp from timm's zero-init residual gamma),
this pretrains ``resnet18_{framework}_{projector}.fmnist`` with train/pretrain.py (one subprocess and
output folder per cell and seed), then scores the pre-projector features Z1 on the 10,000 test images
with weighted k-NN and the fast linear probe, whose L2 weight is chosen on a held-out tenth of the
training images (ibzoo.evaluation.evaluate_backbone). Two untrained references close the table: timm's
init with the initial BatchNorm statistics, and the zoo's init (every gamma at 1) with BatchNorm
statistics recalibrated on training images, the fair one. As "Projection Head is Secretly an Information
Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507) compares projectors.

    python train/benchmark_fmnist.py --output-dir bench-fmnist --resume       # the full budget (~1 day)
    python train/benchmark_fmnist.py --output-dir bench-fmnist --resume --cells simclr/topk,simclr/fsq
    python train/benchmark_fmnist.py --output-dir bench-quick --budget quick  # smoke test

The images come from the IDX files of ``apt-get install dataset-fashion-mnist`` (--idx-dir), else from
the Hub's copy, ``zalando-datasets/fashion_mnist`` (--fallback-dataset; the same images in the same order).

Output: ``data/`` (Fashion-MNIST as a datasets folder), ``runs/CELL/seedS/`` (pretraining runs, which
resume from their checkpoints), ``results.json`` (settings, every cell and seed, wall times; rewritten
after each run, and with --resume finished runs are skipped), ``results.md`` (the table) and
``hub/ibzoo/NAME.fmnist`` (seed 0's model of each zoo cell as a Hub-ready folder with its results and the
table in config.json and the model card, written once every run is finished).

The budget ("full"), and why:

- Data: all 60,000 training and 10,000 test images at 32 px (the tag's input; 28 px resized).
- Backbone: timm's standard-stem ``resnet18``, not the CIFAR stem. At 32 px on a CPU it trains about 19x
  the images/s (its stem downsamples 4x before the first block); this machine runs a SimCLR step of 256
  two-view images in about 1 s, where the CIFAR stem would need about 18 s.
- Schedule: global batch 256, warm-up over the first 5 % of the epochs (the reference's 10 of 200), then
  cosine; the recipe's CIFAR learning rates. Epochs are a framework's own (``BUDGETS["full"]["epochs"]``):
  the cells of one framework share them, since every Δ is within a framework, and a framework's budget
  is read off a learning curve (train/benchmark_curve.py: its mlp cell trained long and scored on the way)
  as the smallest number of epochs at which its mlp cell is at least 3 points above the fair random-init
  reference. SimCLR: 4 epochs = 936 LARS steps, where its curve is 9.6 points above the reference
  (85.66 % linear; 83.91 % after 1 epoch). BYOL, VICReg and MoCo v3: 1 epoch = 234 steps, the first
  point a curve scores, where BYOL's and MoCo v3's mlp cells are already 6.2 and 7.7 points above it (seed
  0, each its own 1-epoch schedule: train/results/fmnist_curves.json); VICReg's, at its reference's warm-up
  slope (see warmup_args), 9.2 (its seed 0 here: 85.27 %). Barlow Twins: 8 epochs = 1872 steps at its
  reference's warm-up slope, although no budget clears the rule. Its curve at that slope (24 epochs) is
  +0.9, +0.8, +1.3, +1.4, +1.5, +2.1 and +1.6 points above the reference at epochs 2, 4, 8, 12, 16, 20
  and 24 (linear; k-NN -8.0 to -2.9): flat on the linear probe, the benchmark's criterion, from epoch 8,
  every later point within 0.8 of it, where one seed moves by 3. Eight epochs is the first point of that
  plateau, at a third of the 24-epoch cost; the 47-step warm-up of the other frameworks left it level with
  the reference all the way (README, "Learning curves", with what was checked for a wrong detail). At 8
  epochs its mlp cell is +2.72 ± 2.25 points above the reference over three seeds (+0.90, +5.23, +2.02):
  the rule's 3 points lie inside one seed's spread.
- Top-k: 16384 latents, k = 1024. k above the 512-d backbone features, as the paper's k = 1000 > 512, so
  the output is not confined to a k-dimensional span; 16384 rather than 100000 latents keeps the encoder
  matmul below a fifth of the backbone's step on a CPU (6 % active latents, the paper 1 %).
- MI weight of ``mlp_mi``: large enough to act (see MI_WEIGHTS); the table reports the last epoch's
  mean SSL loss and λ·I(Z1; Z2) of every cell.
- Seeds: 5 for the main comparison (SimCLR mlp, fsq, topk: a 95 % interval on a paired difference of
  about ±1 point, the size of the paper's gains), 1 for BYOL's, VICReg's and MoCo v3's topk_fsq and
  mlp_mi (a first look, which their issue asks for), 3 for every other cell and reference. Runs go seed by
  seed, so an interrupted benchmark has whole seeds of every cell first.

On a 2-core CPU a SimCLR step took 0.5-1.8 s, a Barlow Twins top-k step about 1.5 s (one thread), so
a run takes 4 (one BYOL, VICReg or MoCo v3 epoch) to 50 minutes (Barlow Twins' top-k cells); an evaluation
takes 2-8 more, most of it the probe's L2 grid (six L-BFGS fits on 54,000 x 512 features): 75 runs and
81 evaluations, a few days of one such machine (README, "Benchmark on Fashion-MNIST").
Run it in pieces: every invocation with --resume continues where the last stopped.
"""

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import ibzoo
from benchmark_table import (
    REFERENCE,
    find_run,
    load_results,
    record_run,
    render_markdown,
    save_results,
    summarize,
)
from benchmarking import describe_device
from ibzoo.data import DataConfig, build_fashion_mnist_dataset, load_image_dataset
from ibzoo.evaluation import evaluate_backbone, recalibrate_batchnorm
from ibzoo.frameworks import FRAMEWORK_TITLES
from ibzoo.hub import CARD_FILE, CURVES_FILE
from ibzoo.model_card import RESULT_METRICS, render_model_card
from ibzoo.models.catalog import WITHHELD, ModelInfo, get_model_info
from ibzoo.models.datasets import DATASETS
from ibzoo.models.publication import tag_repo_id
from ibzoo.names import PROJECTORS
from ibzoo.published_source import CONFIG_FILE
from ibzoo.training import config_differences, parse_pretrain_args, run_differences, upgraded_run_config

logger = logging.getLogger("benchmark_fmnist")

PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
TAG = "fmnist"
BACKBONE = "resnet18"
BUDGETS = {
    # epochs: each framework's own (cells of one framework share it: every Δ is within a framework).
    # warmup_fraction: the reference's 10 warm-up epochs of 200.
    # reference_warmup_steps: frameworks whose lr rises at their reference's own warm-up slope instead
    # (lr * step / N, N = its warm-up steps), reaching the recipe's lr only after N steps; see warmup_args.
    "full": dict(
        subset=None,
        image_size=32,
        epochs={"simclr": 4, "barlow": 8, "byol": 1, "vicreg": 1, "mocov3": 1},
        batch_size=256,
        warmup_fraction=0.05,
        reference_warmup_steps={"vicreg": 1950, "barlow": 1950},
        main_seeds=5,
        seeds=3,
    ),
    # 32 px, not less: at 16 px layer4's stride-2 convolutions see 1x1 maps, whose bf16 weight gradient
    # on the CPU (torch 2.14) intermittently holds NaN; at 32 px they see 2x2 maps (checked: no NaN).
    "quick": dict(
        subset=64,
        image_size=32,
        epochs={"simclr": 1, "barlow": 1, "byol": 1, "vicreg": 1, "mocov3": 1},
        batch_size=32,
        warmup_fraction=0.0,
        reference_warmup_steps={},
        main_seeds=1,
        seeds=1,
    ),
}
# Steps per logged interval: the log times the run (log_summary), so the 2-step quick run logs every step.
# Not in BUDGETS, whose settings a resumed results.json must match.
LOG_EVERY = {"full": 20, "quick": 1}
TOPK = dict(latents=16384, k=1024)
# λ of the mlp_mi cells. The recipe's CIFAR value, 1e-4, added about 5e-4 to a SimCLR loss of 4.6 in the
# previous benchmark (I(Z1; Z2) about 5 nats): a re-run of mlp. Measured over the first 60 steps of this
# budget: SimCLR's I rises from 0.18 to 0.68 nats while its loss falls from 6.1 to 5.6; Barlow Twins' I is
# 0.4-0.5 beside a loss of 180-190. These weights put λ·I near a tenth of the SSL loss once I reaches a
# few nats; the table reports both for every cell. The same rule, λ ≈ 0.1 L / 5 nats with L the loss over
# the first 60 steps of each one-epoch curve run (seed 0): BYOL 0.5-1.9, VICReg 39-48, MoCo v3 3.9-4.3.
MI_WEIGHTS = {"simclr": 0.1, "barlow": 5.0, "byol": 0.01, "vicreg": 0.8, "mocov3": 0.08}
RECALIBRATION_IMAGES = 4096
ROW_TITLES = {
    "topk_tied": "topk, tied init",
    "mlp_zero_init": "mlp, γ = 0 init",
    "random_init": "random init (γ = 0, initial BN statistics)",
    "random_init_bn": "random init (γ = 1, BN recalibrated)",
}


@dataclass(frozen=True)
class Cell:
    """One row of the table: a zoo model (framework + projector), an ablation of one, or a reference."""

    framework: str
    row: str
    """The row's key in results.json (``projector``): the zoo projector, or an ablation's name."""
    projector: str | None = None
    """The zoo projector pretrained (default: ``row``); None for an untrained reference."""
    main: bool = False
    """In the main comparison, which gets more seeds."""
    first_look: bool = False
    """A cell of which one seed is enough (a first look), whatever the budget's seed count."""
    pretrain_args: tuple[str, ...] = ()
    """Extra train/pretrain.py flags of an ablation."""

    @property
    def key(self) -> str:
        return f"{self.framework}/{self.row}"

    @property
    def withheld(self) -> bool:
        """Whether the zoo withholds the pair (``catalog.WITHHELD``): then it trains as an experiment."""
        return self.framework != REFERENCE and model_name(self) in WITHHELD

    @property
    def published(self) -> bool:
        """Whether seed 0 of this cell becomes the zoo's ``.fmnist`` weights (zoo cells only)."""
        return self.framework != REFERENCE and not self.pretrain_args and not self.withheld

    def seeds(self, settings: dict) -> range:
        if self.first_look:
            return range(1)
        return range(settings["main_seeds"] if self.main else settings["seeds"])


# The fair reference (the zoo's init, BatchNorm recalibrated) is the one trained cells must beat.
FAIR_REFERENCE = Cell(REFERENCE, "random_init_bn")
REFERENCES = (Cell(REFERENCE, "random_init"), FAIR_REFERENCE)
MAIN = {("simclr", "mlp"), ("simclr", "fsq"), ("simclr", "topk")}
FIRST_LOOK = {(f, p) for f in ("byol", "vicreg", "mocov3") for p in ("topk_fsq", "mlp_mi")}
CELLS = (
    *(
        Cell(f, p, p, (f, p) in MAIN, (f, p) in FIRST_LOOK)
        for f in BUDGETS["full"]["epochs"]
        for p in PROJECTORS
    ),
    Cell("simclr", "topk_tied", "topk", pretrain_args=("--projector.topk-init", "tied")),
    Cell("simclr", "mlp_zero_init", "mlp", pretrain_args=("--zero-init-last",)),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument(
        "--cells",
        help="comma-separated FRAMEWORK/ROW keys to run, e.g. simclr/topk,none/random_init_bn "
        "(default: every cell); the others keep their results",
    )
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds to run, e.g. 0 or 3,4 (default: each cell's own, 5 or 3); a seed a "
        "cell does not have is skipped",
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="forget the --cells' finished runs (only the --seeds ones, if given) and train them again",
    )
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
    known = {cell.key: cell for cell in (*REFERENCES, *CELLS)}
    args.selected = list(known.values())
    if args.cells:
        keys = [key.strip() for key in args.cells.split(",") if key.strip()]
        unknown = [key for key in keys if key not in known]
        if unknown:
            parser.error(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(known)}.")
        args.selected = [known[key] for key in keys]
    if args.seeds is not None:
        given = args.seeds
        try:
            args.seeds = {int(seed) for seed in given.split(",") if seed.strip()}
        except ValueError:
            args.seeds = set()
        if not args.seeds or min(args.seeds) < 0:
            parser.error(
                f"--seeds: {given!r} is not a comma-separated list of seeds from 0 up, e.g. 0 or 3,4."
            )
    if args.rerun and not args.cells:
        parser.error("--rerun goes with --cells: name the cells to train again.")
    return args


def benchmark_data(output_dir: Path, settings: dict, args: argparse.Namespace) -> tuple[Path, Any, Any]:
    """The benchmark's Fashion-MNIST folder (``output_dir/data``, built once from ``args.idx_dir`` or
    ``args.fallback_dataset``) and its train and test splits."""
    data_dir = output_dir / "data"
    if not (data_dir / "dataset_dict.json").is_file():
        build_fashion_mnist_dataset(
            data_dir, args.idx_dir, subset=settings["subset"], fallback=args.fallback_dataset
        )
    train_data, test_data = (
        load_image_dataset(DataConfig(str(data_dir)), split) for split in ("train", "test")
    )
    return data_dir, train_data, test_data


def model_name(cell: Cell) -> str:
    return f"{BACKBONE}_{cell.framework}_{cell.projector}"


def model_info(cell: Cell) -> ModelInfo:
    """The cell's ``.fmnist`` recipe, a withheld pair's too (it trains as an experiment)."""
    return get_model_info(f"{model_name(cell)}.{TAG}", withheld=True)


def warmup_args(cell: Cell, epochs: int, settings: dict, data_dir: Path) -> list[str]:
    """The pretrain.py flags of the cell's warm-up: over ``warmup_fraction`` of its epochs to the recipe's
    lr, or for a framework in ``reference_warmup_steps`` at its reference's warm-up slope.

    VICReg takes the second. Its reference (solo-learn ``scripts/pretrain/cifar/vicreg.yaml``, 1000
    epochs, ``warmup_cosine`` with solo-learn's default 10 warm-up epochs) raises the lr to 0.3 over 10 x
    195 = 1950 steps. Compressed into 5 % of one epoch (12 steps), VICReg diverged: its loss is not
    scale-invariant, and by step 7 the BatchNorm and bias parameters, which LARS leaves to plain SGD as
    the reference does, were taking steps of up to 30 times their own size (loss 47 -> 1e17 by step 20;
    the top-k cell at seed 0; in five 40-step tries the mlp cell diverged three times, bf16 and float32,
    and spiked to 3e6 with every parameter under LARS and to 2e4 warmed up over the whole epoch). At the
    reference's slope the lr is 0.3 x 234 / 1950 = 0.036 at the end of a 234-step epoch: the budget is
    the reference's first epoch, and its loss falls smoothly.

    Barlow Twins takes it too: its reference (``scripts/pretrain/cifar/barlow.yaml``, lr 0.3, the same
    default 10 warm-up epochs of 195 steps) warms up over 1950 steps as well. With 5 % of 4 epochs (47
    steps) its mlp cell ended 5.9 points below the fair random-init reference; at the slope, seed 0 gained
    4.7 points linear and 3.8 k-NN at the same 936 steps, the one difference from the reference recipe
    found to matter (README, "Learning curves"). Its 8-epoch budget ends at lr 0.3 x 1872 / 1950 = 0.288.
    """
    reference_steps = settings["reference_warmup_steps"].get(cell.framework)
    if reference_steps is None:
        return ["--optimizer.warmup-epochs", f"{settings['warmup_fraction'] * epochs:g}"]
    lr = model_info(cell).optimizer_config.lr
    images = load_image_dataset(DataConfig(str(data_dir)), "train").dataset.num_rows
    steps_per_epoch = images // settings["batch_size"]
    warmup_epochs = min(epochs, reference_steps / steps_per_epoch)
    peak = lr * min(1.0, epochs * steps_per_epoch / reference_steps)
    return ["--optimizer.lr", f"{peak:g}", "--optimizer.warmup-epochs", f"{warmup_epochs:g}"]


def seeds_to_run(cell: Cell, settings: dict, args: argparse.Namespace) -> list[int]:
    """The cell's seeds that this invocation runs (or, with --rerun, trains again): all, or the --seeds."""
    return [seed for seed in cell.seeds(settings) if args.seeds is None or seed in args.seeds]


def run_dir(output_dir: Path, cell: Cell, seed: int) -> Path:
    """Where a cell's pretraining run lives; its Hub-ready model is the ``model`` folder inside."""
    return output_dir / "runs" / f"{cell.framework}_{cell.row}" / f"seed{seed}"


def pretrain_args(
    cell: Cell,
    seed: int,
    data_dir: Path,
    settings: dict,
    args: argparse.Namespace,
    epochs: int | None,
    folder: Path,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """train/pretrain.py's flags for one cell and seed, trained for ``epochs`` (None: its framework's
    budget) into ``folder``."""
    epochs = epochs or settings["epochs"][cell.framework]
    argv = ["--model", f"{model_name(cell)}.{TAG}", "--data.dataset", str(data_dir)]
    argv += ["--output-dir", str(folder), "--seed", str(seed), "--epochs", str(epochs)]
    argv += ["--batch-size", str(settings["batch_size"]), "--image-size", str(settings["image_size"])]
    argv += warmup_args(cell, epochs, settings, data_dir)
    # The reference trains in 16-bit mixed precision; bf16 is also the faster one on CPUs with AVX512-BF16.
    argv += ["--mixed-precision", "bf16"]
    argv += ["--num-workers", str(args.num_workers), "--log-every", str(LOG_EVERY[args.budget])]
    argv += ["--log-with"]
    if model_info(cell).projector_config.topk_latents is not None:
        argv += ["--projector.topk-latents", str(TOPK["latents"]), "--projector.topk-k", str(TOPK["k"])]
    if cell.projector == "mlp_mi":
        argv += ["--objective.mi-weight", str(MI_WEIGHTS[cell.framework])]
    argv += [*cell.pretrain_args, *extra_args]
    if cell.withheld:
        argv.append("--experiment")
    if args.cpu:
        argv.append("--cpu")
    return argv


def pretrain(
    cell: Cell,
    seed: int,
    data_dir: Path,
    settings: dict,
    args: argparse.Namespace,
    epochs: int | None = None,
    folder: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Pretrain one cell and seed for ``epochs`` (default: its framework's budget) into ``folder``
    (default: its :func:`run_dir`) in its own process (fresh Accelerate state, a crash stays in its cell);
    returns the run folder. ``extra_args`` are more train/pretrain.py flags (a learning curve's
    ``--max-epochs-this-run``)."""
    benchmark_run = folder is None  # not a learning curve's, which has its own folder
    folder = folder or run_dir(args.output_dir, cell, seed)
    flags = pretrain_args(cell, seed, data_dir, settings, args, epochs, folder, extra_args)
    if subprocess.run([sys.executable, str(PRETRAIN), *flags]).returncode != 0:
        restart = (
            f" If the error says {folder} holds another run (one of an earlier budget), start it over with "
            f"--cells {cell.key} --seeds {seed} --rerun."
        )
        raise SystemExit(
            f"Pretraining {cell.key} seed {seed} failed (its error is above). Fix the cause and run the same "
            "command with --resume: finished runs are kept and this one continues from its checkpoint."
            + (restart if benchmark_run else "")
        )
    return folder


def log_summary(log_file: Path, batch_size: int) -> dict[str, float | None]:
    """From a run's log.jsonl: the last epoch's mean SSL loss and MI term λ·I(Z1; Z2) (total loss minus
    SSL loss), the last logged I(Z1; Z2), and ``pretrain_seconds``, the run's steps times its median
    logged step time (global ``batch_size`` / images per s).

    The log, unlike a wall clock around the subprocess, covers every invocation of a resumed run; the
    median leaves out start-up, checkpointing and intervals slowed by other work on the machine.
    """
    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "epoch/mean_ssl_loss" in r]
    plane = [r for r in records if "train/mutual_information" in r]
    rates = [r["train/images_per_s"] for r in records if "train/images_per_s" in r]
    last = epochs[-1] if epochs else {}
    steps = max((r["step"] for r in records), default=0)
    return {
        "final_ssl_loss": last.get("epoch/mean_ssl_loss"),
        "final_mi_term": last["epoch/mean_loss"] - last["epoch/mean_ssl_loss"] if last else None,
        "final_mutual_information": plane[-1]["train/mutual_information"] if plane else None,
        "pretrain_seconds": steps * batch_size / statistics.median(rates) if rates else None,
    }


def reference_backbone(cell: Cell, seed: int, image_size: int, train_data) -> torch.nn.Module:
    """An untrained ``resnet18`` with the ``.fmnist`` preprocessing: timm's init as it comes, or the zoo's
    init with BatchNorm statistics recalibrated on training images."""
    torch.manual_seed(seed)
    overlay = dict(input_size=(3, image_size, image_size))
    name = f"{BACKBONE}_simclr_mlp.{TAG}"
    if cell.row == "random_init":
        return ibzoo.create_model(name, pretrained_cfg_overlay=overlay, zero_init_last=True)
    backbone = ibzoo.create_model(name, pretrained_cfg_overlay=overlay)
    return recalibrate_batchnorm(backbone, train_data, RECALIBRATION_IMAGES)


def publish(model_dir: Path, hub_root: Path, cell: Cell, run: dict, reference: dict, benchmark: dict) -> Path:
    """Copy one run's model folder to hub/ibzoo/NAME.fmnist with its scores, its margin over the fair
    random-init reference of the same seed (``reference``) and the whole table in config.json and the
    model card."""
    repo_id = tag_repo_id(f"{model_name(cell)}.{TAG}")
    folder = hub_root / repo_id
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / CONFIG_FILE).read_text())
    scores = {key: run[key] for key in RESULT_METRICS}
    description = (
        f"Every `{BACKBONE}_*.{TAG}` model was pretrained by `make bench-fmnist` "
        f"(train/benchmark_fmnist.py) with the same budget, {benchmark['budget']}; this checkpoint is "
        f"seed {run['seed']} of the row {FRAMEWORK_TITLES[cell.framework]} / {cell.row}. "
        "Mean ± sample standard deviation over seeds; Δ is paired by seed against the framework's mlp "
        "projector, with its 95 % Student-t interval. Frozen features of the 10,000 test images: fast "
        "linear probe (L2 weight chosen on held-out training images) and weighted k-NN (k = 200)."
    )
    # Said on the card itself, not left to the table: a checkpoint below the reference is one a user of
    # pretrained=True would be better off without.
    margin = run["linear_top1"] - reference["linear_top1"]
    description += (
        f" This checkpoint's linear top-1 is {abs(margin):.2f} points {'above' if margin >= 0 else 'below'} "
        f"the fair random-init reference of seed {reference['seed']} (γ = 1, BatchNorm statistics "
        "recalibrated on training images)"
    )
    if margin >= 0:
        description += "."
    else:
        description += (
            ": on this probe an untrained encoder's features score higher than this checkpoint's. ibzoo's "
            "README (Benchmark on Fashion-MNIST) says what was checked."
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


def margins(results: dict, cell: Cell) -> list[float]:
    """The cell's linear top-1 minus the fair random-init reference's, per seed both have."""
    reference = {r["seed"]: r["linear_top1"] for r in results["runs"] if r["projector"] == FAIR_REFERENCE.row}
    runs = [r for r in results["runs"] if (r["framework"], r["projector"]) == (cell.framework, cell.row)]
    return [r["linear_top1"] - reference[r["seed"]] for r in runs if r["seed"] in reference]


def earns_its_place(results: dict, cell: Cell) -> bool:
    """Whether the cell's mean linear top-1 is above the fair random-init reference's (paired by seed):
    the rule a zoo cell must keep for its ``.fmnist`` weights to be published."""
    cell_margins = margins(results, cell)
    return bool(cell_margins) and statistics.mean(cell_margins) > 0


def margins_over_reference(results: dict) -> str:
    """A Markdown list: each trained cell's linear top-1 minus the fair random-init reference's, paired by
    seed (mean ± std over the seeds both have), and for a zoo cell below it that it gets no Hub folder."""
    lines = []
    for cell in CELLS:
        cell_margins = margins(results, cell)
        if cell_margins:
            title = f"{FRAMEWORK_TITLES[cell.framework]} {ROW_TITLES.get(cell.row, cell.row)}"
            line = f"- {title}: {summarize(cell_margins).format(signed=True)} points"
            if cell.withheld:
                line += " (withheld from the zoo: no such name, no `.fmnist` Hub folder)"
            elif cell.published and not earns_its_place(results, cell):
                line += " (below the fair reference: no `.fmnist` Hub folder is written)"
            lines.append(line)
    header = "Linear top-1 above the fair random-init reference (γ = 1, BN recalibrated), paired by seed:\n\n"
    return header + "\n".join(lines) + "\n" if lines else ""


# The settings that are a dict of framework -> value: each framework's own part of the budget.
PER_FRAMEWORK = ("epochs", "mi_weights", "reference_warmup_steps")


def budget_changes(saved: dict, settings: dict) -> dict[str, dict[str, tuple]] | None:
    """How each framework's own settings (:data:`PER_FRAMEWORK`) differ between a results.json's
    ``saved`` settings and ``settings``: ``{framework: {key: (old, new)}}`` (a framework added since has
    every key), or None when a setting all frameworks share differs: then no run of the record compares
    with a new one. A per-framework key that an older results.json lacks counts as empty."""
    shared = (saved.keys() | settings.keys()) - set(PER_FRAMEWORK)
    if any(saved.get(key) != settings.get(key) for key in shared):
        return None
    changes: dict[str, dict[str, tuple]] = {}
    for key in PER_FRAMEWORK:
        old, new = saved.get(key, {}), settings.get(key, {})
        if not isinstance(old, dict) or not isinstance(new, dict):
            return None
        for framework in old.keys() | new.keys():
            if old.get(framework) != new.get(framework):
                changes.setdefault(framework, {})[key] = (old.get(framework), new.get(framework))
    return changes


def is_stale(run: dict, changes: dict[str, dict[str, tuple]]) -> bool:
    """Whether a recorded run was trained under a budget its framework no longer has (another MI weight
    only concerns the framework's mlp_mi runs)."""
    changed = changes.get(run["framework"], {})
    return any(key != "mi_weights" or run["projector"] == "mlp_mi" for key in changed)


def stale_runs_error(
    results_file: Path, stale: list[dict], changes: dict[str, dict[str, tuple]]
) -> ValueError:
    """The refusal of a record holding ``stale`` runs: what changed, per framework, and what to do."""
    frameworks = sorted({run["framework"] for run in stale})
    what = "; ".join(
        f"{framework}: "
        + ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes[framework].items())
        for framework in frameworks
    )
    keys = sorted({f"{run['framework']}/{run['projector']}" for run in stale})
    return refusal(results_file, keys, f"trained under another budget ({what})")


def refusal(results_file: Path, keys: list[str], reason: str) -> ValueError:
    """The refusal of a record holding runs of the cells ``keys`` that no longer compare, for ``reason``,
    with what to do about them."""
    known = {cell.key for cell in CELLS}
    advice = []
    if rerun := [key for key in keys if key in known]:
        advice.append(
            f"train them again with --cells {','.join(rerun)} --rerun (without --seeds: every seed)"
        )
    if gone := [key for key in keys if key not in known]:
        advice.append(f"remove the runs of {', '.join(gone)}, which the benchmark no longer has, from it")
    what_to_do = "; ".join(advice)
    return ValueError(f"{results_file} holds runs {reason}: {what_to_do}; or use another --output-dir.")


RECIPE = ("projector", "objective")
"""The sections of a run's ``run_config.json`` that are its cell's recipe, kept with each run's record."""


def cell_recipe(cell: Cell, seed: int, data_dir: Path, settings: dict, args: argparse.Namespace) -> dict:
    """What ``cell`` trains now: the :data:`RECIPE` sections of the ``run_config.json`` train/pretrain.py
    writes for it. Recorded with each run (its ``recipe``), so that a record copied without its run folders,
    as ``train/results/fmnist.json`` is, can still be checked against an upgrade (:func:`changed_recipes`)."""
    flags = pretrain_args(cell, seed, data_dir, settings, args, None, run_dir(args.output_dir, cell, seed))
    identity = parse_pretrain_args(flags).identity()
    return {section: identity[section] for section in RECIPE}


def changed_recipes(results: dict, data_dir: Path, settings: dict, args: argparse.Namespace) -> dict:
    """Recorded runs that trained another projector or objective than their cell's recipe gives now (an
    ibzoo upgrade changed it, as Barlow Twins' top-k init): ``{cell key: [what changed]}``. A run's recipe
    is its record's, else (a record written before runs kept theirs) its folder's ``run_config.json``; a run
    with neither cannot be checked and is kept."""
    cells = {(cell.framework, cell.row): cell for cell in CELLS}
    changed: dict[str, list[str]] = {}
    for run in results["runs"]:
        cell = cells.get((run["framework"], run["projector"]))
        if cell is None:  # a reference: nothing was trained
            continue
        recipe = cell_recipe(cell, run["seed"], data_dir, settings, args)
        if "recipe" in run:
            differences = config_differences(run["recipe"], recipe, upgraded_run_config)
        else:
            folder = run_dir(args.output_dir, cell, run["seed"])
            differences = run_differences(folder, recipe, upgraded_run_config)
        if differences:
            changed.setdefault(cell.key, differences)
    return changed


def benchmark_settings(budget: str) -> dict:
    """Everything that makes two runs of the table comparable, as results.json records it (a resumed
    results.json must hold the same)."""
    settings = dict(BUDGETS[budget], budget=budget, backbone=BACKBONE)
    settings.update(topk_latents=TOPK["latents"], topk_k=TOPK["k"], mi_weights=MI_WEIGHTS)
    settings.update(probe="fast, L2 chosen on a held-out tenth of the training images", knn_k=200)
    return settings


def _enumerate(items: Iterable[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    *head, last = items
    return f"{', '.join(head)} and {last}" if head else last


def describe_budget(settings: dict) -> str:
    """The settings as one phrase for the model cards."""
    images = "all" if settings["subset"] is None else f"the first {settings['subset']}"
    mi_weights = _enumerate(
        f"{weight:g} ({FRAMEWORK_TITLES[framework]})" for framework, weight in settings["mi_weights"].items()
    )
    epochs = _enumerate(
        f"{count} epoch{'s' if count != 1 else ''} ({FRAMEWORK_TITLES[framework]})"
        for framework, count in settings["epochs"].items()
    )
    slopes = "".join(
        f"; {FRAMEWORK_TITLES[framework]}'s lr rising as its reference's {steps}-step warm-up"
        for framework, steps in settings["reference_warmup_steps"].items()
    )
    return (
        f"{images} training images at {settings['image_size']} px, {epochs} at global batch "
        f"{settings['batch_size']} (warm-up {settings['warmup_fraction']:.0%} of them{slopes}), top-k "
        f"projectors with {settings['topk_latents']} latents and k = {settings['topk_k']}, mlp_mi with "
        f"λ = {mi_weights}"
    )


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    started = time.perf_counter()
    output_dir = args.output_dir
    results_file = output_dir / "results.json"
    settings = benchmark_settings(args.budget)
    if results_file.exists() and not args.resume:
        raise ValueError(
            f"{results_file} exists; pass --resume to keep its runs or pick another --output-dir."
        )
    results = load_results(results_file) if results_file.exists() else {"settings": settings, "runs": []}
    changes = budget_changes(results["settings"], settings)
    if changes is None:
        was = results["settings"]
        differing = sorted(key for key in was.keys() | settings.keys() if was.get(key) != settings.get(key))
        raise ValueError(
            f"{output_dir} holds a benchmark with other settings ("
            + "; ".join(f"{key} {was.get(key)} -> {settings.get(key)}" for key in differing)
            + "); pass the --budget it was run with, or use another --output-dir."
        )
    # Per run too: runs of one table may come from several machines, whose numerics differ.
    machine = f"{describe_device(torch.device('cpu'))}, torch {torch.__version__}"
    results["machine"] = machine
    forgotten = []
    if args.rerun:
        forgotten = [(cell, seed) for cell in args.selected for seed in seeds_to_run(cell, settings, args)]
        keys = {(cell.framework, cell.row, seed) for cell, seed in forgotten}
        results["runs"] = [
            r for r in results["runs"] if (r["framework"], r["projector"], r["seed"]) not in keys
        ]
    # A framework's budget may change (its learning curve chose another) while none of its runs is in
    # the record: a Δ is within a framework, so the other frameworks' runs still compare.
    stale = [run for run in results["runs"] if is_stale(run, changes)]
    if stale:
        raise stale_runs_error(results_file, stale, changes)
    results["settings"] = settings  # a framework added or re-budgeted since: its runs join the table
    if forgotten:
        for cell, seed in forgotten:
            shutil.rmtree(run_dir(output_dir, cell, seed), ignore_errors=True)
        save_results(results_file, results)

    data_dir, train_data, test_data = benchmark_data(output_dir, settings, args)
    if changed := changed_recipes(results, data_dir, settings, args):
        what = "; ".join(f"{key}: {', '.join(differences)}" for key, differences in changed.items())
        raise refusal(results_file, list(changed), f"whose recipe has changed since they trained ({what})")

    # Seed by seed, references first: an interrupted benchmark has whole seeds of every cell.
    for seed in range(settings["main_seeds"]):
        for cell in args.selected:
            if seed not in seeds_to_run(cell, settings, args):
                continue
            if find_run(results, cell.framework, cell.row, seed):
                logger.info("%s seed %d: finished earlier, skipped", cell.key, seed)
                continue
            began = time.perf_counter()
            run = dict(framework=cell.framework, projector=cell.row, seed=seed)
            if cell.framework == REFERENCE:
                backbone = reference_backbone(cell, seed, settings["image_size"], train_data)
            else:
                folder = pretrain(cell, seed, data_dir, settings, args)
                backbone = ibzoo.create_model(f"local-dir:{folder / 'model'}", pretrained=True)
                run.update(log_summary(folder / "log.jsonl", settings["batch_size"]))
                run["recipe"] = cell_recipe(cell, seed, data_dir, settings, args)
            trained = time.perf_counter()
            run.update(evaluate_backbone(backbone, train_data, test_data, protocol="fast", seed=seed))
            eval_seconds = time.perf_counter() - trained
            run.update(train_seconds=trained - began, eval_seconds=eval_seconds, machine=machine)
            record_run(results, run)
            save_results(results_file, results)
            logger.info("%s seed %d: %s", cell.key, seed, json.dumps(run))

    table = render_markdown(
        results, row_titles=ROW_TITLES, row_order=[(cell.framework, cell.row) for cell in CELLS]
    )
    (output_dir / "results.md").write_text(table + "\n" + margins_over_reference(results))
    results["wall_seconds"] = results.get("wall_seconds", 0.0) + time.perf_counter() - started
    save_results(results_file, results)
    unfinished = [
        f"{cell.key} seed {seed}"
        for cell in (*REFERENCES, *CELLS)
        for seed in cell.seeds(settings)
        if not find_run(results, cell.framework, cell.row, seed)
    ]
    if unfinished:
        logger.info(
            "Not yet run: %s. The Hub folders are written once every run is done.", ", ".join(unfinished)
        )
    else:
        # Published last, so that every card holds the finished table: seed 0's model of each zoo cell.
        benchmark = dict(budget=describe_budget(settings), table=table)
        missing = [
            cell.key
            for cell in CELLS
            if cell.published
            and earns_its_place(results, cell)
            and not (run_dir(output_dir, cell, 0) / "model").is_dir()
        ]
        if missing:  # results.json copied from another machine: the records came, the weights did not
            raise SystemExit(
                f"Every run is recorded, but seed 0's model folder of {', '.join(missing)} is not under "
                f"{output_dir / 'runs'}: the Hub folders need those weights. Copy the run folders too, or "
                f"run seed 0 of those cells again (--cells {','.join(missing)} --seeds 0 --rerun)."
            )
        for cell in CELLS:
            # A zoo cell whose mean is not above the fair random-init reference publishes nothing: weights
            # worse than an untrained network's are no model to hand out (results.md says so).
            if cell.published and earns_its_place(results, cell):
                model_dir = run_dir(output_dir, cell, 0) / "model"
                publish(
                    model_dir,
                    output_dir / "hub",
                    cell,
                    find_run(results, cell.framework, cell.row, 0),
                    find_run(results, FAIR_REFERENCE.framework, FAIR_REFERENCE.row, 0),
                    benchmark,
                )
    print(table)  # the script's product, on stdout
    return results_file


if __name__ == "__main__":
    main()

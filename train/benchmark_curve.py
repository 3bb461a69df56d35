"""Learning curves on Fashion-MNIST: one cell of train/benchmark_fmnist.py trained long, its frozen
features scored on the way, to choose each framework's budget from a measurement.

    python train/benchmark_curve.py --output-dir bench-fmnist --cell barlow/mlp --epochs 24
    python train/benchmark_curve.py --output-dir bench-fmnist --cell simclr/mlp --epochs 16

A curve is one pretraining run with the benchmark's settings (data, batch, warm-up fraction, bf16) and a
cosine schedule over ``--epochs``. It is trained in pieces up to each point of :data:`POINTS` (with
train/pretrain.py's ``--max-epochs-this-run``, which continues exactly from the run's checkpoint), and
after each piece the backbone of the newest checkpoint is scored as the benchmark scores a finished run
(weighted k-NN and the fast linear probe on the 10,000 test images). A point at epoch e of an E-epoch
schedule has not annealed its learning rate, so it understates what an e-epoch run reaches: a budget
read off the curve is a conservative one.

Output, beside the benchmark's: ``curves/CELL_Eep[_warmupN]/seedS/`` (the run; see curve_key),
``curves.json`` (every point of every curve, with its machine; rewritten after each point, so running the
same command again continues where it stopped) and ``curves.png`` (linear and k-NN top-1 against steps,
each curve, and the fair random-init reference of ``results.json`` as a horizontal line when it has one).
"""

import argparse
import fcntl
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

import ibzoo
from benchmark_fmnist import (
    BUDGETS,
    CELLS,
    FAIR_REFERENCE,
    TAG,
    Cell,
    benchmark_data,
    model_name,
    pretrain,
)
from benchmark_table import load_results, save_results
from benchmarking import describe_device
from ibzoo.evaluation import evaluate_backbone
from ibzoo.frameworks import FRAMEWORK_NAMES, FRAMEWORK_TITLES
from ibzoo.models.datasets import DATASETS
from ibzoo.models.zoo import backbone_source
from ibzoo.names import PROJECTORS
from ibzoo.plotting import PALETTE, Series, line_chart, side_by_side
from ibzoo.training.checkpoint import CHECKPOINTS_DIR, TrainerState, backbone_weights, latest_checkpoint
from ibzoo.training.state_files import load_state_files
from ibzoo.weights import check_state_dict

logger = logging.getLogger("benchmark_curve")

POINTS = (1, 2, 4, 8, 12, 16, 20, 24, 32)
"""Epochs at which a curve is scored (those up to its --epochs, and its last epoch)."""
METRICS = {"linear_top1": "linear top-1 (%)", "knn_top1": "k-NN top-1 (%)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="the benchmark's output folder")
    # The benchmark's cells, and every other framework's zoo cells: a curve is how a framework that has
    # no budget yet gets one.
    cells = {cell.key: cell for cell in CELLS}
    cells |= {
        f"{f}/{p}": Cell(f, p, p) for f in FRAMEWORK_NAMES for p in PROJECTORS if f"{f}/{p}" not in cells
    }
    parser.add_argument(
        "--cell", required=True, choices=sorted(cells), help="the cell to train, FRAMEWORK/ROW"
    )
    parser.add_argument("--epochs", type=int, default=16, help="length of the schedule (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full", help="the benchmark's settings")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers of the pretraining")
    parser.add_argument(
        "--idx-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX files"
    )
    parser.add_argument("--fallback-dataset", default=DATASETS[TAG].hf_dataset)
    parser.add_argument("--cpu", action="store_true", help="pretrain on the CPU even with an accelerator")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.seed < 0:
        parser.error(f"--epochs {args.epochs} and --seed {args.seed}: need epochs >= 1 and seed >= 0.")
    args.cell = cells[args.cell]
    return args


def curve_points(epochs: int) -> list[int]:
    """The epochs a curve of ``epochs`` is scored at: the :data:`POINTS` below it, and its end."""
    return sorted({point for point in POINTS if point < epochs} | {epochs})


def curve_key(cell: Cell, seed: int, epochs: int, settings: dict) -> dict:
    """What tells a curve from the others in curves.json: the cell, seed, schedule length and warm-up.

    ``reference_warmup_steps`` is the framework's reference warm-up slope (benchmark_fmnist.warmup_args),
    None for the warm-up over a fraction of the epochs: a framework's budget may move from one to the
    other, and the curves of both stay in the record.
    """
    warmup = settings["reference_warmup_steps"].get(cell.framework)
    return dict(
        framework=cell.framework, projector=cell.row, seed=seed, epochs=epochs, reference_warmup_steps=warmup
    )


def curve_folder(key: dict) -> str:
    """The run folder's name under ``curves/``: one per curve key but the seed (a subfolder)."""
    warmup = "" if key["reference_warmup_steps"] is None else f"_warmup{key['reference_warmup_steps']}"
    return f"{key['framework']}_{key['projector']}_{key['epochs']}ep{warmup}"


def newest_state(run: Path) -> tuple[Path | None, TrainerState]:
    """The run's newest checkpoint and the trainer state saved in it (epoch and step 0 before the first)."""
    checkpoint = latest_checkpoint(run / CHECKPOINTS_DIR)
    state = TrainerState()
    if checkpoint is not None:
        saved = load_state_files(checkpoint, "trainer")
        state.load_state_dict({key: saved[key] for key in ("epoch", "global_step")})
    return checkpoint, state


def checkpoint_backbone(checkpoint: Path, name: str, image_size: int) -> torch.nn.Module:
    """The backbone saved in ``checkpoint``, with the tag's preprocessing."""
    name, backbone_args = backbone_source(name)  # a withheld pair's too
    overlay = dict(input_size=(3, image_size, image_size))
    backbone = ibzoo.create_model(name, pretrained_cfg_overlay=overlay, **backbone_args)
    weights = backbone_weights(checkpoint)
    check_state_dict(weights, backbone.state_dict(), str(checkpoint / "model.safetensors"))
    backbone.load_state_dict(weights)
    return backbone


def read_curves(curves_file: Path) -> dict:
    """``curves_file``, with the warm-up in each curve's key: an older ibzoo kept it once in the settings
    (``reference_warmup_steps``, or nothing before a framework had one)."""
    curves = json.loads(curves_file.read_text())
    warmups = curves["settings"].pop("reference_warmup_steps", {})
    for curve in curves["curves"]:
        curve.setdefault("reference_warmup_steps", warmups.get(curve["framework"]))
    return curves


def record_point(curves_file: Path, settings: dict, key: dict, point: dict | None = None) -> dict:
    """The curve ``key`` names in ``curves_file``, with ``point`` added when given (and written).

    Curves of several cells may run at once into one output folder: the file is read, changed and
    written under an exclusive lock, so that no invocation overwrites another's points.
    """
    with open(curves_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        curves = read_curves(curves_file) if curves_file.exists() else {"settings": settings, "curves": []}
        if curves["settings"] != settings:
            raise ValueError(
                f"{curves_file} holds curves with settings {curves['settings']}, not {settings}; pass the "
                "same --budget, or another --output-dir."
            )
        curve = next((c for c in curves["curves"] if {k: c[k] for k in key} == key), None)
        if curve is None:
            curve = dict(key, points=[])
            curves["curves"].append(curve)
        if point is not None:
            curve["points"] = sorted([*curve["points"], point], key=lambda p: p["epoch"])
            save_results(curves_file, curves)
        return curve


def fair_reference(output_dir: Path) -> dict[str, float]:
    """Mean linear and k-NN top-1 of the fair random-init reference over its seeds in ``results.json``
    (empty when it has none)."""
    results_file = output_dir / "results.json"
    runs = load_results(results_file)["runs"] if results_file.is_file() else []
    key = (FAIR_REFERENCE.framework, FAIR_REFERENCE.row)
    scores = [r for r in runs if (r["framework"], r["projector"]) == key]
    return {metric: statistics.mean(r[metric] for r in scores) for metric in METRICS} if scores else {}


# Grey: no curve's colour (one per curve, from PALETTE) can be mistaken for the reference's.
REFERENCE_COLOR = (110, 110, 110)


def draw_curves(curves: list[dict], reference: dict[str, float]) -> Image.Image:
    """Linear and k-NN top-1 against steps, one line per curve, the reference as a flat line."""
    panels = []
    for metric, title in METRICS.items():
        series = []
        for index, curve in enumerate(curves):
            points = curve["points"]
            warmup = curve["reference_warmup_steps"]
            slope = "" if warmup is None else f", {warmup}-step warm-up"
            label = f"{FRAMEWORK_TITLES[curve['framework']]} ({curve['epochs']} ep{slope})"
            series.append(
                Series(
                    label,
                    [p["step"] for p in points],
                    [p[metric] for p in points],
                    color=PALETTE[index % len(PALETTE)],
                )
            )
        if metric in reference:
            steps = [p["step"] for curve in curves for p in curve["points"]]
            line = [reference[metric]] * 2
            series.append(Series("random init", [0, max(steps)], line, color=REFERENCE_COLOR))
        panels.append(line_chart(series, title=title, x_label="step", y_label="top-1 (%)"))
    return side_by_side(panels)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cell, output_dir = args.cell, args.output_dir
    # The benchmark's settings but its per-cell epochs and seed counts: a curve sets its own.
    settings = {k: v for k, v in BUDGETS[args.budget].items() if k not in ("epochs", "main_seeds", "seeds")}
    name = f"{model_name(cell)}.{TAG}"
    key = curve_key(cell, args.seed, args.epochs, settings)
    run = output_dir / "curves" / curve_folder(key) / f"seed{args.seed}"
    data_dir, train_data, test_data = benchmark_data(output_dir, settings, args)
    curves_file = output_dir / "curves.json"
    # The warm-up is a framework's own (in each curve's key), the rest is shared by every curve of the file.
    shared = {k: v for k, v in settings.items() if k != "reference_warmup_steps"}
    machine = f"{describe_device(torch.device('cpu'))}, torch {torch.__version__}"

    scored_epochs = [p["epoch"] for p in record_point(curves_file, shared, key)["points"]]
    if set(curve_points(args.epochs)) - set(scored_epochs) and scored_epochs and newest_state(run)[0] is None:
        # Its points came from a run that is not here: a new run would mix two runs in one curve.
        legacy = output_dir / "curves" / f"{cell.framework}_{cell.row}" / f"seed{args.seed}"
        raise ValueError(
            f"{curves_file} holds epochs {scored_epochs} of this curve, but {run} has no checkpoint to "
            f"continue from. If an older ibzoo trained it, its folder is {legacy}: move it to {run}; or "
            "start the curve again in another --output-dir."
        )
    for point in curve_points(args.epochs):
        if point in scored_epochs:
            continue
        began = time.perf_counter()
        done = newest_state(run)[1].epoch
        if done > point:  # an interrupted earlier invocation trained past it: that checkpoint is gone
            logger.warning(
                "%s: epoch %d was not scored before the run went on to %d; skipped", run, point, done
            )
            continue
        if done < point:
            pretrain(
                cell,
                args.seed,
                data_dir,
                settings,
                args,
                epochs=args.epochs,
                folder=run,
                extra_args=("--max-epochs-this-run", str(point - done)),
            )
        checkpoint, state = newest_state(run)
        backbone, step = checkpoint_backbone(checkpoint, name, settings["image_size"]), state.global_step
        trained = time.perf_counter()
        scores = evaluate_backbone(backbone, train_data, test_data, protocol="fast", seed=args.seed)
        scored = dict(
            epoch=point,
            step=step,
            **{metric: scores[metric] for metric in METRICS},
            linear_l2=scores["linear_l2"],
            train_seconds=trained - began,
            eval_seconds=time.perf_counter() - trained,
            machine=machine,
        )
        record_point(curves_file, shared, key, scored)
        logger.info("%s seed %d, epoch %d of %d: %s", cell.key, args.seed, point, args.epochs, scored)

    draw_curves(read_curves(curves_file)["curves"], fair_reference(output_dir)).save(
        output_dir / "curves.png"
    )
    return curves_file


if __name__ == "__main__":
    main()

"""ibzoo's speed benchmark: each figure beside a baseline measured in the same run, as a ratio.

    python train/benchmark_speed.py --output bench-speed.json           # all sections, ~15 min on 2 CPU cores
    python train/benchmark_speed.py --only c,d --device cuda             # some sections, on a GPU

(a) steps/s of the training step train/pretrain.py runs (ibzoo.training's Pretrainer.train_step on an
    Accelerate-prepared PretrainingModule) vs a bare PyTorch SimCLR loop over the same backbone, projector,
    NT-Xent loss, LARS optimiser and schedule, batch, precision and pre-generated on-device views; the
    ibzoo step also trains the online linear classifier that pretrain.py adds on labelled data. Both leave
    out data loading and the logging intervals (every log_every steps).
(b) images/s of the two-view SimCLR DataLoader (2 workers; per-sample PIL recipe of ibzoo.augment as
    build_pretrain_loader builds it, and ibzoo.batched_augment in the workers) vs the images/s that the
    step of (a) consumes. Loader and step are timed apart, as if each had its own cores.
(c) forward + backward time and peak memory of TopKSparseProjector vs the dense-mask formulation at the
    paper's setting (512-d input, 100000 latents, k = 1000, batch 256).
(d) the matrix MI regulariser (alpha = 2, forward + backward) vs the direct n x n formula.
(e) ibzoo.create_model(..., pretrained=True) from a local folder vs timm.create_model('local-dir:...').
(f) the whole path a user runs: images/s of the real ``train/pretrain.py`` command (its loader with the
    default workers, the step, logging; read from its log.jsonl, the first interval left out as warm-up),
    per-sample PIL views and --augment-on-device, vs the compute-only Pretrainer.train_step on ready-made
    views. Model, batch and precision are the Fashion-MNIST benchmark's (resnet18_simclr_mlp.fmnist at
    32 px, batch 256 on a CPU; pass --mixed-precision bf16 for its precision). Data: Fashion-MNIST from
    apt-get install dataset-fashion-mnist, else scikit-learn's digits. Target: 0.9 of compute-only.
(g) the training step of a momentum framework (BYOL, MoCo v3: online network, predictor, target forward
    without autograd, EMA update) vs SimCLR's step on the same backbone, batch and precision, each as
    Pretrainer.train_step runs it. Target: at most 1.4x SimCLR's time.

Candidates run in interleaved rounds after warm-up; the table gives "median (best)" per candidate, and as
ratio the median over rounds of candidate / baseline (the ratio of the best rounds). Memory is counted as
benchmarking.py describes. On CUDA the training precision is bf16 autocast with channels_last, as
train/pretrain.py sets it up.
"""

import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import timm
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

import ibzoo
from benchmarking import (
    Comparison,
    DataLoaderRounds,
    Timing,
    dense_topk_projector,
    describe_device,
    direct_matrix_mutual_information,
    format_table,
    peak_memory_bytes,
    time_interleaved,
)
from ibzoo.augment import build_decode_transform, with_views
from ibzoo.batched_augment import AugmentInCollate, build_batched_pretrain_augment
from ibzoo.data import DataConfig, build_digits_dataset, build_fashion_mnist_dataset, load_image_dataset
from ibzoo.frameworks import NTXentLoss
from ibzoo.hub import save_pretrained
from ibzoo.objectives import matrix_mutual_information
from ibzoo.optim import build_optimizer, warmup_cosine_schedule
from ibzoo.projectors import TopKSparseProjector, build_projector
from ibzoo.training import (
    PretrainConfig,
    Pretrainer,
    PretrainingModule,
    RunLog,
    TrainerState,
    build_pretrain_loader,
    build_pretrain_optimizer,
)
from ibzoo.training.loader import default_num_workers

logger = logging.getLogger("benchmark_speed")

MODEL = "resnet18_cifar_simclr_mlp"  # resnet18_cifar + SimCLR MLP projector + NT-Xent
WHOLE_PATH_MODEL = "resnet18_simclr_mlp.fmnist"  # (f): the Fashion-MNIST benchmark's model and recipe
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10
MIB = 2**20
ACTIVATIONS_NOTE = (
    "activations and temporaries (gradients included until accumulated into .grad); "
    "parameters, the input and the existing .grad buffers excluded"
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes and repetitions; the CPU defaults keep a full run within minutes on 2 cores."""

    batch: int  # (a), (b): images per step / loader batch
    step_rounds: int
    steps_per_round: int
    loader_batches: int  # (b): batches per timed round
    loader_rounds: int
    image_size: int | None = None  # (a), (b): side of the views; None: the model's (32)
    topk: tuple[int, int, int, int] = (512, 100_000, 1_000, 256)  # (c): in, latents, k, batch
    topk_rounds: int = 3
    mi_rows: tuple[int, ...] = (512, 1024)  # (d)
    mi_widths: tuple[int, int] = (512, 256)
    mi_rounds: int = 7
    mi_calls_per_round: int = 2
    load_rounds: int = 10  # (e)
    whole_batch: int = 256  # (f): global batch of the pretraining command
    whole_log_every: int = 10  # (f): steps per logged interval; the first interval is warm-up
    whole_intervals: int = 3  # (f): timed intervals per round
    whole_rounds: int = 3

    @classmethod
    def for_run(cls, device: torch.device, quick: bool, batch: int | None) -> "Sizes":
        if quick:
            return cls(
                batch=batch or 4,
                image_size=16,
                step_rounds=1,
                steps_per_round=1,
                loader_batches=2,
                loader_rounds=1,
                topk=(32, 512, 8, 16),
                topk_rounds=1,
                mi_rows=(32, 64),
                mi_widths=(16, 8),
                mi_rounds=1,
                mi_calls_per_round=1,
                load_rounds=1,
                whole_batch=8,
                whole_log_every=2,
                whole_intervals=1,
                whole_rounds=1,
            )
        if device.type == "cuda":
            return cls(batch or 256, 7, 20, 20, 5, topk_rounds=10, mi_calls_per_round=20)
        return cls(batch or 32, 5, 1, 20, 3)


@dataclasses.dataclass
class Run:
    """What the sections share: device, sizes, the resolved pretraining config and a scratch folder."""

    device: torch.device
    sizes: Sizes
    config: PretrainConfig
    scratch: Path
    _ibzoo_step: Callable[[], object] | None = None

    def autocast(self) -> torch.autocast:
        bf16 = self.config.mixed_precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def random_views(self, batch_size: int | None = None) -> list[torch.Tensor]:
        """Two views of ``batch_size`` (default: sizes.batch) random images on the device, channels_last on
        CUDA as in pretraining."""
        shape = (batch_size or self.sizes.batch, 3, self.config.image_size, self.config.image_size)
        layout = self.memory_format()
        return [torch.randn(shape, device=self.device).contiguous(memory_format=layout) for _ in range(2)]

    def ibzoo_step(self) -> Callable[[], object]:
        """One call = one Pretrainer.train_step, set up as train/pretrain.py sets it up (built once)."""
        if self._ibzoo_step is None:
            self._ibzoo_step = self.pretrainer_step(MODEL, self.sizes.batch, self.config.log_every)
        return self._ibzoo_step

    def pretrainer_step(self, model: str, batch_size: int, log_every: int) -> Callable[[], object]:
        """One call = one Pretrainer.train_step of ``model`` (its own recipe) on ready-made views of
        ``batch_size`` images, with the online classifier and ``log_every``
        (as train/pretrain.py sets it up)."""
        config = self.config
        accelerator = Accelerator(
            cpu=config.cpu, mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False
        )
        torch.manual_seed(config.seed)
        module = PretrainingModule(ibzoo.create_pretraining_model(model), NUM_CLASSES)
        module = module.to(memory_format=self.memory_format())
        optimizer = build_pretrain_optimizer(
            module, config.optimizer, batch_size, config.online_classifier_lr
        )
        scheduler = warmup_cosine_schedule(optimizer, 10, 10**6, config.optimizer.min_lr_ratio)
        module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
        log = RunLog(accelerator, self.scratch / f"log-{model}-{batch_size}.jsonl", resumed_step=0)
        loop = dict(
            steps_per_epoch=10**6, global_batch_size=batch_size, log_every=log_every, total_steps=10**6
        )
        trainer = Pretrainer(accelerator, module, optimizer, scheduler, TrainerState(), log, **loop)
        labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=self.device)
        batch = {"views": self.random_views(batch_size), "label": labels}
        return lambda: trainer.train_step(batch)

    def bare_step(self) -> Callable[[], None]:
        """One call = one step of a plain PyTorch loop over the same model, loss, optimiser and schedule."""
        config = self.config
        torch.manual_seed(config.seed)
        backbone = timm.create_model(ibzoo.model_info(MODEL).architecture, num_classes=0)
        model = nn.Sequential(backbone, build_projector(backbone.num_features, config.projector))
        model = model.to(self.device, memory_format=self.memory_format())
        loss_fn = NTXentLoss(config.objective.temperature)
        optimizer = build_optimizer(model, config.optimizer, config.batch_size)
        scheduler = warmup_cosine_schedule(optimizer, 10, 10**6, config.optimizer.min_lr_ratio)
        views = self.random_views()

        def step() -> None:
            with self.autocast():
                loss = loss_fn([model(view) for view in views])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

        return step


def training_step(run: Run) -> list[Comparison]:
    names = ("Pretrainer.train_step", "bare PyTorch loop")
    candidates = dict(zip(names, (run.ibzoo_step(), run.bare_step()), strict=True))
    timings = time_interleaved(
        candidates, device=run.device, rounds=run.sizes.step_rounds, number=run.sizes.steps_per_round
    )
    rates = dict(items_per_call=(1, 1), rate_unit="steps/s", details={"batch": run.sizes.batch})
    return [Comparison.of_times("a", "training steps/s", names, timings, target=0.95, **rates)]


def data_pipeline(run: Run) -> list[Comparison]:
    config, batch = run.config, run.sizes.batch
    if FASHION_MNIST_DIR.is_dir():  # Debian's dataset-fashion-mnist; a subset large enough for the rounds
        subset = batch * (run.sizes.loader_batches + 2)
        path = build_fashion_mnist_dataset(run.scratch / "fashion-mnist", FASHION_MNIST_DIR, subset=subset)
    else:
        path = build_digits_dataset(run.scratch / "digits")
    data = load_image_dataset(DataConfig(dataset=str(path)), "train")
    batches = min(run.sizes.loader_batches, len(data.dataset) // batch - 1)
    if batches < 1:
        raise ValueError(f"{path.name} holds {len(data.dataset)} images, too few for --batch-size {batch}.")
    pin_memory = run.device.type == "cuda"
    preprocessing = dict(image_size=config.image_size, mean=config.mean, std=config.std)

    def per_sample_loader() -> DataLoader:  # the loader train/pretrain.py uses
        sizes = dict(global_batch_size=batch, per_process_batch_size=batch, num_workers=2)
        return build_pretrain_loader(
            data, framework="simclr", seed=config.seed, pin_memory=pin_memory, **preprocessing, **sizes
        )

    def batched_loader() -> DataLoader:
        rows = with_views(data, build_decode_transform(config.image_size))
        collate = AugmentInCollate(build_batched_pretrain_augment("simclr", **preprocessing))
        return DataLoader(
            rows,
            batch,
            shuffle=True,
            drop_last=True,
            num_workers=2,
            collate_fn=collate,
            pin_memory=pin_memory,
        )

    loaders = {
        "loader, per-sample PIL": DataLoaderRounds(per_sample_loader, batches),
        "loader, batched in workers": DataLoaderRounds(batched_loader, batches),
    }
    step_name = "training step (a)"
    timings = time_interleaved(
        {name: loader.take for name, loader in loaders.items()} | {step_name: run.ibzoo_step()},
        device=run.device,
        rounds=run.sizes.loader_rounds,
        setup={name: loader.start for name, loader in loaders.items()},
        teardown={name: loader.stop for name, loader in loaders.items()},
    )
    notes = "2 workers; loader and step timed apart (on a machine where they share cores, both slow down)"
    rates = dict(items_per_call=(batch * batches, batch), rate_unit="images/s", target=1.5, notes=notes)
    return [
        Comparison.of_times(
            "b", "two-view images/s", (name, step_name), timings, details={"dataset": path.name}, **rates
        )
        for name in loaders
    ]


def topk_projector(run: Run) -> list[Comparison]:
    in_features, latents, k, batch = run.sizes.topk
    torch.manual_seed(0)
    projector = TopKSparseProjector(in_features, latents, k).to(run.device)
    inputs = torch.randn(batch, in_features, device=run.device, requires_grad=True)
    output_grad = torch.randn(batch, in_features, device=run.device)

    def forward_backward(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            with run.autocast():
                output = forward(inputs)
            output.backward(output_grad.to(output.dtype))

        return call

    names = ("TopKSparseProjector", "dense mask")
    candidates = {
        names[0]: forward_backward(projector),
        names[1]: forward_backward(lambda x: dense_topk_projector(projector, x)),
    }
    timings = time_interleaved(candidates, device=run.device, rounds=run.sizes.topk_rounds)
    peaks: dict[str, dict[str, int]] = {"activations": {}, "with_gradients": {}}
    for kind, set_to_none in (("activations", False), ("with_gradients", True)):
        for name, call in candidates.items():
            projector.zero_grad(set_to_none=set_to_none)
            inputs.grad = None if set_to_none else torch.zeros_like(inputs)
            peaks[kind][name] = peak_memory_bytes(call, run.device)
    parameter_bytes = sum(p.numel() * p.element_size() for p in projector.parameters())
    setting = {"in_features": in_features, "latents": latents, "k": k, "batch": batch}
    details = setting | {"parameter_MiB": parameter_bytes / MIB, "peak_bytes": peaks}

    def memory(kind: str, measure: str, target: float | None, notes: str) -> Comparison:
        candidate, baseline = (peaks[kind][name] / MIB for name in names)
        return Comparison(
            "c", measure, "MiB", *names, candidate, candidate, baseline, baseline, target=target, notes=notes
        )

    label = f"B={batch}, M={latents}, k={k}"
    return [
        Comparison.of_times("c", f"fwd+bwd time ({label})", names, timings, target=0.6, details=details),
        memory("activations", "peak memory", 0.4, ACTIVATIONS_NOTE),
        memory(
            "with_gradients", "peak memory + .grad", None, "as above, plus the .grad buffers backward creates"
        ),
    ]


def matrix_mi(run: Run) -> list[Comparison]:
    widths, comparisons = run.sizes.mi_widths, []
    names = ("matrix_mutual_information", "direct n x n")
    for rows in run.sizes.mi_rows:
        torch.manual_seed(0)
        z1, z2 = (torch.randn(rows, width, device=run.device, requires_grad=True) for width in widths)

        def forward_backward(function: Callable[..., torch.Tensor], z1=z1, z2=z2) -> Callable[[], None]:
            return lambda: function(z1, z2).backward()

        candidates = {
            names[0]: forward_backward(lambda a, b: matrix_mutual_information(a, b, alpha=2.0)),
            names[1]: forward_backward(direct_matrix_mutual_information),
        }
        timings = time_interleaved(
            candidates,
            device=run.device,
            rounds=run.sizes.mi_rounds,
            warmup=2,
            number=run.sizes.mi_calls_per_round,
        )
        with torch.no_grad():
            difference = matrix_mutual_information(z1, z2) - direct_matrix_mutual_information(z1, z2)
        details = {"rows": rows, "widths": widths, "value_difference": abs(difference.item())}
        measure = f"MI fwd+bwd (n={rows}, D1={widths[0]}, D2={widths[1]})"
        comparisons.append(Comparison.of_times("d", measure, names, timings, details=details))
    return comparisons


def model_loading(run: Run) -> list[Comparison]:
    folder = run.scratch / "resnet18_cifar-backbone"
    saved = ibzoo.create_pretraining_model(MODEL)
    save_pretrained(saved, folder, model_name=f"{MODEL}.cifar10")
    weights = str(folder / "model.safetensors")
    baseline = "timm local-dir:"
    candidates = {
        "ibzoo local-dir:": lambda: ibzoo.create_model(f"local-dir:{folder}", pretrained=True),
        "ibzoo zoo name + file=": lambda: ibzoo.create_model(
            MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=weights)
        ),
        baseline: lambda: timm.create_model(f"local-dir:{folder}", pretrained=True),
    }
    # Loading is CPU work whatever --device says: timm builds the model and reads the weights on the CPU.
    timings = time_interleaved(candidates, device=torch.device("cpu"), rounds=run.sizes.load_rounds)
    expected = saved.backbone.state_dict()
    same = all(
        all(torch.equal(expected[key], value) for key, value in load().state_dict().items())
        for load in candidates.values()
    )
    details = {"same_weights": same}
    return [
        Comparison.of_times(
            "e", "pretrained load time", (name, baseline), timings, target=1.1, details=details
        )
        for name in candidates
        if name != baseline
    ]


def _whole_path_data(run: Run, images: int) -> Path:
    """A saved data set of at least ``images`` training images: Fashion-MNIST if installed, else digits."""
    if FASHION_MNIST_DIR.is_dir():
        return build_fashion_mnist_dataset(run.scratch / "fmnist-whole", FASHION_MNIST_DIR, subset=images)
    return build_digits_dataset(run.scratch / "digits")


def _pretrain_seconds_per_step(run: Run, data: Path, extra_args: list[str], round_index: int) -> float:
    """Run train/pretrain.py and return its seconds per optimisation step after the first logged interval
    (startup, worker start and the first steps' allocations are warm-up), from its log.jsonl."""
    sizes, config = run.sizes, run.config
    output = run.scratch / f"whole-path-{round_index}-{len(extra_args)}"
    steps = sizes.whole_log_every * (sizes.whole_intervals + 1)
    command = [sys.executable, str(Path(__file__).with_name("pretrain.py")), "--model", WHOLE_PATH_MODEL]
    command += ["--data.dataset", str(data), "--output-dir", str(output), "--epochs", "1000"]
    command += ["--batch-size", str(sizes.whole_batch), "--image-size", str(config.image_size)]
    command += ["--max-steps", str(steps), "--log-every", str(sizes.whole_log_every), "--log-with"]
    command += ["--mixed-precision", config.mixed_precision, "--seed", str(config.seed)]
    command += ["--no-cpu"] if run.device.type == "cuda" else ["--cpu"]
    finished = subprocess.run(command + extra_args, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command + extra_args)} failed:\n{finished.stderr[-3000:]}")
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    rates = [record["train/images_per_s"] for record in records if "train/images_per_s" in record][1:]
    if len(rates) != sizes.whole_intervals:
        raise RuntimeError(
            f"{output}/log.jsonl: expected {sizes.whole_intervals} timed intervals, got {rates}"
        )
    shutil.rmtree(output)
    return statistics.mean(sizes.whole_batch / rate for rate in rates)


def whole_path(run: Run) -> list[Comparison]:
    sizes = run.sizes
    timed_steps = sizes.whole_log_every * sizes.whole_intervals
    data = _whole_path_data(run, sizes.whole_batch * (timed_steps + sizes.whole_log_every + 1))
    variants = {
        "pretrain.py, per-sample PIL views": [],
        "pretrain.py --augment-on-device": ["--augment-on-device"],
    }
    baseline = "compute-only Pretrainer.train_step"
    compute_step = run.pretrainer_step(WHOLE_PATH_MODEL, sizes.whole_batch, sizes.whole_log_every)
    compute_step()  # warm-up: allocator, oneDNN primitives
    seconds: dict[str, list[float]] = {name: [] for name in [*variants, baseline]}
    for round_index in range(sizes.whole_rounds):
        for name, extra_args in variants.items():
            seconds[name].append(_pretrain_seconds_per_step(run, data, extra_args, round_index))
        seconds[baseline].append(
            time_interleaved(
                {baseline: compute_step}, device=run.device, rounds=1, warmup=0, number=timed_steps
            )[baseline].seconds[0]
        )
    timings = {name: Timing(tuple(values)) for name, values in seconds.items()}
    details = {"dataset": data.name, "batch": sizes.whole_batch, "workers": default_num_workers()}
    notes = (
        f"{WHOLE_PATH_MODEL}, global batch {sizes.whole_batch}, {default_num_workers()} loader workers "
        "(the default here); the whole path includes loading, augmentation and logging"
    )
    rates = dict(items_per_call=(sizes.whole_batch, sizes.whole_batch), rate_unit="images/s", target=0.9)
    return [
        Comparison.of_times(
            "f",
            "pretraining images/s",
            (name, baseline),
            timings,
            notes=notes,
            details=dict(details),
            **rates,
        )
        for name in variants
    ]


def momentum_frameworks(run: Run) -> list[Comparison]:
    """(g): BYOL's and MoCo v3's Pretrainer.train_step against SimCLR's, resnet18_cifar with each
    framework's MLP head, in interleaved rounds."""
    log_every = 10**6  # no information-plane steps: the comparison is the step itself
    simclr = run.pretrainer_step(MODEL, run.sizes.batch, log_every)
    comparisons = []
    for framework in ("byol", "mocov3"):
        model = MODEL.replace("_simclr_", f"_{framework}_")
        names = (f"{framework} train_step", "simclr train_step")
        candidates = dict(
            zip(names, (run.pretrainer_step(model, run.sizes.batch, log_every), simclr), strict=True)
        )
        timings = time_interleaved(
            candidates, device=run.device, rounds=run.sizes.step_rounds, number=run.sizes.steps_per_round
        )
        comparisons.append(
            Comparison.of_times(
                "g", f"training step time, {framework} vs SimCLR", names, timings, target=1.4,
                details={"batch": run.sizes.batch, "model": model},
            )
        )  # fmt: skip
    return comparisons


SECTIONS = {
    "a": training_step,
    "b": data_pipeline,
    "c": topk_projector,
    "d": matrix_mi,
    "e": model_loading,
    "f": whole_path,
    "g": momentum_frameworks,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round (a smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, help="batch of (a) and (b); default 256 on CUDA, 32 on CPU")
    parser.add_argument(
        "--mixed-precision", choices=("no", "bf16"), help="default: bf16 on CUDA, no (float32) on CPU"
    )
    parser.add_argument("--output", type=Path, default=Path("bench-speed.json"), help="JSON report")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown or not args.only:
        parser.error(f"--only takes some of {','.join(SECTIONS)}; got {unknown or 'nothing'}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU; none is visible (leave --device out to use the CPU)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")  # quiet timm's loading logs
    logger.setLevel(logging.INFO)
    datasets.disable_progress_bars()
    device = torch.device(args.device)
    mixed_precision = args.mixed_precision or ("bf16" if device.type == "cuda" else "no")
    sizes = Sizes.for_run(device, args.quick, args.batch_size)
    report: dict = {"device": describe_device(device), "torch": torch.__version__, "ibzoo": ibzoo.__version__}
    report |= {"mixed_precision": mixed_precision, "quick": args.quick, "sizes": dataclasses.asdict(sizes)}
    report["load_average_start"] = os.getloadavg()
    comparisons: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="ibzoo-bench-") as scratch:
        config = PretrainConfig(
            model=MODEL,
            data=DataConfig(dataset="uoft-cs/cifar10"),  # only its preprocessing: the data are random
            output_dir=scratch,
            batch_size=sizes.batch,
            image_size=sizes.image_size,
            mixed_precision=mixed_precision,
            cpu=device.type == "cpu",
        )
        run = Run(device, sizes, config, Path(scratch))
        report["section_seconds"] = {}
        for name in args.only:
            logger.info("section (%s): %s", name, SECTIONS[name].__name__)
            start = time.perf_counter()
            comparisons += SECTIONS[name](run)
            report["section_seconds"][name] = time.perf_counter() - start
    report["load_average_end"] = os.getloadavg()
    report["comparisons"] = [comparison.to_dict() for comparison in comparisons]
    load = ", ".join(f"{value:.1f}" for value in report["load_average_start"])
    print(f"ibzoo {ibzoo.__version__} speed benchmark on {report['device']}; torch {torch.__version__}, ")
    print(f"mixed precision {mixed_precision}, load average at start {load}; median (best) of the rounds\n")
    print(format_table(comparisons))
    notes = {f"({item.section}) {item.measure}: {item.notes}": None for item in comparisons if item.notes}
    print("\n".join(notes))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()

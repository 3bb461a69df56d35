"""Timing, peak-memory and report helpers for ``train/benchmark_speed.py``, and the direct formulations it
measures ibzoo's implementations against.

Timing: the candidates of one comparison run in interleaved rounds (A B A B ...) after warm-up calls, so
that the load of a shared machine drifts over all of them alike; each keeps every round's time. A
comparison's ratio is the median over rounds of the per-round ratio candidate / baseline: pairing the
neighbouring measurements of one round cancels a change of load between rounds, which a ratio of medians
would mistake for a difference. The ratio of the best (fastest) rounds comes beside it. On CUDA every
timed round ends with a synchronisation.

Peak memory (:func:`peak_memory_bytes`) counts tensor bytes, never the process's resident size or an
allocator's cache: the peak, while a function runs, of the bytes it allocated and has not yet freed.
On CUDA that is ``torch.cuda.max_memory_allocated`` after a reset, minus ``memory_allocated`` at the
start; on CPU the same quantity is summed from the allocation and free events that PyTorch's CPU
allocator reports to ``torch.profiler`` under ``profile_memory=True``. Memory that existed before the call
(parameters, inputs, gradient buffers already allocated) is excluded on both. The CPU figure misses
buffers that libraries such as oneDNN allocate outside PyTorch's allocator.

The direct formulations are the ones the paper's reference code uses (Ouyang et al., "Projection Head is
Secretly an Information Bottleneck", ICLR 2025, arXiv:2503.00507): a top-k autoencoder with a dense
B x latents mask and a dense decoder product, and the matrix mutual information from n x n Gram matrices.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ibzoo.projectors.topk import TopKSparseProjector

__all__ = [
    "Comparison",
    "DataLoaderRounds",
    "Timing",
    "dense_topk_projector",
    "describe_device",
    "direct_matrix_mutual_information",
    "format_table",
    "peak_memory_bytes",
    "synchronize",
    "time_interleaved",
]


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); CPU work is already done when a call returns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one candidate, one value per timed round."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    device: torch.device,
    rounds: int,
    warmup: int = 1,
    number: int = 1,
    setup: Mapping[str, Callable[[], object]] | None = None,
    teardown: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """Time each candidate in ``rounds`` interleaved rounds of ``number`` consecutive calls.

    ``warmup`` untimed rounds of one call each come first (allocator, caches, lazy initialisation).
    ``setup[name]`` and ``teardown[name]``, when given, run before and after each of that candidate's
    rounds, untimed (e.g. starting and stopping DataLoader workers, so that they do not run during the
    other candidates' rounds). Returns seconds per call for each round, by candidate name.
    """
    if rounds < 1 or number < 1 or warmup < 0:
        raise ValueError(f"time_interleaved: rounds={rounds} and number={number} must be >= 1, warmup >= 0.")
    setup, teardown = setup or {}, teardown or {}
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + rounds):
        for name, call in candidates.items():
            if name in setup:
                setup[name]()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(1 if round_index < warmup else number):
                call()
            synchronize(device)
            if round_index >= warmup:
                seconds[name].append((time.perf_counter() - start) / number)
            if name in teardown:
                teardown[name]()
    return {name: Timing(tuple(values)) for name, values in seconds.items()}


class DataLoaderRounds:
    """Times a data loader in rounds for :func:`time_interleaved`: :meth:`start` builds a fresh loader
    and waits for its first batch (workers started), :meth:`take` pulls ``batches`` more, :meth:`stop`
    drops the iterator, which ends its workers so that they do not run during other candidates' rounds."""

    def __init__(self, build: Callable[[], Iterable[object]], batches: int) -> None:
        self.build, self.batches = build, batches
        self.iterator: Iterator[object] | None = None

    def start(self) -> None:
        self.iterator = iter(self.build())
        next(self.iterator)

    def take(self) -> None:
        assert self.iterator is not None, "start() first"
        for _ in range(self.batches):
            next(self.iterator)

    def stop(self) -> None:
        self.iterator = None


def peak_memory_bytes(call: Callable[[], object], device: torch.device) -> int:
    """Peak of the tensor bytes ``call`` allocates on ``device`` and still holds (see the module docstring).

    Pre-existing memory is not counted, so run a warm-up call first and decide beforehand whether the
    gradient buffers should exist (``zero_grad(set_to_none=False)``) or be counted (``set_to_none=True``).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        call()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"peak_memory_bytes supports cpu and cuda devices, not {device.type!r}.")
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
        call()
    # The exported trace is the profiler's documented format; each "[memory]" event is one allocation
    # (positive "Bytes") or free (negative) by PyTorch's CPU allocator.
    with tempfile.TemporaryDirectory() as folder:
        trace_path = os.path.join(folder, "trace.json")
        profile.export_chrome_trace(trace_path)
        with open(trace_path) as file:
            events = json.load(file)["traceEvents"]
    memory_events = [
        event
        for event in events
        if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0  # 0: CPU
    ]
    live = peak = 0
    for event in sorted(memory_events, key=lambda event: event["ts"]):  # stable: ties keep trace order
        nbytes = event["args"]["Bytes"]
        live += nbytes
        peak = max(peak, live)
    return peak


@dataclass(frozen=True)
class Comparison:
    """One figure of ibzoo beside its baseline, measured in the same run.

    ``candidate_*`` / ``baseline_*`` hold the median and the best value in ``unit``; for rates (units
    ending in "/s") higher is better and the best is the fastest round, else lower is better.
    ``round_ratios`` holds candidate / baseline per timed round (empty for a single measurement such as
    memory); ``target`` bounds :attr:`ratio` from below for rates, from above otherwise.
    """

    section: str
    measure: str
    unit: str
    candidate: str
    baseline: str
    candidate_median: float
    candidate_best: float
    baseline_median: float
    baseline_best: float
    round_ratios: tuple[float, ...] = ()
    target: float | None = None
    notes: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of_times(
        cls,
        section: str,
        measure: str,
        names: tuple[str, str],
        timings: Mapping[str, Timing],
        *,
        items_per_call: tuple[float, float] | None = None,
        rate_unit: str = "items/s",
        **kwargs: object,
    ) -> Comparison:
        """Compare ``timings[names[0]]`` (candidate) with ``timings[names[1]]`` (baseline): in milliseconds
        per call or, given ``items_per_call`` of each, as a rate in ``rate_unit``."""
        per_round = []
        for index, name in enumerate(names):
            seconds = timings[name].seconds
            if items_per_call is None:
                per_round.append([value * 1e3 for value in seconds])
            else:
                per_round.append([items_per_call[index] / value for value in seconds])
        best = max if items_per_call else min
        values = [summary(rounds) for rounds in per_round for summary in (statistics.median, best)]
        ratios = tuple(c / b for c, b in zip(*per_round, strict=True))
        unit = "ms" if items_per_call is None else rate_unit
        comparison = cls(section, measure, unit, *names, *values, round_ratios=ratios, **kwargs)
        comparison.details["seconds_per_call"] = {name: list(timings[name].seconds) for name in names}
        return comparison

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")

    @property
    def ratio(self) -> float:
        """Median of the per-round candidate / baseline ratios; of the single values without rounds."""
        if self.round_ratios:
            return statistics.median(self.round_ratios)
        return self.candidate_median / self.baseline_median

    @property
    def best_ratio(self) -> float:
        """candidate / baseline of the best values."""
        return self.candidate_best / self.baseline_best

    @property
    def meets_target(self) -> bool | None:
        """Whether :attr:`ratio` meets ``target``; None without a target."""
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        record |= {"ratio": self.ratio, "best_ratio": self.best_ratio, "meets_target": self.meets_target}
        record["target_direction"] = ">=" if self.higher_is_better else "<="
        return record


def _number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def format_table(comparisons: Iterable[Comparison]) -> str:
    """A Markdown table of comparisons: values and ratio as "median (best)", target and whether it is met."""
    header = ("", "measure: candidate vs baseline", "candidate", "baseline", "ratio", "target", "met")
    rows = [header, ("---",) * len(header)]
    for item in comparisons:
        target = "" if item.target is None else f"{'>=' if item.higher_is_better else '<='} {item.target:g}"
        met = {None: "", True: "yes", False: "NO"}[item.meets_target]
        rows.append(
            (
                f"({item.section})",
                f"{item.measure}: {item.candidate} vs {item.baseline}",
                f"{_number(item.candidate_median)} ({_number(item.candidate_best)}) {item.unit}",
                f"{_number(item.baseline_median)} ({_number(item.baseline_best)}) {item.unit}",
                f"{_number(item.ratio)} ({_number(item.best_ratio)})",
                target,
                met,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows
    )


def describe_device(device: torch.device) -> str:
    """The device in words: GPU name, or CPU model, torch's thread count and whether the CPU computes bf16
    natively (AVX512-BF16 or AMX; mixed-precision results can differ between CPUs that do and do not)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    model, flags = platform.processor() or platform.machine(), set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            lines = file.read().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
        flags = {flag for line in lines if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    bf16 = ", native bf16" if flags & {"avx512_bf16", "amx_bf16"} else ""
    return f"cpu ({model}, {torch.get_num_threads()} threads, {os.cpu_count()} cores{bf16})"


def dense_topk_projector(projector: TopKSparseProjector, x: Tensor) -> Tensor:
    """``projector``'s output computed densely, as the paper's reference code does.

    Pre-activations and ReLU over all latents, a dense 0/1 mask of each row's top k, the masked product,
    and a dense decoder matmul: several (B, M) tensors are kept for backward. Same parameters, same
    values and gradients as ``projector(x)``.

    Args:
        projector: Its parameters are used.
        x: (B, D) inputs; B: batch, D: ``projector.in_features`` (M below: ``projector.latents``).

    Returns:
        (B, D) outputs.
    """
    activations = F.relu(F.linear(x - projector.pre_bias, projector.encoder.weight, projector.encoder.bias))
    mask = torch.zeros_like(activations).scatter_(1, activations.topk(projector.k, dim=1).indices, 1.0)
    decoded = (activations * mask) @ projector.decoder_weight.to(activations.dtype)
    return decoded + (projector.decoder_bias + projector.pre_bias).to(decoded.dtype)


def direct_matrix_mutual_information(z1: Tensor, z2: Tensor) -> Tensor:
    """I(Z1; Z2) of order 2 from n x n matrices: K = Z Z^T of unit rows, H(K) = -log tr((K / n) @ (K / n)).

    The joint term uses the Hadamard product K1 o K2. This is the textbook formula that
    :func:`ibzoo.objectives.matrix_mutual_information` (alpha = 2) evaluates without any n x n matrix power.

    Args:
        z1: (N, D1) features; N: rows, D1, D2: feature widths.
        z2: (N, D2) features.

    Returns:
        A scalar.
    """
    rows = z1.shape[0]
    unit1, unit2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    gram1, gram2 = unit1 @ unit1.T, unit2 @ unit2.T

    def entropy(gram: Tensor) -> Tensor:
        normalised = gram / rows
        return -torch.log(torch.trace(normalised @ normalised))

    return entropy(gram1) + entropy(gram2) - entropy(gram1 * gram2)

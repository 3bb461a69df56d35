"""Results of a projector benchmark: the results JSON, mean ± spread over seeds, and the Markdown table.

A benchmark (train/benchmark_fmnist.py) pretrains every (framework, projector) cell with the same budget
and several seeds, then scores the frozen pre-projector features Z1 with k-NN and a linear probe, as
"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507)
compares projectors. Each finished (cell, seed) is one *run* record::

    {"framework": "simclr", "projector": "topk", "seed": 0, "linear_top1": 81.2, "knn_top1": 79.0,
     "train_seconds": 812.5, "eval_seconds": 40.1, ...}

The results file is ``{"settings": {...}, "runs": [run, ...]}``, rewritten atomically after every run so an
interrupted benchmark resumes from what is on disk. The untrained reference row uses
``framework="none", projector="random_init"``.

Spread is the sample standard deviation over seeds (none for a single seed). The delta of a projector
against the framework's ``mlp`` baseline is paired by seed: the mean ± spread of per-seed differences,
which removes the variation that a seed's initial weights and data order share across projectors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "RANDOM_INIT",
    "Summary",
    "find_run",
    "load_results",
    "paired_delta",
    "record_run",
    "render_markdown",
    "save_results",
    "summarize",
]

RANDOM_INIT = ("none", "random_init")
METRIC_TITLES = {"linear_top1": "linear top-1 (%)", "knn_top1": "k-NN top-1 (%)"}
FRAMEWORK_TITLES = {"simclr": "SimCLR", "barlow": "Barlow Twins", "none": "—"}


class Summary(NamedTuple):
    """A metric over seeds: mean, sample standard deviation (None for one seed) and number of seeds."""

    mean: float
    spread: float | None
    count: int

    def format(self, signed: bool = False) -> str:
        """``"81.20 ± 0.35"`` (``"+1.05 ± 0.20"`` when signed); just the mean for one seed."""
        mean = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        return mean if self.spread is None else f"{mean} ± {self.spread:.2f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation (ddof 1) of ``values`` (V,); V: seeds, at least one."""
    if not values:
        raise ValueError("summarize: no values; a cell needs at least one finished seed.")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return Summary(mean, None, 1)
    variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return Summary(mean, math.sqrt(variance), len(values))


def _runs_of(runs: Iterable[Mapping[str, Any]], framework: str, projector: str) -> dict[int, Mapping]:
    return {r["seed"]: r for r in runs if (r["framework"], r["projector"]) == (framework, projector)}


def paired_delta(
    runs: Iterable[Mapping[str, Any]], framework: str, projector: str, metric: str, baseline: str = "mlp"
) -> Summary | None:
    """``metric`` of ``projector`` minus that of ``baseline``, seed by seed, over the seeds both finished.

    Returns None when no seed has both runs.
    """
    runs = list(runs)
    cell, reference = _runs_of(runs, framework, projector), _runs_of(runs, framework, baseline)
    seeds = sorted(cell.keys() & reference.keys())
    if not seeds:
        return None
    return summarize([cell[seed][metric] - reference[seed][metric] for seed in seeds])


def render_markdown(
    results: Mapping[str, Any],
    metrics: Sequence[str] = ("linear_top1", "knn_top1"),
    baseline: str = "mlp",
) -> str:
    """One row per (framework, projector) in the order first run, each metric as mean ± spread and as
    a paired delta against ``baseline``, plus the mean pretraining minutes per seed."""
    runs = results["runs"]
    cells = list(dict.fromkeys((r["framework"], r["projector"]) for r in runs))
    cells.sort(key=lambda cell: cell == RANDOM_INIT)  # the reference row last
    header = ["framework", "projector", "seeds"]
    for metric in metrics:
        header += [METRIC_TITLES.get(metric, metric), f"Δ vs {baseline}"]
    header.append("pretrain min / seed")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for framework, projector in cells:
        cell_runs = list(_runs_of(runs, framework, projector).values())
        row = [FRAMEWORK_TITLES.get(framework, framework), projector.replace("_", " ")]
        row.append(",".join(str(r["seed"]) for r in sorted(cell_runs, key=lambda r: r["seed"])))
        for metric in metrics:
            row.append(summarize([r[metric] for r in cell_runs]).format())
            delta = None
            if projector != baseline and (framework, projector) != RANDOM_INIT:
                delta = paired_delta(runs, framework, projector, metric, baseline)
            row.append(delta.format(signed=True) if delta else "—")
        row.append(f"{summarize([r.get('train_seconds', 0.0) / 60 for r in cell_runs]).mean:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    """The results file at ``path``; FileNotFoundError when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No benchmark results at {path}; run the benchmark first.")
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ValueError(f"{path} is not a benchmark results file (no 'runs' list); delete or move it.")
    return results


def save_results(path: str | Path, results: Mapping[str, Any]) -> None:
    """Write ``results`` as indented JSON through a temporary sibling, so a kill leaves the old file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


def find_run(results: Mapping[str, Any], framework: str, projector: str, seed: int) -> Mapping | None:
    """The finished run of (framework, projector, seed), or None."""
    return _runs_of(results["runs"], framework, projector).get(seed)


def record_run(results: dict[str, Any], run: Mapping[str, Any]) -> None:
    """Add ``run`` to ``results["runs"]``, replacing an earlier record of the same (cell, seed)."""
    key = (run["framework"], run["projector"], run["seed"])
    results["runs"] = [r for r in results["runs"] if (r["framework"], r["projector"], r["seed"]) != key]
    results["runs"].append(dict(run))

"""Results of a projector benchmark: the results JSON, mean ± spread over seeds, and the Markdown table.

A benchmark (train/benchmark_fmnist.py) pretrains every (framework, projector) cell with the same budget
and several seeds, then scores the frozen pre-projector features Z1 with k-NN and a linear probe, as
"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507)
compares projectors. Each finished (cell, seed) is one *run* record::

    {"framework": "simclr", "projector": "topk", "seed": 0, "linear_top1": 81.2, "knn_top1": 79.0,
     "pretrain_seconds": 790.3, "train_seconds": 812.5, "eval_seconds": 40.1, ...}

``pretrain_seconds`` is the pretraining's own time from its log (every invocation of a resumed run);
``train_seconds`` and ``eval_seconds`` are the benchmark's wall clock around the last invocation's
pretraining (or a reference's BatchNorm recalibration) and the evaluation.

The results file is ``{"settings": {...}, "runs": [run, ...]}``, rewritten atomically after every run so an
interrupted benchmark resumes from what is on disk. The untrained reference row uses
``framework="none", projector="random_init"``.

Spread is the sample standard deviation over seeds (none for a single seed). The delta of a projector
against the framework's ``mlp`` baseline is paired by seed: the mean ± spread of per-seed differences,
which removes the variation that a seed's initial weights and data order share across projectors, with
its two-sided 95 % Student-t interval; the table says whether that interval excludes 0, whatever the sign.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ibzoo import frameworks
from ibzoo.atomic_files import write_atomically

__all__ = [
    "RANDOM_INIT",
    "REFERENCE",
    "Summary",
    "find_run",
    "load_results",
    "paired_delta",
    "record_run",
    "render_markdown",
    "save_results",
    "summarize",
    "t_quantile_975",
]

REFERENCE = "none"  # the framework of untrained reference rows
RANDOM_INIT = (REFERENCE, "random_init")
METRIC_TITLES = {"linear_top1": "linear top-1 (%)", "knn_top1": "k-NN top-1 (%)"}
FRAMEWORK_TITLES = {**frameworks.FRAMEWORK_TITLES, REFERENCE: "—"}
# Two-sided 95 % quantiles of Student's t with 1..30 degrees of freedom; beyond, the Cornish-Fisher
# expansion around the normal quantile (error below 1e-3 there).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
_T975 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052)
_T975 += (2.048, 2.045, 2.042)
_Z975 = 1.959964


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 0.975 quantile of Student's t distribution (the half-width factor of a 95 % interval)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"t_quantile_975: degrees_of_freedom={degrees_of_freedom} must be >= 1.")
    if degrees_of_freedom <= len(_T975):
        return _T975[degrees_of_freedom - 1]
    z, n = _Z975, degrees_of_freedom
    return z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)


class Summary(NamedTuple):
    """A metric over seeds: mean, sample standard deviation (None for one seed) and number of seeds."""

    mean: float
    spread: float | None
    count: int

    def format(self, signed: bool = False) -> str:
        """``"81.20 ± 0.35"`` (``"+1.05 ± 0.20"`` when signed); just the mean for one seed."""
        mean = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        return mean if self.spread is None else f"{mean} ± {self.spread:.2f}"

    def interval(self) -> tuple[float, float] | None:
        """The two-sided 95 % Student-t interval of the mean; None for one seed."""
        if self.spread is None:
            return None
        half_width = t_quantile_975(self.count - 1) * self.spread / math.sqrt(self.count)
        return self.mean - half_width, self.mean + half_width

    def excludes_zero(self) -> str:
        """``"yes (+)"`` / ``"yes (−)"`` when the 95 % interval lies above / below 0, ``"no"`` when it holds
        0, ``"—"`` for one seed."""
        interval = self.interval()
        if interval is None:
            return "—"
        if interval[0] > 0:
            return "yes (+)"
        return "yes (−)" if interval[1] < 0 else "no"


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


def _format_delta(delta: Summary | None) -> str:
    if delta is None:
        return "—"
    interval = delta.interval()
    bounds = "" if interval is None else f" [{interval[0]:+.2f}, {interval[1]:+.2f}]"
    return delta.format(signed=True) + bounds


def _mean_of(cell_runs: Sequence[Mapping[str, Any]], key: str, digits: int, unit: float = 1.0) -> str:
    values = [r[key] / unit for r in cell_runs if r.get(key) is not None]
    return f"{summarize(values).mean:.{digits}f}" if values else "—"


def render_markdown(
    results: Mapping[str, Any],
    metrics: Sequence[str] = ("linear_top1", "knn_top1"),
    baseline: str = "mlp",
    row_titles: Mapping[str, str] | None = None,
    row_order: Sequence[tuple[str, str]] = (),
) -> str:
    """One row per (framework, projector): those in ``row_order`` first, in that order (so a re-run does
    not move its row), then the others in the order first run, reference rows last.

    Columns: each metric as mean ± spread and as the paired delta against ``baseline`` with its 95 %
    interval, whether each interval excludes 0, the last logged SSL loss and MI term λ·I(Z1; Z2) (run
    keys ``final_ssl_loss``, ``final_mi_term``) and the mean pretraining minutes per seed
    (``pretrain_seconds``; — for untrained references).
    ``row_titles`` names projector keys in the table (default: the key with spaces).
    """
    runs, row_titles = results["runs"], row_titles or {}
    cells = list(dict.fromkeys((r["framework"], r["projector"]) for r in runs))
    position = {cell: i for i, cell in enumerate(row_order)}
    # Reference rows last, in a fixed order whatever order their runs finished in.
    cells.sort(
        key=lambda cell: (
            cell[0] == REFERENCE,
            cell[1] if cell[0] == REFERENCE else "",
            position.get(cell, len(position)),
        )
    )
    header = ["framework", "projector", "seeds"]
    for metric in metrics:
        header += [METRIC_TITLES.get(metric, metric), f"Δ vs {baseline} [95 % CI]"]
    header += [
        "CI excludes 0 (" + " / ".join(METRIC_TITLES.get(m, m).split(" top")[0] for m in metrics) + ")"
    ]
    header += ["final L_ssl", "final λ·I", "pretrain min / seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for framework, projector in cells:
        cell_runs = list(_runs_of(runs, framework, projector).values())
        row = [
            FRAMEWORK_TITLES.get(framework, framework),
            row_titles.get(projector, projector.replace("_", " ")),
        ]
        row.append(",".join(str(r["seed"]) for r in sorted(cell_runs, key=lambda r: r["seed"])))
        excludes = []
        for metric in metrics:
            row.append(summarize([r[metric] for r in cell_runs]).format())
            delta = None
            if projector != baseline and framework != REFERENCE:
                delta = paired_delta(runs, framework, projector, metric, baseline)
            row.append(_format_delta(delta))
            excludes.append(delta.excludes_zero() if delta else "—")
        row.append(" / ".join(excludes))
        row += [_mean_of(cell_runs, "final_ssl_loss", 3), _mean_of(cell_runs, "final_mi_term", 4)]
        row.append(_mean_of(cell_runs, "pretrain_seconds", 1, unit=60))
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
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))


def find_run(results: Mapping[str, Any], framework: str, projector: str, seed: int) -> Mapping | None:
    """The finished run of (framework, projector, seed), or None."""
    return _runs_of(results["runs"], framework, projector).get(seed)


def record_run(results: dict[str, Any], run: Mapping[str, Any]) -> None:
    """Add ``run`` to ``results["runs"]``, replacing an earlier record of the same (cell, seed)."""
    key = (run["framework"], run["projector"], run["seed"])
    results["runs"] = [r for r in results["runs"] if (r["framework"], r["projector"], r["seed"]) != key]
    results["runs"].append(dict(run))

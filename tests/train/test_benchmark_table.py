"""Tests for train/benchmark_table.py: mean ± spread over seeds, paired deltas, the table, the JSON."""

import json
import statistics

import pytest

from benchmark_table import (
    RANDOM_INIT,
    Summary,
    find_run,
    load_results,
    paired_delta,
    record_run,
    render_markdown,
    save_results,
    summarize,
    t_quantile_975,
)


def _run(framework: str, projector: str, seed: int, linear: float, knn: float) -> dict:
    return dict(
        framework=framework,
        projector=projector,
        seed=seed,
        linear_top1=linear,
        knn_top1=knn,
        # An untrained reference has no pretraining: its column says so rather than 0.0.
        pretrain_seconds=None if framework == RANDOM_INIT[0] else 120.0,
    )


RUNS = [
    _run("simclr", "mlp", 0, 80.0, 75.0),
    _run("simclr", "mlp", 1, 82.0, 76.0),
    _run("simclr", "topk", 0, 81.0, 78.0),
    _run("simclr", "topk", 1, 84.0, 78.5),
    _run(*RANDOM_INIT, 0, 60.0, 55.0),
]


def test_summary_is_the_mean_and_sample_standard_deviation():
    values = [80.0, 82.0, 87.5]
    summary = summarize(values)
    assert summary.mean == pytest.approx(statistics.fmean(values))
    assert summary.spread == pytest.approx(statistics.stdev(values)) and summary.count == 3
    assert summarize([71.25]) == Summary(71.25, None, 1)  # one seed: no spread to report
    with pytest.raises(ValueError, match="at least one finished seed"):
        summarize([])


def test_delta_pairs_seeds_and_ignores_unpaired_ones():
    delta = paired_delta(RUNS, "simclr", "topk", "linear_top1")
    # Per-seed differences +1 and +2, not the difference of means with the spread of both cells.
    assert delta.mean == pytest.approx(1.5) and delta.spread == pytest.approx(statistics.stdev([1.0, 2.0]))
    unpaired = [*RUNS, _run("simclr", "fsq", 2, 90.0, 90.0)]
    assert paired_delta(unpaired, "simclr", "fsq", "linear_top1") is None


def test_markdown_table_rows_values_and_deltas():
    table = render_markdown({"runs": RUNS})
    lines = table.splitlines()
    assert lines[0] == (
        "| framework | projector | seeds | linear top-1 (%) | Δ vs mlp [95 % CI] | k-NN top-1 (%) "
        "| Δ vs mlp [95 % CI] | CI excludes 0 (linear / k-NN) | final L_ssl | final λ·I "
        "| pretrain min / seed |"
    )
    assert lines[1] == "|" + "---|" * 11
    assert lines[2] == "| SimCLR | mlp | 0,1 | 81.00 ± 1.41 | — | 75.50 ± 0.71 | — | — / — | — | — | 2.0 |"
    # Two seeds: t(1) = 12.706, so the interval of +1.50 ± 0.71 is ±12.706 * 0.71 / sqrt(2) wide.
    assert lines[3] == (
        "| SimCLR | topk | 0,1 | 82.50 ± 2.12 | +1.50 ± 0.71 [-4.85, +7.85] | 78.25 ± 0.35 "
        "| +2.75 ± 0.35 [-0.43, +5.93] | no / no | — | — | 2.0 |"
    )
    assert (
        lines[4] == "| — | random init | 0 | 60.00 | — | 55.00 | — | — / — | — | — | — |"
    )  # references last
    assert len(lines) == 5


def test_rows_follow_row_order_whatever_order_the_runs_finished_in():
    rerun_last = [*RUNS[2:], *RUNS[:2]]  # both SimCLR mlp seeds re-run: recorded after the others
    rows = [line.split(" | ")[1] for line in render_markdown({"runs": rerun_last}).splitlines()[2:]]
    assert rows == ["topk", "mlp", "random init"]  # without an order: first run first
    ordered = render_markdown({"runs": rerun_last}, row_order=[("simclr", "mlp"), ("simclr", "topk")])
    assert [line.split(" | ")[1] for line in ordered.splitlines()[2:]] == ["mlp", "topk", "random init"]


def test_interval_is_student_t_and_says_whether_it_excludes_zero():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-3)  # past the table: Cornish-Fisher
    assert t_quantile_975(1000) == pytest.approx(1.9623, abs=1e-3)
    five_seeds = summarize([1.0, 1.5, 0.5, 1.2, 0.8])  # mean 1.0, sd 0.383
    low, high = five_seeds.interval()
    assert (low + high) / 2 == pytest.approx(1.0)
    assert high - low == pytest.approx(2 * 2.776 * statistics.stdev([1.0, 1.5, 0.5, 1.2, 0.8]) / 5**0.5)
    assert five_seeds.excludes_zero() == "yes (+)"
    assert summarize([-1.0, -1.2, -0.8]).excludes_zero() == "yes (−)"
    assert summarize([-1.0, 1.5, 0.5]).excludes_zero() == "no"
    assert summarize([2.0]).interval() is None and summarize([2.0]).excludes_zero() == "—"


def test_table_reports_losses_and_titles_rows():
    runs = [
        {**_run("simclr", "mlp", 0, 80.0, 75.0), "final_ssl_loss": 4.25, "final_mi_term": 0.0},
        {**_run("simclr", "mlp_mi", 0, 81.0, 75.0), "final_ssl_loss": 4.5, "final_mi_term": 0.375},
        _run("none", "random_init_bn", 0, 70.0, 65.0),
    ]
    lines = render_markdown(
        {"runs": runs}, row_titles={"random_init_bn": "random init, BN recalibrated"}
    ).splitlines()
    assert lines[3].endswith("| 4.500 | 0.3750 | 2.0 |") and "| mlp mi |" in lines[3]
    assert lines[4].startswith("| — | random init, BN recalibrated | 0 |")


def test_results_round_trip_and_a_rerun_replaces_its_record(tmp_path):
    path = tmp_path / "results.json"
    results = {"settings": {"epochs": 6}, "runs": []}
    for run in RUNS:
        record_run(results, run)
    record_run(results, _run("simclr", "topk", 0, 85.0, 79.0))
    save_results(path, results)
    loaded = load_results(path)
    assert loaded == json.loads(path.read_text()) and len(loaded["runs"]) == len(RUNS)
    assert find_run(loaded, "simclr", "topk", 0)["linear_top1"] == 85.0
    assert find_run(loaded, "barlow", "topk", 0) is None
    assert not (tmp_path / "results.json.tmp").exists()


def test_missing_or_foreign_results_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the benchmark first"):
        load_results(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a benchmark results file"):
        load_results(tmp_path / "other.json")

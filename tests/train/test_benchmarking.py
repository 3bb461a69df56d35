import json
import math

import pytest
import torch

from benchmarking import (
    Comparison,
    DataLoaderRounds,
    Timing,
    dense_topk_projector,
    direct_matrix_mutual_information,
    format_table,
    peak_memory_bytes,
    time_interleaved,
)
from helpers.scripts import load_train_script
from ibzoo.objectives import matrix_mutual_information
from ibzoo.projectors import TopKSparseProjector

CPU = torch.device("cpu")


def test_rounds_interleave_candidates_after_warmup_with_untimed_setup_and_teardown():
    calls = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in ("A", "B")}
    timings = time_interleaved(
        candidates,
        device=CPU,
        rounds=2,
        warmup=1,
        number=2,
        setup={"A": lambda: calls.append("start A")},
        teardown={"A": lambda: calls.append("stop A")},
    )
    one_round = ["start A", "A", "A", "stop A", "B", "B"]
    assert calls == ["start A", "A", "stop A", "B"] + one_round * 2
    assert set(timings) == {"A", "B"} and all(len(timing.seconds) == 2 for timing in timings.values())
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved(candidates, device=CPU, rounds=0)


def test_data_loader_rounds_skip_the_first_batch_and_take_the_next():
    pulled = []

    def numbers():
        for number in range(10):
            pulled.append(number)
            yield number

    loader = DataLoaderRounds(numbers, batches=3)
    loader.start()
    loader.take()
    assert pulled == [0, 1, 2, 3]
    loader.stop()
    assert loader.iterator is None


def test_cpu_peak_memory_counts_live_bytes_allocated_during_the_call():
    existing = torch.ones(1 << 20)

    def call():
        nonlocal existing
        existing = None  # freeing memory from before the call does not lower the count
        big = torch.ones(1 << 20)  # 4 MiB
        del big
        return torch.ones(1 << 18)  # 1 MiB, live at the end

    peak = peak_memory_bytes(call, CPU)
    assert 4 << 20 <= peak < (4 << 20) + (64 << 10)

    def two_live():
        first = torch.ones(1 << 20)
        second = torch.ones(1 << 20)
        return first, second

    assert 8 << 20 <= peak_memory_bytes(two_live, CPU) < (8 << 20) + (64 << 10)


def test_comparison_ratios_and_targets():
    timings = {"new": Timing((0.2, 0.1, 0.3)), "old": Timing((0.4, 0.5, 0.4))}
    times = Comparison.of_times("c", "time", ("new", "old"), timings, target=0.6)
    assert times.unit == "ms" and not times.higher_is_better
    assert times.candidate_median == pytest.approx(200.0) and times.baseline_best == pytest.approx(400.0)
    assert times.round_ratios == pytest.approx((0.5, 0.2, 0.75))
    assert times.ratio == pytest.approx(0.5) and times.best_ratio == pytest.approx(0.25)
    assert times.meets_target is True
    assert times.details["seconds_per_call"] == {"new": [0.2, 0.1, 0.3], "old": [0.4, 0.5, 0.4]}

    rates = Comparison.of_times(
        "b", "rate", ("new", "old"), timings, items_per_call=(10, 1), rate_unit="images/s", target=1.5
    )
    assert rates.higher_is_better and rates.candidate_median == pytest.approx(50.0)
    assert rates.candidate_best == pytest.approx(100.0) and rates.baseline_best == pytest.approx(2.5)
    # Paired per round (20, 50, 13.3): a load change between rounds would move both sides of a pair.
    assert rates.ratio == pytest.approx(20.0) and rates.meets_target is True
    record = rates.to_dict()
    assert record["ratio"] == pytest.approx(20.0) and record["target_direction"] == ">="

    untargeted = Comparison("d", "m", "MiB", "x", "y", 3.0, 3.0, 2.0, 2.0)
    assert untargeted.meets_target is None and untargeted.ratio == pytest.approx(1.5)
    table = format_table([times, rates, untargeted]).splitlines()
    assert len(table) == 5 and all(line.startswith("| ") and line.endswith(" |") for line in table)
    assert "0.500 (0.250)" in table[2] and "<= 0.6" in table[2] and "yes" in table[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_reference_matches_the_top_k_projector(dtype):
    torch.manual_seed(0)
    projector = TopKSparseProjector(8, 64, 5).to(dtype)
    with torch.no_grad():
        projector.pre_bias.normal_()
        projector.decoder_bias.normal_()
    inputs = torch.randn(6, 8, dtype=dtype)
    output_grad = torch.randn(6, 8, dtype=dtype)

    def values_and_grads(forward):
        projector.zero_grad()
        x = inputs.clone().requires_grad_()
        output = forward(x)
        output.backward(output_grad)
        return [output, x.grad] + [param.grad for param in projector.parameters()]

    sparse = values_and_grads(projector)
    dense = values_and_grads(lambda x: dense_topk_projector(projector, x))
    torch.testing.assert_close(dense, sparse)


def test_direct_mutual_information_matches_the_regulariser():
    torch.manual_seed(0)
    z1, z2 = torch.randn(40, 12, dtype=torch.float64), torch.randn(40, 5, dtype=torch.float64)
    torch.testing.assert_close(
        direct_matrix_mutual_information(z1, z2), matrix_mutual_information(z1, z2, alpha=2.0)
    )


def check_report(report, sections):
    assert report["device"].startswith("cpu") and report["quick"] is True
    comparisons = report["comparisons"]
    assert {item["section"] for item in comparisons} == set(sections)
    for item in comparisons:
        assert item["candidate"] != item["baseline"] and item["unit"]
        assert math.isfinite(item["ratio"]) and item["ratio"] > 0
        expected = item["candidate_median"] / item["baseline_median"]  # quick runs time one round
        assert item["ratio"] == pytest.approx(expected)
        assert item["meets_target"] in (None, True, False)


def test_quick_run_of_the_kernel_sections_writes_the_report(tmp_path, capsys):
    output = tmp_path / "bench.json"
    report = load_train_script("benchmark_speed").main(
        ["--quick", "--only", "c,d", "--device", "cpu", "--output", str(output)]
    )
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    check_report(report, "cd")
    topk_time, memory, memory_with_grads = report["comparisons"][:3]
    assert topk_time["target"] == 0.6 and memory["target"] == 0.4 and memory["unit"] == "MiB"
    # Gradient buffers (2 x 512 x 32 float32 decoder/encoder weights at least) add to the activations.
    assert memory_with_grads["candidate_median"] > memory["candidate_median"]
    assert all(item["details"]["value_difference"] < 1e-4 for item in report["comparisons"][3:])
    printed = capsys.readouterr().out
    assert "TopKSparseProjector vs dense mask" in printed and "wrote" in printed


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        load_train_script("benchmark_speed").main(["--only", "a,z"])
    assert "--only takes some of a,b,c,d,e,f,g" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_of_every_section(tmp_path):
    report = load_train_script("benchmark_speed").main(
        ["--quick", "--device", "cpu", "--output", str(tmp_path / "bench.json")]
    )
    check_report(report, "abcdefg")
    loading = [item for item in report["comparisons"] if item["section"] == "e"]
    assert len(loading) == 2 and all(item["details"]["same_weights"] for item in loading)
    whole_path = [item for item in report["comparisons"] if item["section"] == "f"]
    assert [item["candidate"] for item in whole_path] == [
        "pretrain.py, per-sample PIL views",
        "pretrain.py --augment-on-device",
    ]
    momentum = [item for item in report["comparisons"] if item["section"] == "g"]
    assert [item["candidate"] for item in momentum] == ["byol train_step", "mocov3 train_step"]
    assert all(item["baseline"] == "simclr train_step" and item["target"] == 1.4 for item in momentum)

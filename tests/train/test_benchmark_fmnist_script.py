"""train/benchmark_fmnist.py end to end on a synthetic Fashion-MNIST: the results, the table, resuming,
and the Hub folders it writes loading by their zoo name (``*.fmnist``) from the local Hub."""

import json

import numpy as np
import pytest
import torch

import ibzoo
from ibzoo.benchmark_table import find_run
from ibzoo.testing.idx import write_idx
from ibzoo.testing.images import brightness_images
from ibzoo.testing.scripts import load_train_script

NAME = "resnet18_cifar_simclr_mlp"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def idx_dir(tmp_path):
    """64 train and 64 test 28x28 images whose brightness grows with the label, in IDX files."""
    for seed, prefix in enumerate(("train", "t10k")):
        images, labels = brightness_images(64, num_classes=10, size=28, seed=seed)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.stack([np.asarray(i) for i in images]))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels))
    return tmp_path


@pytest.mark.slow  # one pretraining subprocess (2 steps at 16 px) and two evaluations: 20-40 s on 2 cores
def test_quick_benchmark_resumes_and_publishes_loadable_models(idx_dir, tmp_path, local_hub, monkeypatch):
    script = load_train_script("benchmark_fmnist")
    output = tmp_path / "bench"
    argv = ["--output-dir", str(output), "--budget", "quick", "--frameworks", "simclr", "--projectors", "mlp"]
    argv += ["--idx-dir", str(idx_dir), "--num-workers", "0", "--cpu"]
    results = json.loads(script.main(argv).read_text())

    runs = {(r["framework"], r["projector"], r["seed"]): r for r in results["runs"]}
    assert runs.keys() == {("none", "random_init", 0), ("simclr", "mlp", 0)}
    assert all(r["num_train"] == r["num_test"] == 64 and 0 <= r["linear_top1"] <= 100 for r in runs.values())
    assert results["settings"]["budget"] == "quick" and results["wall_seconds"] > 0
    table = (output / "results.md").read_text()
    assert "| SimCLR | mlp | 0 |" in table and "| — | random init | 0 |" in table

    folder = output / "hub" / "ibzoo" / f"{NAME}.fmnist"
    config = json.loads((folder / "config.json").read_text())
    trained = find_run(results, "simclr", "mlp", 0)
    assert config["ibzoo"]["results"] == {key: trained[key] for key in ("linear_top1", "knn_top1")}
    assert config["ibzoo"]["dataset"] == "zalando-datasets/fashion_mnist"
    assert config["ibzoo"]["train_config"]["data"]["dataset"] == "zalando-datasets/fashion_mnist"
    assert "output_dir" not in config["ibzoo"]["train_config"]
    card = (folder / "README.md").read_text()
    assert table in card and "seed 0 of the row SimCLR / mlp" in card

    # A finished benchmark run again with --resume trains nothing and keeps every record.
    def no_pretraining(*args, **kwargs):
        raise AssertionError("--resume retrained a finished run")

    monkeypatch.setattr(script, "pretrain", no_pretraining)
    with pytest.raises(ValueError, match="--resume"):
        script.main(argv)
    resumed = json.loads(script.main([*argv, "--resume"]).read_text())
    assert resumed["runs"] == results["runs"] and resumed["wall_seconds"] > results["wall_seconds"]

    load_train_script("push_to_hub").main([str(folder)])
    from_hub = ibzoo.create_model(f"{NAME}.fmnist", pretrained=True)
    from_folder = ibzoo.create_model(f"local-dir:{folder}", pretrained=True)
    for key, value in from_folder.state_dict().items():
        torch.testing.assert_close(from_hub.state_dict()[key], value, rtol=0, atol=0, msg=key)

import json

import datasets
import pytest
import torch
from timm.models import save_for_hf

import ibzoo
from helpers.images import save_brightness_dataset
from helpers.scripts import load_train_script
from ibzoo.data import build_digits_dataset
from ibzoo.evaluation import evaluate_backbone

MODEL = "resnet18_cifar_simclr_mlp"


def load_script():
    return load_train_script("evaluate")


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    """60 train / 30 test digits, enough for the script's whole path and a better-than-chance probe."""
    root = tmp_path_factory.mktemp("digits")
    full = datasets.load_from_disk(str(build_digits_dataset(root / "full")))
    tiny = datasets.DatasetDict(
        {"train": full["train"].select(range(60)), "test": full["test"].select(range(30))}
    )
    tiny.save_to_disk(str(root / "tiny"))
    return root / "tiny"


@pytest.fixture(scope="module")
def tiny_brightness(tmp_path_factory):
    """16 train / 8 test greyscale 32x32 images in two brightness classes: cheaper than the digits."""
    return save_brightness_dataset(tmp_path_factory.mktemp("brightness") / "data", 16, 8, num_classes=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow  # imports scikit-learn, runs ResNet-18 on 90 images: 4-12 s on a shared 2-core machine
def test_random_init_reference_writes_json(tiny_digits, tmp_path, capsys):
    output = tmp_path / "out" / "eval.json"
    model = ["--model", MODEL, "--random-init"]
    argv = [*model, "--data.dataset", str(tiny_digits), "--knn-k", "10", "--batch-size", "32"]
    returned = load_script().main([*argv, "--num-workers", "0", "--cpu", "--output", str(output)])

    record = json.loads(output.read_text())
    assert record == returned
    assert (
        record["model"] == MODEL and record["pretrained"] is False and record["dataset"] == str(tiny_digits)
    )
    sizes = (record["num_train"], record["num_test"], record["feature_dim"], record["knn_k"])
    assert sizes == (60, 30, 512, 10)
    assert record["protocol"] == "fast"
    # Random convolutional features still carry the digits' shapes: twice the 10% chance at least.
    assert 20.0 < record["knn_top1"] <= 100.0 and 20.0 < record["linear_top1"] <= 100.0
    assert "linear top-1" in capsys.readouterr().out


def test_checkpoint_folder_loads_its_weights(tiny_brightness, tmp_path, monkeypatch):
    """A pretraining output folder's model/ is evaluated with the weights saved there, not a fresh init."""
    torch.manual_seed(1)  # the script seeds with 0, so a fresh init would differ from these weights
    # A small timm backbone keeps this test fast; the folder is what matters here, not the architecture.
    saved = ibzoo.create_model(
        "resnet10t", num_classes=0, pretrained_cfg_overlay=dict(input_size=(3, 32, 32))
    )
    save_for_hf(saved, tmp_path / "run" / "model", safe_serialization=True)
    script = load_script()
    evaluated = []

    def recording_evaluate_backbone(backbone, *args, **kwargs):
        evaluated.append(backbone)
        return evaluate_backbone(backbone, *args, **kwargs)

    monkeypatch.setattr(script, "evaluate_backbone", recording_evaluate_backbone)
    argv = ["--data.dataset", str(tiny_brightness), "--knn-k", "5", "--num-workers", "0", "--cpu"]
    from_run = script.main(["--model-dir", str(tmp_path / "run"), *argv])
    from_folder = script.main(["--model-dir", str(tmp_path / "run" / "model"), *argv])
    assert from_run == from_folder
    assert from_run["model"] == f"local-dir:{(tmp_path / 'run' / 'model').resolve()}"
    assert from_run["knn_k"] == 5 and from_run["num_train"] == 16 and from_run["num_test"] == 8
    for backbone in evaluated:
        assert backbone.num_classes == 0 and backbone.pretrained_cfg["input_size"] == (3, 32, 32)
        for name, tensor in saved.state_dict().items():
            torch.testing.assert_close(backbone.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        script.main(["--model-dir", str(tmp_path), *argv])
    with pytest.raises(SystemExit):
        script.main(["--model-dir", str(tmp_path / "run"), "--random-init", *argv])


def test_random_init_reference_can_be_recalibrated(tiny_brightness, monkeypatch):
    """--random-init --recalibrate-bn N: the zoo's init with BatchNorm statistics of N training images."""
    script = load_script()
    recalibrated = []
    monkeypatch.setattr(
        script,
        "recalibrate_batchnorm",
        lambda model, data, n: recalibrated.append((model, len(data.dataset), n)),
    )
    argv = ["--model", MODEL, "--random-init", "--data.dataset", str(tiny_brightness), "--knn-k", "5"]
    argv += ["--num-workers", "0", "--cpu", "--probe-l2", "1e-3"]
    record = script.main([*argv, "--recalibrate-bn", "8", "--zero-init-last"])
    assert record["recalibrated_bn_images"] == 8 and record["zero_init_last"] is True
    assert record["linear_l2"] == 1e-3
    ((model, train_rows, images),) = recalibrated
    assert (train_rows, images) == (16, 8)
    assert not model.layer1[0].bn2.weight.any()  # timm's zero-init residual gamma, as asked
    with pytest.raises(SystemExit):
        script.main(["--model", MODEL, "--data.dataset", str(tiny_brightness), "--zero-init-last"])
    with pytest.raises(SystemExit):
        script.main([*argv, "--recalibrate-bn", "-1"])

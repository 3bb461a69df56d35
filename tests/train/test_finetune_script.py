import json

import pytest
import timm
import torch
from timm.models import save_for_hf
from torch.utils.data import DataLoader

import ibzoo
from helpers.images import save_brightness_dataset
from helpers.scripts import load_train_script
from ibzoo.augment import collate, with_views
from ibzoo.data import DataConfig, load_image_dataset
from ibzoo.evaluation import extract_features, model_eval_transform, topk_accuracy

MODEL = "resnet18_cifar_simclr_mlp"


def load_script():
    return load_train_script("finetune")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """12 train / 6 test greyscale 32x32 images in three brightness classes, saved with save_to_disk."""
    return save_brightness_dataset(tmp_path_factory.mktemp("tiny") / "data", 12, 6, num_classes=3)


def test_linear_mode_trains_only_the_classifier_and_saves_a_timm_folder(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    pretrained = ibzoo.create_model(MODEL)
    save_for_hf(pretrained, tmp_path / "run" / "model", safe_serialization=True)
    output = tmp_path / "finetuned"
    data = ["--data.dataset", str(tiny_dataset), "--num-workers", "0", "--cpu"]
    argv = ["--model-dir", str(tmp_path / "run"), "--mode", "linear", *data]
    run = [*argv, "--epochs", "1", "--batch-size", "8", "--output-dir", str(output)]
    results = load_script().main(run)

    assert json.loads((output / "results.json").read_text()) == results
    assert results["num_classes"] == 3 and results["mode"] == "linear" and len(results["epochs"]) == 1
    assert results["epochs"][0]["train_loss"] > 0 and results["final_top1"] == results["epochs"][0]["top1"]

    reloaded = timm.create_model(f"local-dir:{output / 'model'}", pretrained=True)
    assert reloaded.num_classes == 3
    assert json.loads((output / "model" / "config.json").read_text())["label_names"] == ["a", "b", "c"]
    # Frozen means frozen: every backbone tensor, BatchNorm running statistics included, is unchanged.
    backbone_state = pretrained.state_dict()
    for name, tensor in reloaded.state_dict().items():
        if not name.startswith("fc."):
            torch.testing.assert_close(tensor, backbone_state[name], rtol=0, atol=0, msg=name)
    # The saved classifier is the one that was scored.
    test_data = load_image_dataset(DataConfig(dataset=str(tiny_dataset)), "test")
    loader = DataLoader(
        with_views(test_data, model_eval_transform(reloaded)), batch_size=6, collate_fn=collate
    )
    logits, labels = extract_features(reloaded, loader)
    assert topk_accuracy(logits, labels) == pytest.approx(results["final_top1"])

    with pytest.raises(ValueError, match="holds a finished run"):
        load_script().main(run)


def test_full_mode_updates_the_backbone(tiny_dataset, tmp_path):
    # A small timm architecture at 32x32 keeps this fast; local-dir: + --random-init builds it untrained.
    architecture = timm.create_model(
        "resnet10t", num_classes=0, pretrained_cfg_overlay=dict(input_size=(3, 32, 32))
    )
    save_for_hf(architecture, tmp_path / "architecture", safe_serialization=True)
    output = tmp_path / "scratch"
    model = ["--model", f"local-dir:{tmp_path / 'architecture'}", "--random-init"]
    argv = [*model, "--data.dataset", str(tiny_dataset), "--num-workers", "0", "--cpu", "--optimizer", "sgd"]
    results = load_script().main([*argv, "--epochs", "2", "--batch-size", "4", "--output-dir", str(output)])
    assert [epoch["epoch"] for epoch in results["epochs"]] == [1, 2]
    assert (results["lr"], results["weight_decay"], results["pretrained"]) == (0.1, 5e-4, False)

    torch.manual_seed(0)  # the script seeds with --seed 0 before building the model
    initial = timm.create_model(f"local-dir:{tmp_path / 'architecture'}", num_classes=3)
    trained = timm.create_model(f"local-dir:{output / 'model'}", pretrained=True)
    assert not torch.equal(initial.conv1[0].weight, trained.conv1[0].weight)
    assert not torch.equal(initial.bn1.running_mean, trained.bn1.running_mean)
    assert trained.pretrained_cfg["input_size"] == (3, 32, 32)

    with pytest.raises(ValueError, match="larger than the 12 training images"):
        load_script().main([*argv, "--batch-size", "13", "--output-dir", str(tmp_path / "too-big")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-dir", "run", "--random-init", "--data.dataset", "d"], "--random-init goes with --model"),
        (["--model", "m", "--data.dataset", "d", "--epochs", "0"], "--epochs must be >= 1"),
        (["--model", "m"], "required: --data.dataset"),
    ],
)
def test_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_script().parse_args([*argv, "--output-dir", "o"])
    assert message in capsys.readouterr().err


def test_model_and_data_flags_are_resolved():
    args = load_script().parse_args(
        ["--model", "m", "--data.dataset", "d", "--data.label-column", "y", "--output-dir", "o"]
    )
    assert (args.model_name, args.pretrained) == ("m", True)
    assert args.data_config == DataConfig(dataset="d", label_column="y")

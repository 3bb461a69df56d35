import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, TensorBoardTracker
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file

import ibzoo
from helpers.scripts import TRAIN_DIR, load_train_script
from ibzoo.augment import INTERPOLATION
from ibzoo.models.catalog import WITHHELD
from ibzoo.training import CorruptCheckpointError, Pretrainer

SMALL_TOPK = ["--projector.topk-latents", "64", "--projector.topk-k", "8"]
# 16 images, global batch 8: two optimisation steps per epoch.
SHORT_RUN = ["--batch-size", "8", "--log-every", "1", "--num-workers", "0", "--cpu", "--log-with"]


def load_script():
    return load_train_script("pretrain")


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> Path:
    """16 random 32 x 32 RGB images in 3 classes, plus a text column, as a save_to_disk folder."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(16)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["a", "b", "c"]),
            "caption": datasets.Value("string"),
        }
    )
    rows = {
        "image": images,
        "label": [i % 3 for i in range(16)],
        "caption": [f"image {i}" for i in range(16)],
    }
    path = tmp_path_factory.mktemp("tiny") / "images"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(path)
    )
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread on a shared machine. Module-wide, before the reference run:
    the thread count changes how CPU kernels sum, so exact comparisons need the same count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reset_accelerate() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    reset_accelerate()


def records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    model = output_dir / "model"
    return {
        **load_file(model / "model.safetensors"),
        **{f"projector.{k}": v for k, v in load_file(model / "projector.safetensors").items()},
    }


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class RecordingTracker(TensorBoardTracker):
    """accelerate's TensorBoard tracker, recording the run name and folder that ``init_trackers`` gives it;
    a network-free stand-in for W&B, MLflow and Comet, which name their project with the same argument."""

    started: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, run_name: str, logging_dir: str, **kwargs) -> None:
        self.started.append((run_name, str(logging_dir)))
        super().__init__(run_name, logging_dir, **kwargs)


@pytest.mark.slow
def test_simclr_topk_run_writes_checkpoints_log_and_a_hub_folder(
    tiny_images, tmp_path, local_hub, monkeypatch
):
    output_dir = tmp_path / "simclr-topk-run"
    argv = [
        "--model",
        "resnet18_cifar_simclr_topk",
        "--data.dataset",
        str(tiny_images),
        *SMALL_TOPK,
        *SHORT_RUN,
    ]
    argv += [
        "--epochs",
        "2",
        "--optimizer.warmup-epochs",
        "1",
        "--max-steps",
        "3",
        "--output-dir",
        str(output_dir),
    ]
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "tensorboard", RecordingTracker)
    monkeypatch.setattr(RecordingTracker, "started", [])
    model_dir = load_script().main(
        [*argv, "--log-with", "tensorboard", "--push-to-hub", "ibzoo-test/pretrain-e2e"]
    )

    assert model_dir == output_dir / "model"
    run_config = json.loads((output_dir / "run_config.json").read_text())
    assert run_config["projector"]["topk_latents"] == 64 and run_config["batch_size"] == 8
    pretrained_cfg = json.loads((model_dir / "config.json").read_text())["pretrained_cfg"]
    assert pretrained_cfg["interpolation"] == INTERPOLATION  # what the views were resized with
    # A checkpoint after epoch 1 and one where --max-steps ended the run, in the middle of epoch 2.
    checkpoints = output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch-0001",
        "epoch-0001-step-00000003",
        "latest",
    ]
    assert (checkpoints / "latest").read_text().strip() == "epoch-0001-step-00000003"

    log = records(output_dir)
    assert [r["step"] for r in log] == [1, 2, 2, 3, 3]
    step = log[3]
    for key in (
        "loss",
        "ssl_loss",
        "mutual_information",
        "z1_target_information",
        "online_top1",
        "lr",
        "images_per_s",
    ):
        assert np.isfinite(step[f"train/{key}"]), key
    assert "epoch/mean_loss" in log[2] and len(log[4]["backbone_parameter_sha256"]) == 1
    # Trackers get the run's name (its folder's), not a fixed project name such as "tensorboard".
    assert RecordingTracker.started == [("simclr-topk-run", str(output_dir / "tensorboard"))]
    assert list((output_dir / "tensorboard" / "simclr-topk-run").glob("events.out.tfevents.*"))

    # The Hub folder holds the weights of the last checkpoint, loadable by plain timm names.
    checkpoint = load_file(checkpoints / "epoch-0001-step-00000003" / "model.safetensors")
    backbone = ibzoo.create_model(f"local-dir:{model_dir}", pretrained=True)
    for name, value in backbone.state_dict().items():
        torch.testing.assert_close(value, checkpoint[f"ssl_model.backbone.{name}"], rtol=0, atol=0)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["ibzoo"]["model_name"] == "resnet18_cifar_simclr_topk"
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert {"model.safetensors", "projector.safetensors", "config.json", "README.md"} <= set(
        HfApi().list_repo_files("ibzoo-test/pretrain-e2e")
    )


@pytest.mark.slow
def test_barlow_mlp_mi_with_gradient_accumulation(tiny_images, tmp_path):
    output_dir = tmp_path / "run"
    argv = ["--model", "resnet18_cifar_barlow_mlp_mi", "--data.dataset", str(tiny_images), *SHORT_RUN]
    argv += [
        "--projector.hidden-features",
        "64",
        "64",
        "--projector.out-features",
        "32",
        "--image-size",
        "16",
    ]
    argv += ["--epochs", "1", "--optimizer.warmup-epochs", "0", "--gradient-accumulation-steps", "2"]
    load_script().main([*argv, "--output-dir", str(output_dir)])

    log = records(output_dir)
    assert [r["step"] for r in log] == [1, 2, 2, 2]  # two optimisation steps of 2 micro-batches each
    assert all(r["train/mutual_information"] > 0 and r["train/loss"] > r["train/ssl_loss"] for r in log[:2])
    assert json.loads((output_dir / "model" / "config.json").read_text())["ibzoo"]["framework"] == "barlow"


@pytest.mark.parametrize("name", sorted(WITHHELD)[:1])
def test_a_pair_the_zoo_withholds_trains_only_as_an_experiment(name, tiny_images, tmp_path, capsys):
    output_dir = tmp_path / "run"
    argv = ["--model", name, "--data.dataset", str(tiny_images), "--output-dir", str(output_dir)]
    argv += [*SMALL_TOPK, "--projector.hidden-features", "64", "--image-size", "16", *SHORT_RUN]
    argv += ["--epochs", "1", "--optimizer.warmup-epochs", "0"]
    with pytest.raises(SystemExit):
        load_script().main(argv)
    error = capsys.readouterr().err
    assert f"{name} is not in the zoo: " in error and "--experiment" in error
    assert not output_dir.exists()

    model_dir = load_script().main([*argv, "--experiment", "--max-steps", "1"])
    model = ibzoo.create_pretraining_model(f"local-dir:{model_dir}", pretrained=True)
    assert model.projector_config.topk_latents == 64 and model.objective_config.framework == "barlow"
    assert_equal_weights(
        {
            **model.backbone.state_dict(),
            **{f"projector.{k}": v for k, v in model.heads().state_dict().items()},
        },
        final_weights(output_dir),
    )
    # --experiment is for withheld pairs only.
    with pytest.raises(SystemExit):
        load_script().main([*argv[:1], "resnet18_barlow_fsq", *argv[2:], "--experiment"])
    assert "resnet18_barlow_fsq is in the zoo; drop --experiment" in capsys.readouterr().err


SMALL_HEAD = ["--projector.hidden-features", "64", "--projector.out-features", "32", "--image-size", "16"]
SMALL_HEAD += [*SHORT_RUN, "--epochs", "2", "--optimizer.warmup-epochs", "1"]
RESUME_RUN = ["--model", "resnet18_cifar_simclr_mlp", *SMALL_HEAD]
# BYOL resumes its momentum target (weights and tau schedule) and predictor too.
BYOL_RESUME_RUN = ["--model", "resnet18_cifar_byol_mlp", "--objective.predictor-hidden", "16", *SMALL_HEAD]


def _uninterrupted(argv: list[str], tiny_images: Path, output_dir: Path) -> Path:
    """Two epochs (4 steps) in one go: the reference for the resumed runs."""
    load_script().main([*argv, "--data.dataset", str(tiny_images), "--output-dir", str(output_dir)])
    reset_accelerate()
    return output_dir


@pytest.fixture(scope="module")
def uninterrupted(tiny_images, tmp_path_factory) -> Path:
    return _uninterrupted(RESUME_RUN, tiny_images, tmp_path_factory.mktemp("uninterrupted"))


@pytest.fixture(scope="module")
def uninterrupted_byol(tiny_images, tmp_path_factory) -> Path:
    return _uninterrupted(BYOL_RESUME_RUN, tiny_images, tmp_path_factory.mktemp("uninterrupted_byol"))


class SimulatedKill(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "reference"), [(RESUME_RUN, "uninterrupted"), (BYOL_RESUME_RUN, "uninterrupted_byol")]
)
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(
    tiny_images, run, reference, tmp_path, monkeypatch, request
):
    uninterrupted = request.getfixturevalue(reference)
    argv = [*run, "--data.dataset", str(tiny_images), "--output-dir", str(tmp_path)]
    train_step = Pretrainer.train_step

    def killed_in_step_4(self, batch):
        if self.state.global_step == 3:  # after the epoch-1 checkpoint and step 3's log record
            raise SimulatedKill
        return train_step(self, batch)

    monkeypatch.setattr(Pretrainer, "train_step", killed_in_step_4)
    with pytest.raises(SimulatedKill):
        load_script().main(argv)
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 2, 3] and not (tmp_path / "model").exists()

    monkeypatch.undo()
    load_script().main(argv)
    assert_equal_weights(final_weights(tmp_path), final_weights(uninterrupted))
    # Step 3 was trained again after the resume; the log holds it once.
    assert (
        [r["step"] for r in records(tmp_path)]
        == [r["step"] for r in records(uninterrupted)]
        == [1, 2, 2, 3, 4, 4, 4]
    )


@pytest.mark.slow
def test_paused_and_shortened_runs_continue_exactly(tiny_images, uninterrupted, tmp_path):
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(tmp_path)]
    script = load_script()
    assert (
        script.main([*argv, "--max-epochs-this-run", "1"]) == tmp_path / "checkpoints"
    )  # paused after epoch 1
    assert not (tmp_path / "model").exists()
    script.main([*argv, "--max-steps", "3"])  # ends in the middle of epoch 2, with a model folder
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "epoch-0001-step-00000003"
    script.main(argv)  # resumes mid-epoch, skipping the batch step 3 trained on
    assert_equal_weights(final_weights(tmp_path), final_weights(uninterrupted))


@pytest.mark.slow
def test_augment_on_device_run_resumed_mid_epoch_matches_the_uninterrupted_one(tiny_images, tmp_path):
    """The views made on the device are keyed by (seed, epoch, batch, process), so a resumed run is exact."""
    argv = [*RESUME_RUN, "--augment-on-device", "--data.dataset", str(tiny_images)]
    script = load_script()
    script.main([*argv, "--output-dir", str(tmp_path / "uninterrupted")])
    script.main([*argv, "--output-dir", str(tmp_path / "resumed"), "--max-steps", "3"])
    script.main([*argv, "--output-dir", str(tmp_path / "resumed")])  # skips the batch step 3 trained on
    assert json.loads((tmp_path / "resumed" / "run_config.json").read_text())["augment_on_device"] is True
    assert_equal_weights(final_weights(tmp_path / "resumed"), final_weights(tmp_path / "uninterrupted"))
    assert all(np.isfinite(record["train/loss"]) for record in records(tmp_path / "resumed")[:2])


@pytest.mark.slow
def test_corrupt_checkpoints_stop_the_run_with_the_remedy(tiny_images, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, output_dir)
    for checkpoint in (output_dir / "checkpoints").glob("epoch-*"):
        (checkpoint / "optimizer.safetensors").write_bytes(b"truncated")
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(output_dir)]
    with pytest.raises(CorruptCheckpointError, match=r"epoch-0002 could not be loaded .*Delete that folder"):
        load_script().main(argv)


@pytest.mark.slow
def test_a_full_disk_during_the_export_is_named_and_running_again_writes_the_folder(
    tiny_images, uninterrupted, tmp_path, monkeypatch
):
    script = load_script()
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(tmp_path)]

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(script, "save_pretrained", disk_full)
    with pytest.raises(
        OSError, match=r"while writing .*model; the run itself is complete in its last checkpoint"
    ):
        script.main(argv)
    monkeypatch.undo()
    reset_accelerate()
    script.main(argv)  # resumes at its last step, trains nothing more, writes model/
    assert_equal_weights(final_weights(tmp_path), final_weights(uninterrupted))


@pytest.mark.slow
def test_resume_from_another_folders_checkpoint_checks_its_run(tiny_images, uninterrupted, tmp_path):
    """--resume PATH into a new folder continues exactly when the settings are the run's, and is refused,
    naming the differences, when they are not (the schedule and optimiser state fit only their run)."""
    checkpoint = uninterrupted / "checkpoints" / "epoch-0001"
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--resume", str(checkpoint)]
    with pytest.raises(ValueError, match=r"is a checkpoint of another run; .* differs in: optimizer\.lr: "):
        load_script().main([*argv, "--output-dir", str(tmp_path / "other"), "--optimizer.lr", "0.5"])
    reset_accelerate()
    load_script().main([*argv, "--output-dir", str(tmp_path / "same")])
    assert_equal_weights(final_weights(tmp_path / "same"), final_weights(uninterrupted))
    lone = tmp_path / "lone" / "epoch-0001"
    shutil.copytree(checkpoint, lone)
    with pytest.raises(ValueError, match=r"has no run_config\.json, so the checkpoint cannot be checked"):
        load_script().main([*argv[:-1], str(lone), "--output-dir", str(tmp_path / "third")])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_keep_identical_weights(tiny_images, tmp_path):
    """Two gloo processes, each with half of every global batch, end with the same parameters.

    Each rank reports the SHA-256 of its backbone parameters; rank 1's must equal the hash recomputed here
    from the model.safetensors that rank 0 wrote.
    """
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch.append(str(TRAIN_DIR / "pretrain.py"))
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(tmp_path)]
    argv[argv.index("--num-workers") + 1] = "1"  # also exercise the worker processes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*launch, *argv], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 8 (4 per process)" in result.stderr

    digests = records(tmp_path)[-1]["backbone_parameter_sha256"]
    weights = load_file(tmp_path / "model" / "model.safetensors")
    expected = hashlib.sha256()
    for name, _ in sorted(ibzoo.create_model("resnet18_cifar_simclr_mlp").named_parameters()):
        expected.update(name.encode() + weights[name].numpy().tobytes())
    assert digests == [expected.hexdigest()] * 2


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["--data.label-column", "nope"], ValueError, r"Column 'nope' not found; available columns"),
        (["--data.image-column", "caption"], ValueError, r"Image column 'caption' does not hold images"),
        (["--batch-size", "32"], ValueError, r"has 16 images, fewer than one batch of 32"),
        (["--batch-size", "6", "--gradient-accumulation-steps", "4"], ValueError, r"--batch-size 8 or 4"),
    ],
)
def test_data_errors_stop_before_training(tiny_images, tmp_path, extra, error, match):
    argv = [*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(tmp_path), *extra]
    with pytest.raises(error, match=match):
        load_script().main(argv)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "run_config.json").exists()


def test_unknown_dataset_and_another_runs_folder(tiny_images, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a Hub dataset id"):
        load_script().main(
            [*RESUME_RUN, "--data.dataset", "no such/data set", "--output-dir", str(tmp_path / "a")]
        )
    output_dir = tmp_path / "b"
    output_dir.mkdir()
    (output_dir / "run_config.json").write_text(json.dumps({"model": "resnet18_cifar_barlow_fsq"}))
    with pytest.raises(
        ValueError,
        match=r"holds another run; .*model: 'resnet18_cifar_barlow_fsq' -> 'resnet18_cifar_simclr_mlp'",
    ):
        load_script().main([*RESUME_RUN, "--data.dataset", str(tiny_images), "--output-dir", str(output_dir)])
    assert json.loads((output_dir / "run_config.json").read_text()) == {"model": "resnet18_cifar_barlow_fsq"}

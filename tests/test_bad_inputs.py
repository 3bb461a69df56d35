"""A catalogue of bad inputs and the messages they get (issue 12: nothing runs code from a file, and
every bad input is named).

Each test hands ibzoo something a hostile or careless user could: a crafted pickle, corrupt or mismatched
weights, a broken config, a bad image, a full disk, a Hub that fails. It asserts the error names the file
or value and says what to do, and, for pickles, that the payload never ran.

The crafted pickles are armed: ``test_the_crafted_pickle_runs_its_payload_when_unpickled`` shows that
``torch.load`` would create the marker file, so a marker that stays absent proves nothing was unpickled.
"""

from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from huggingface_hub import HfApi
from timm.models import save_for_hf
from torch import nn

import ibzoo
from ibzoo.hub import CheckpointError, PretrainedWeightsUnavailableError
from ibzoo.hub_loading import _read_pretrained_weights
from ibzoo.testing.images import save_brightness_dataset
from ibzoo.testing.scripts import load_train_script
from ibzoo.training.checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    TrainerState,
    UnsafeCheckpointError,
)

TINY = "test_resnet"  # timm's smallest ResNet: a few thousand parameters


class _Payload:
    """Unpickling this creates ``marker``: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_pickle(path: Path, marker: Path) -> Path:
    """Write a torch.save file at ``path`` whose unpickling creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": _Payload(marker)}, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "a crafted pickle was unpickled: its payload ran"


def test_the_crafted_pickle_runs_its_payload_when_unpickled(tmp_path):
    marker = tmp_path / "armed"
    torch.load(crafted_pickle(tmp_path / "model.bin", marker), weights_only=False)
    assert marker.exists()  # so the marker fixture's check below means something


# --- Code execution: resuming a pretraining run --------------------------------------------------------


def _manager(folder: Path) -> CheckpointManager:
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return CheckpointManager(
        accelerator, folder, model=model, optimizer=optimizer, scheduler=scheduler, state=TrainerState()
    )


def test_resume_path_with_accelerates_pickled_trainer_state_is_refused(tmp_path, marker):
    """What Accelerate's register_for_checkpointing wrote, and load_state read with weights_only=False."""
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-0001"
    crafted_pickle(checkpoint / "custom_checkpoint_0.pkl", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"holds custom_checkpoint_0\.pkl: pickled files, which"):
        _manager(tmp_path / "run" / "checkpoints").resume(str(checkpoint))


def test_resume_auto_with_pickles_beside_a_good_checkpoint_is_refused(tmp_path, marker):
    """RNG states, optimiser, schedule, sampler and scaler were pickles too; none is read."""
    folder = tmp_path / "checkpoints"
    good = _manager(folder).save("epoch-0001")
    for name in ("random_states_0.pkl", "optimizer.bin", "scheduler.bin", "sampler.bin", "scaler.pt"):
        crafted_pickle(good / name, marker)
    with pytest.raises(CorruptCheckpointError, match=r"No checkpoint .* could be loaded") as error:
        _manager(folder).resume("auto")
    assert "optimizer.bin, random_states_0.pkl, sampler.bin, scaler.pt, scheduler.bin" in str(error.value)
    assert "unpickling runs any code" in str(error.value)


def test_a_checkpoint_is_json_and_safetensors_only(tmp_path):
    checkpoint = _manager(tmp_path).save("epoch-0001")
    assert {path.suffix for path in checkpoint.iterdir()} == {".json", ".safetensors"}


# --- Code execution: pickled weights, through every entry ----------------------------------------------


@pytest.fixture
def pickle_only_folder(tmp_path, marker) -> Path:
    """A timm folder (config.json) whose weights are only a crafted pytorch_model.bin."""
    folder = tmp_path / "pickled"
    save_for_hf(timm.create_model(TINY), folder, safe_serialization=False)
    crafted_pickle(folder / "pytorch_model.bin", marker)
    assert not (folder / "model.safetensors").exists()
    return folder


PICKLE_REFUSED = r"pytorch_model\.bin holds weights as a pickle, which ibzoo never reads: unpickling"


def test_local_dir_with_only_pytorch_model_bin_is_refused(pickle_only_folder):
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        ibzoo.create_model(f"local-dir:{pickle_only_folder}", pretrained=True)


def test_pretraining_model_from_a_pickle_only_folder_is_refused(pickle_only_folder):
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        ibzoo.create_pretraining_model(
            f"local-dir:{pickle_only_folder}", pretrained=True, framework="simclr", projector="mlp"
        )


def test_pretrained_cfg_overlay_file_that_is_a_pickle_is_refused(pickle_only_folder):
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        ibzoo.create_model(
            TINY,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(pickle_only_folder / "pytorch_model.bin")),
        )


def test_checkpoint_path_that_is_a_pickle_is_refused(pickle_only_folder):
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        ibzoo.create_model(TINY, checkpoint_path=str(pickle_only_folder / "pytorch_model.bin"))


def test_hub_repo_with_only_pytorch_model_bin_is_refused(pickle_only_folder, local_hub):
    repo_id = HfApi().create_repo("someone/pickled-resnet", exist_ok=True).repo_id
    HfApi().upload_folder(repo_id=repo_id, folder_path=pickle_only_folder)
    message = r"has no model\.safetensors\. .*never from pytorch_model\.bin or other pickles"
    with pytest.raises(PretrainedWeightsUnavailableError, match=message):
        ibzoo.create_model(f"hf-hub:{repo_id}", pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailableError, match=message):
        timm_name = "hf-hub:" + repo_id
        ibzoo.create_pretraining_model(timm_name, pretrained=True, framework="simclr", projector="mlp")


@pytest.mark.parametrize(
    "origin",
    [
        {"url": "https://example.com/resnet.pth"},  # timm's own weights hosted as a pickle
        {"source": "hf-hub", "hf_hub_id": "org/repo", "hf_hub_filename": "weights.pth"},
        {"file": "weights.npz", "custom_load": True},
    ],
)
def test_timm_sources_that_are_pickles_are_refused_before_any_download(origin):
    with pytest.raises(CheckpointError, match="as a pickle, which ibzoo never reads"):
        _read_pretrained_weights(origin)


def test_evaluate_and_finetune_scripts_refuse_pickled_weights(pickle_only_folder, tmp_path):
    dataset = save_brightness_dataset(tmp_path / "data", 4, 2, num_classes=2)
    data = ["--data.dataset", str(dataset), "--cpu", "--num-workers", "0"]
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        load_train_script("evaluate").main(["--model", f"local-dir:{pickle_only_folder}", *data])
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        load_train_script("finetune").main(
            ["--checkpoint", str(pickle_only_folder), *data, "--output-dir", str(tmp_path / "out")]
        )


def test_a_projector_saved_as_a_pickle_is_refused(tmp_path, marker):
    model = ibzoo.create_pretraining_model(TINY, framework="simclr", projector="mlp")
    folder = ibzoo.hub.save_pretrained(model, tmp_path / "model", model_name="mine")
    (folder / "projector.safetensors").unlink()
    crafted_pickle(folder / "projector.bin", marker)
    with pytest.raises(CheckpointError, match=r"projector\.bin holds weights as a pickle"):
        ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)

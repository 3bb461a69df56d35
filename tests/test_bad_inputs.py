"""A catalogue of bad inputs and the messages they get (issue 12: nothing runs code from a file, and
every bad input is named).

Each test hands ibzoo something a hostile or careless user could: a crafted pickle, corrupt or mismatched
weights, a broken config, a bad image, a full disk, a Hub that fails. It asserts the error names the file
or value and says what to do, and, for pickles, that the payload never ran.

The crafted pickles are armed: ``test_the_crafted_pickle_runs_its_payload_when_unpickled`` shows that
``torch.load`` would create the marker file, so a marker that stays absent proves nothing was unpickled.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from accelerate import Accelerator
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf
from torch import nn

import ibzoo
from helpers.images import brightness_images, save_brightness_dataset
from helpers.scripts import load_train_script
from ibzoo.data import DataConfig, load_image_dataset
from ibzoo.hub import push_to_hub
from ibzoo.loading import CheckpointError, PretrainedWeightsUnavailableError
from ibzoo.model_card import render_model_card
from ibzoo.projectors import ProjectorConfig
from ibzoo.testing.hub_storage import HubError, HubStorage
from ibzoo.training import OutputDirLock
from ibzoo.training.checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    TrainerState,
    UnsafeCheckpointError,
)
from ibzoo.training.loader import SeededViews
from ibzoo.training.loop import Pretrainer

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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"t": {"__tensor__": "t9"}}', r"optimizer\.json names a tensor 't9' that its \.safetensors lacks"),
        ('{"t": {"__items__": [[1]]}}', r"optimizer\.json holds a malformed __items__ entry"),
        ('{"t": {"__items__": [[[1], 2]]}}', r"optimizer\.json holds a dict key that is a list"),
        ("{oops", r"optimizer\.json is not valid JSON"),
    ],
)
def test_a_tampered_checkpoint_json_is_named(tmp_path, content, message):
    checkpoint = _manager(tmp_path).save("epoch-0001")
    (checkpoint / "optimizer.json").write_text(content)
    with pytest.raises(CorruptCheckpointError, match=message):
        _manager(tmp_path).resume(str(checkpoint))


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
    "overlay",
    [
        {"hf_hub_id": "", "url": "https://example.com/resnet.pth"},  # timm weights hosted as a pickle
        {"hf_hub_id": "org/repo", "hf_hub_filename": "weights.pth"},
        {"file": "weights.npz", "custom_load": True},
    ],
)
def test_timm_sources_that_are_pickles_are_refused_before_any_download(overlay, local_hub):
    sent = len(local_hub.requests)
    with pytest.raises(CheckpointError, match="as a pickle, which ibzoo never reads"):
        ibzoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay=overlay)
    assert len(local_hub.requests) == sent


def test_evaluate_and_finetune_scripts_refuse_pickled_weights(pickle_only_folder, tmp_path):
    dataset = save_brightness_dataset(tmp_path / "data", 4, 2, num_classes=2)
    data = ["--data.dataset", str(dataset), "--cpu", "--num-workers", "0"]
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        load_train_script("evaluate").main(["--model", f"local-dir:{pickle_only_folder}", *data])
    with pytest.raises(CheckpointError, match=PICKLE_REFUSED):
        load_train_script("finetune").main(
            ["--model-dir", str(pickle_only_folder), *data, "--output-dir", str(tmp_path / "out")]
        )


def test_a_projector_saved_as_a_pickle_is_refused(tmp_path, marker):
    model = ibzoo.create_pretraining_model(TINY, framework="simclr", projector="mlp")
    folder = ibzoo.hub.save_pretrained(model, tmp_path / "model", model_name="mine")
    (folder / "projector.safetensors").unlink()
    crafted_pickle(folder / "projector.bin", marker)
    with pytest.raises(CheckpointError, match=r"projector\.bin holds weights as a pickle"):
        ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)


# --- Silent wrong results: weights that would load wrongly ---------------------------------------------


@pytest.fixture
def timm_folder(tmp_path) -> Path:
    """A plain timm folder (config.json + model.safetensors) of the tiny ResNet."""
    folder = tmp_path / "timm"
    save_for_hf(timm.create_model(TINY), folder, safe_serialization=True)
    return folder


def _rewrite_weights(path: Path, change) -> None:
    tensors = load_file(path)
    save_file({key: change(key, value) for key, value in tensors.items()}, path)


def test_integer_tensor_for_a_float_parameter_is_refused_naming_it(timm_folder):
    _rewrite_weights(
        timm_folder / "model.safetensors",
        lambda key, value: value.to(torch.int32) if key == "conv1.0.weight" else value,
    )
    message = r"Tensor 'conv1\.0\.weight' of .*safetensors is torch\.int32, but the model's is torch\.float32"
    with pytest.raises(CheckpointError, match=message):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)


def test_non_finite_weights_are_refused_naming_the_tensor(timm_folder):
    _rewrite_weights(
        timm_folder / "model.safetensors",
        lambda key, value: torch.full_like(value, float("nan")) if key == "fc.bias" else value,
    )
    with pytest.raises(CheckpointError, match=r"Tensor 'fc\.bias' of .* holds NaN or infinite values"):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)


def test_huge_but_finite_weights_whose_sum_overflows_still_load(timm_folder):
    huge = torch.tensor(3e38)  # finite in float32; the float32 sum of the tensor is not
    _rewrite_weights(
        timm_folder / "model.safetensors",
        lambda key, value: torch.full_like(value, huge) if key == "fc.bias" else value,
    )
    model = ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)
    assert torch.equal(model.fc.bias, torch.full_like(model.fc.bias, huge))


def test_a_lossless_float16_cast_is_reported_and_a_rounding_one_too(timm_folder):
    path = timm_folder / "model.safetensors"
    _rewrite_weights(path, lambda key, value: value.half() if value.is_floating_point() else value)
    with pytest.warns(
        UserWarning, match=r"stored as torch\.float16 and load as the model's torch\.float32, a lossless"
    ):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)
    _rewrite_weights(path, lambda key, value: value.double() + 1e-12 if value.is_floating_point() else value)
    with pytest.warns(UserWarning, match=r"stored as torch\.float64 .* rounding \d+ of them \(first: '"):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    manager = _manager(tmp_path)
    checkpoint = manager.save("epoch-0001")
    _rewrite_weights(checkpoint / "model.safetensors", lambda key, value: value * float("inf"))
    with pytest.raises(
        CorruptCheckpointError, match=r"Tensor '(weight|bias)' of .*model\.safetensors holds NaN"
    ):
        _manager(tmp_path).resume(str(checkpoint))


# --- Silent wrong results: configs ---------------------------------------------------------------------


def _edit_config(folder: Path, change) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_create_model_refuses_a_config_from_a_newer_ibzoo(timm_folder):
    _edit_config(timm_folder, lambda config: {**config, "ibzoo": {"version": "99.0.0"}})
    with pytest.raises(CheckpointError, match=r"written by ibzoo 99\.0\.0, newer than the installed ibzoo"):
        ibzoo.create_model(f"local-dir:{timm_folder}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"config\.json of folder .*timm'.* is not valid JSON \(Expecting property name"),
        ("[1, 2]", r"is not a timm model config: it is a JSON list\. Re-save"),
        ('{"architecture": "test_resnet", "pretrained_cfg": "x"}', r"'pretrained_cfg' is a str, not a dict"),
        ('{"pretrained_cfg": {}}', r"is not a timm model config: it has no 'architecture'"),
    ],
)
def test_an_invalid_config_json_is_named(timm_folder, content, message):
    (timm_folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)


def test_a_projector_file_that_does_not_fit_its_config_is_named(tmp_path):
    small = ibzoo.create_pretraining_model(TINY, framework="simclr", projector="mlp")
    folder = ibzoo.hub.save_pretrained(small, tmp_path / "model", model_name="mine")
    other = ibzoo.create_pretraining_model(TINY, framework="simclr", projector="fsq")
    save_file(other.projector.state_dict(), folder / "projector.safetensors")
    with pytest.raises(
        CheckpointError, match=r"projector\.safetensors does not fit the projector that .*describes"
    ):
        ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)


# --- Silent wrong results: publishing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ibzoo_folder(tmp_path_factory) -> Path:
    """A Hub-ready folder of an untagged zoo name trained on the user's own (local) data."""
    torch.manual_seed(0)
    model = ibzoo.create_pretraining_model(
        "resnet18_cifar_simclr_mlp", projector_config=ProjectorConfig(hidden_features=(16,), out_features=8)
    )
    return ibzoo.hub.save_pretrained(
        model,
        tmp_path_factory.mktemp("own") / "model",
        model_name="resnet18_cifar_simclr_mlp",
        train_config={"data": {"dataset": "data/my-photos"}},
    )


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            lambda section: {
                **section,
                "projector_config": {**section["projector_config"], "hidden_features": "wide"},
            },
            "hidden_features",
        ),
        (
            lambda section: {**section, "objective_config": {**section["objective_config"], "bogus": 1}},
            "bogus",
        ),
        (
            lambda section: {
                **section,
                "objective_config": {**section["objective_config"], "framework": "dino"},
            },
            "dino",
        ),
        (lambda section: {**section, "projector_config": [16, 8]}, "must be JSON objects"),
        (
            lambda section: {k: v for k, v in section.items() if k != "objective_config"},
            "must be JSON objects",
        ),
    ],
)
def test_a_wrong_ibzoo_section_is_blamed_on_the_file(ibzoo_folder, tmp_path, change, detail):
    folder = _copy(ibzoo_folder, tmp_path)
    _edit_config(folder, lambda config: {**config, "ibzoo": change(config["ibzoo"])})
    with pytest.raises(
        CheckpointError, match=rf"config\.json of .* has an invalid ibzoo section \(.*{detail}"
    ) as error:
        ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)
    assert "Re-save the checkpoint" in str(error.value)


def test_push_refuses_a_truncated_folder_before_anything_is_sent(ibzoo_folder, tmp_path, local_hub):
    folder = _copy(ibzoo_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    sent = len(local_hub.requests)
    with pytest.raises(
        CheckpointError, match=r"copy cannot be published, it does not load: .*truncated or corrupt"
    ):
        push_to_hub(folder, "me/truncated")
    assert len(local_hub.requests) == sent


def test_push_refuses_a_config_from_a_newer_ibzoo(ibzoo_folder, tmp_path, local_hub):
    folder = _copy(ibzoo_folder, tmp_path)
    _edit_config(folder, lambda config: {**config, "ibzoo": {**config["ibzoo"], "version": "99.1"}})
    with pytest.raises(CheckpointError, match=r"cannot be published, .* written by ibzoo 99\.1, newer"):
        push_to_hub(folder, "me/newer")


def test_push_with_a_bad_repo_id_names_it(ibzoo_folder):
    with pytest.raises(ValueError, match=r"'not a repo/id\?' is not a Hub repo id \('org/name'\)"):
        push_to_hub(ibzoo_folder, "not a repo/id?")


@pytest.mark.parametrize("repo_id", ["", "  "])
def test_push_script_refuses_an_empty_repo_id_rather_than_the_zoos(ibzoo_folder, capsys, repo_id):
    with pytest.raises(SystemExit) as exit_info:
        load_train_script("push_to_hub").main([str(ibzoo_folder), "--repo-id", repo_id])
    assert exit_info.value.code == 2
    assert "--repo-id is empty: give ORG/NAME" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--knn-temperature", "nan"), ("--knn-temperature", "0"), ("--probe-l2", "inf"), ("--probe-l2", "-1")],
)
def test_evaluate_refuses_non_finite_or_out_of_range_settings(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        load_train_script("evaluate").parse_args(
            ["--model", "resnet18", "--data.dataset", "x", f"{flag}={value}"]
        )
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a finite number" in capsys.readouterr().err


def test_a_corrupt_config_in_the_hub_cache_says_to_clear_that_entry(ibzoo_folder, local_hub):
    push_to_hub(ibzoo_folder, "me/cached")
    cached = Path(hf_hub_download("me/cached", "config.json"))
    cached.resolve().write_text("{half a file")  # the blob the cache's snapshot links to
    with pytest.raises(
        CheckpointError, match=r"is not valid JSON .*Download it again: delete the repo's folder"
    ):
        ibzoo.create_model("hf-hub:me/cached", pretrained=True)
    repo_folder = next(p for p in cached.parents if p.name == "models--me--cached")
    shutil.rmtree(repo_folder)  # as the message says; the Hub's copy is fine
    assert ibzoo.create_model("hf-hub:me/cached", pretrained=True).num_features == 512


def test_card_of_an_untagged_model_names_it_and_its_repo_not_the_zoos(ibzoo_folder, local_hub):
    card = (ibzoo_folder / "README.md").read_text()
    assert "cifar10" not in card and "ibzoo/resnet18" not in card
    assert 'create_model("hf-hub:YOUR_ORG/resnet18_cifar_simclr_mlp", pretrained=True)' in card
    push_to_hub(ibzoo_folder, "me/own-encoder")
    pushed = Path(hf_hub_download("me/own-encoder", "README.md")).read_text()
    assert 'create_model("hf-hub:me/own-encoder", pretrained=True)' in pushed and "YOUR_ORG" not in pushed
    assert "model_name: own-encoder" in pushed
    assert (ibzoo_folder / "README.md").read_text() == card  # the folder is left as it was


def test_card_fields_are_escaped(ibzoo_folder):
    config = json.loads((ibzoo_folder / "config.json").read_text())
    evil = "photos\n# Fake heading\n<script>alert(1)</script> | [link](https://evil)"
    config["ibzoo"] |= {"dataset": evil, "model_name": evil, "results": {evil: 1.0}}
    config["ibzoo"]["train_config"] = {"data": {evil: evil}}
    config["ibzoo"]["benchmark"] = {"description": evil, "table": f"| a | b |\n|---|---|\n{evil}"}
    text = render_model_card(config, repo_id="me/x").text
    outside_code = re.sub(r"`[^`\n]*`", "", text)  # a code span shows HTML as text
    assert "<script>" not in outside_code and "&lt;script&gt;" in outside_code
    assert not re.search(r"^# Fake", text, flags=re.MULTILINE)
    assert "[link](https://evil)" not in outside_code and "\\[link\\]" in outside_code
    with pytest.raises(ValueError, match=r"repo_id 'me/x\\n# h' is not a Hub repo id"):
        render_model_card(config, repo_id="me/x\n# h")


def test_the_push_script_reports_a_broken_folder_in_one_line(ibzoo_folder, tmp_path):
    folder = _copy(ibzoo_folder, tmp_path)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(SystemExit, match=r"config\.json of folder .*copy.* is not valid JSON .*Re-save"):
        load_train_script("push_to_hub").main([str(folder)])
    with pytest.raises(
        SystemExit, match=r"^push_to_hub\.py: error: Cannot push .* 'bad id' is not a Hub repo id"
    ):
        load_train_script("push_to_hub").main([str(ibzoo_folder), "--repo-id", "bad id"])


# --- Errors that name the value and what to do ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        (None, {}, TypeError, r"model_name must be a model name such as .* got None"),
        (TINY, {"num_classes": "10"}, TypeError, r"num_classes='10' must be an integer, not a str"),
        (TINY, {"in_chans": "3"}, TypeError, r"in_chans='3' must be an integer, not a str"),
        (TINY, {"num_classes": -3}, ValueError, r"num_classes=-3 must be >= 0"),
        (TINY, {"in_chans": 0}, ValueError, r"in_chans=0 must be >= 1"),
    ],
)
def test_create_model_arguments_of_the_wrong_type_or_range(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        ibzoo.create_model(name, **kwargs)


def test_did_you_mean_lists_each_name_once():
    with pytest.raises(KeyError, match="Did you mean") as error:
        ibzoo.create_model("resnet18_cifar_simclr_topq")
    suggestions = str(error.value).split("Did you mean ")[1].rstrip("?'\"").split(", ")
    assert "resnet18_cifar_simclr_topk" in suggestions and len(suggestions) == len(set(suggestions))


@pytest.mark.parametrize(
    ("kwargs", "given"),
    [({"features_only": True}, "features_only=True"), ({"global_pool": ""}, "global_pool=''")],
)
def test_pretraining_model_without_pooled_features_is_refused_at_construction(kwargs, given):
    with pytest.raises(ValueError, match=rf"{re.escape(given)}\): the projector needs pooled features"):
        ibzoo.create_pretraining_model(TINY, framework="simclr", projector="mlp", **kwargs)


def test_hub_repo_id_that_is_not_one_is_named(local_hub):
    with pytest.raises(ValueError, match=r"'not a/valid repo!' is not a valid Hub repo id"):
        ibzoo.create_model("hf-hub:not a/valid repo!", pretrained=True)


def test_a_hub_server_error_is_not_reported_as_unreachable(local_hub, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("the server broke")

    monkeypatch.setattr(HubStorage, "get_commit", fail)  # the local Hub answers every lookup with a 500
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # no back-off
    with pytest.raises(
        PretrainedWeightsUnavailableError, match=r"answered HTTP 500, a server error, .*try again later"
    ):
        ibzoo.create_model("hf-hub:me/server-error", pretrained=True)


def test_a_push_the_hub_refuses_is_not_worth_repeating(ibzoo_folder, local_hub, monkeypatch):
    def refuse(*args, **kwargs):
        raise HubError(400, "Invalid commit: the file is too large")

    monkeypatch.setattr(HubStorage, "commit", refuse)
    with pytest.raises(
        ConnectionError, match=r"the Hub refused the request: .*fails alike: fix what the Hub names"
    ):
        push_to_hub(ibzoo_folder, "me/refused")


@pytest.fixture
def one_second_hub_limit(monkeypatch):
    """Call to put ibzoo's Hub time limit at 1 s (after the test's set-up, which a busy machine may take
    longer over); huggingface_hub's back-off between retries is skipped."""
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    return lambda: monkeypatch.setenv("IBZOO_HUB_TIMEOUT", "1")


@pytest.mark.parametrize(
    ("fault", "path", "message"),
    [
        ("silent", "", r"did not answer HEAD \S*config.json within 1 s"),
        ("stall", "model.safetensors", r"did not answer GET \S*model.safetensors within 1 s"),
        ("trickle", "model.safetensors", r"sent \S*model.safetensors at \d+ bytes/s"),
        # huggingface_hub 2.x retries a body cut short (resuming) until ibzoo's limit; 1.x gives up at once
        (
            "cut",
            "model.safetensors",
            r"failed GET \S*model.safetensors 3 times in a row|closed the connection",
        ),
    ],
)
def test_a_hub_that_misbehaves_is_given_up_on_naming_it(
    fault, path, message, ibzoo_folder, local_hub, one_second_hub_limit, monkeypatch
):
    repo = f"me/faulty-{fault}"
    push_to_hub(ibzoo_folder, repo)
    one_second_hub_limit()
    began = time.monotonic()
    with (
        local_hub.fault(fault, path),
        pytest.raises(PretrainedWeightsUnavailableError, match=message) as info,
    ):
        ibzoo.create_model(f"hf-hub:{repo}", pretrained=True)
    assert time.monotonic() - began < 20  # without the limits: forever
    assert f"The Hub at {local_hub.endpoint}" in str(info.value) and "IBZOO_HUB_TIMEOUT=SECONDS" in str(
        info.value
    )
    monkeypatch.delenv("IBZOO_HUB_TIMEOUT")
    assert ibzoo.create_model(f"hf-hub:{repo}", pretrained=True).num_features == 512  # the Hub is fixed


@pytest.mark.parametrize("path", ["/api/repos/create", "/commit/"])
def test_a_push_to_a_hub_that_never_answers_ends_leaving_the_folder(
    path, ibzoo_folder, tmp_path, local_hub, one_second_hub_limit
):
    folder = _copy(ibzoo_folder, tmp_path)
    before = {file.name: file.read_bytes() for file in folder.iterdir()}
    one_second_hub_limit()
    began = time.monotonic()
    with (
        local_hub.fault("silent", path),
        pytest.raises(
            ConnectionError, match=r"did not answer .*within 1 s.*The folder is unchanged: push it again"
        ),
    ):
        push_to_hub(folder, "me/never-answers")
    assert time.monotonic() - began < 20
    assert {file.name: file.read_bytes() for file in folder.iterdir()} == before


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_hub_time_limit_is_named(value, monkeypatch, local_hub):
    monkeypatch.setenv("IBZOO_HUB_TIMEOUT", value)
    with pytest.raises(
        ValueError, match=rf"IBZOO_HUB_TIMEOUT='{value}' must be a positive number of seconds"
    ):
        ibzoo.create_model("hf-hub:me/any-repo", pretrained=True)


def test_a_truncated_local_overlay_file_is_named_without_blaming_the_hub(ibzoo_folder, tmp_path):
    weights = _copy(ibzoo_folder, tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(weights))} is truncated or corrupt") as error:
        ibzoo.create_model(
            "resnet18_cifar_simclr_mlp", pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))
        )
    assert "Re-save" in str(error.value) and "Hub" not in str(error.value) and "cache" not in str(error.value)


@pytest.mark.parametrize("kwargs", [dict(num_classes=5), dict(num_classes=0), dict(features_only=True)])
def test_a_tensor_missing_beside_a_new_classifier_is_named(timm_folder, kwargs):
    """timm loads leniently when the classifier changes: only the classifier may be absent."""
    tensors = load_file(timm_folder / "model.safetensors")
    del tensors["layer1.0.conv1.weight"]
    save_file(tensors, timm_folder / "model.safetensors")
    message = (
        r"model\.safetensors lacks 1 of the model's tensors \(layer1\.0\.conv1\.weight\); they would keep"
    )
    with pytest.raises(CheckpointError, match=message):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True, **kwargs)


def test_a_new_classifier_loads_every_other_tensor(timm_folder):
    model = ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True, num_classes=5)
    assert model.fc.out_features == 5
    tensors = load_file(timm_folder / "model.safetensors")
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(value, tensors[key], rtol=0, atol=0)


def test_one_missing_tensor_is_named_not_blamed_on_another_model(timm_folder):
    tensors = load_file(timm_folder / "model.safetensors")
    del tensors["fc.bias"]
    save_file(tensors, timm_folder / "model.safetensors")
    message = r"do not fit 'local-dir:.*', the architecture its config\.json names \(.*fc\.bias.*A few keys"
    with pytest.raises(CheckpointError, match=message):
        ibzoo.create_model(f"local-dir:{timm_folder}", pretrained=True)


# --- Training: the command line, the output folder, a full disk ----------------------------------------

PRETRAIN = ["--model", "resnet18_cifar_simclr_mlp", "--data.dataset", "data/unused", "--cpu"]


def test_a_settings_mistake_is_one_argparse_style_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_train_script("pretrain").main([*PRETRAIN, "--output-dir", str(tmp_path), "--epochs", "2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "pretrain.py: error: optimizer.warmup_epochs=10 exceeds epochs=2; lower --optimizer.warmup-epochs "
        "or raise --epochs."
    )


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("optimizer: {lr: fast}", "optimizer.lr='fast' must be a number."),
        ("optimizer: 5", "optimizer=5 must be a mapping of settings."),
        (
            "projector: {hidden_features: [a, b]}",
            "projector.hidden_features=['a', 'b'] must be a list of integers.",
        ),
        ("mixed_precision: fp8", "mixed_precision='fp8' must be one of 'no', 'fp16', 'bf16'."),
        (
            "optimizer: {weight_decay: 1e-4}",
            "optimizer.weight_decay='1e-4' must be a number (YAML reads 1e-4 as",
        ),
        ("epochs: -3", "PretrainConfig.epochs=-3 must be a positive integer."),
        ("objective: {temperature: -1}", "ObjectiveConfig.temperature=-1 must be a finite number > 0."),
    ],
)
def test_a_wrong_value_in_a_recipe_is_blamed_on_the_recipe(tmp_path, capsys, recipe, message):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe + "\n")
    with pytest.raises(SystemExit) as exit_info:
        load_train_script("pretrain").main(
            [*PRETRAIN, "--output-dir", str(tmp_path), "--recipe", str(recipe_file)]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith(f"pretrain.py: error: recipe {recipe_file}: {message}")


def test_a_wrong_value_on_the_command_line_beside_a_good_recipe_is_not_blamed_on_it(tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("epochs: 30\n")
    with pytest.raises(SystemExit):
        load_train_script("pretrain").main(
            [*PRETRAIN, "--output-dir", str(tmp_path), "--recipe", str(recipe_file), "--epochs", "0"]
        )
    assert (
        capsys.readouterr().err.strip()
        == "pretrain.py: error: PretrainConfig.epochs=0 must be a positive integer."
    )


@pytest.mark.parametrize("flag", ["--optimizer.lr", "--optimizer.weight-decay", "--objective.temperature"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_setting_is_refused_naming_it(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        load_train_script("pretrain").main([*PRETRAIN, "--output-dir", str(tmp_path), f"{flag}={value}"])
    assert exit_info.value.code == 2
    setting = flag.removeprefix("--").replace("-", "_")
    assert f"{setting}={float(value)!r} is not a finite number" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_diverged_run_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """A loss that turns NaN stops the run at the next logged loss, before a checkpoint can save NaN
    weights over the last good ones."""
    data = save_brightness_dataset(tmp_path / "data", 8, 2, num_classes=2, size=16)
    argv = [
        "--model",
        "resnet18_cifar_simclr_mlp",
        "--data.dataset",
        str(data),
        "--cpu",
        "--num-workers",
        "0",
    ]
    argv += ["--output-dir", str(tmp_path / "run"), "--batch-size", "4", "--epochs", "3", "--log-every", "1"]
    argv += ["--projector.hidden-features", "16", "--projector.out-features", "8", "--image-size", "16"]
    argv += ["--optimizer.warmup-epochs", "0", "--log-with"]
    train_step = Pretrainer.train_step

    def poisoned_from_step_3(self, batch):
        if self.state.global_step == 2:  # after the epoch-1 checkpoint (2 steps per epoch)
            with torch.no_grad():
                next(self.module.parameters()).fill_(float("nan"))
        return train_step(self, batch)

    monkeypatch.setattr(Pretrainer, "train_step", poisoned_from_step_3)
    with pytest.raises(
        FloatingPointError, match=r"The training loss became nan by step 3 \(the mean of the last"
    ):
        load_train_script("pretrain").main(argv)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch-0001"
    weights = load_file(checkpoints / "epoch-0001" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert not (tmp_path / "run" / "model").exists()


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = OutputDirLock(run)  # a pretraining in progress, as another process would hold it
    (run / "notes.txt").write_text("the first run's")
    try:
        with pytest.raises(SystemExit) as exit_info:
            load_train_script("pretrain").main([*PRETRAIN, "--output-dir", str(run)])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert f"--output-dir {run} is in use by a running pretraining (process {os.getpid()} on" in error
        assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]  # nothing touched
    finally:
        holder.release()
    # Released (or its process gone, crash included): the folder can be claimed again, file or not.
    OutputDirLock(run).release()


def test_the_lock_dies_with_its_process(tmp_path):
    run = tmp_path / "run"
    code = (
        f"from ibzoo.training import OutputDirLock; OutputDirLock(__import__('pathlib').Path({str(run)!r})); "
    )
    code += "import os; os._exit(9)"  # a crash: no cleanup runs
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (run / ".lock").is_file()
    OutputDirLock(run).release()


def test_an_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    output = tmp_path / "output.txt"
    output.write_text("notes")
    with pytest.raises(SystemExit):
        load_train_script("pretrain").main([*PRETRAIN, "--output-dir", str(output)])
    assert f"pretrain.py: error: --output-dir {output} is a file, not a folder" in capsys.readouterr().err
    assert output.read_text() == "notes"


def test_a_full_disk_during_a_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    manager = _manager(tmp_path)
    manager.save("epoch-0001")

    def disk_full(path: Path, data: bytes) -> None:
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ibzoo.training.state_files.write_bytes", disk_full)
    monkeypatch.setattr("ibzoo.training.checkpoint.write_bytes", disk_full)
    message = r"No space left on device while writing checkpoint .*epoch-0002: the partial folder was removed"
    with pytest.raises(OSError, match=message + r" and the last complete checkpoint .*epoch-0001 kept"):
        manager.save("epoch-0002")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0001", "latest"]
    assert manager.latest() == tmp_path / "epoch-0001"


# --- Training data -------------------------------------------------------------------------------------


@pytest.fixture
def folder_with_a_broken_image(tmp_path) -> Path:
    """An image folder of two classes: three good PNGs and one file that is not an image."""
    images, _ = brightness_images(3, 2, size=8)
    for index, image in enumerate(images):
        (tmp_path / "images" / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "images" / f"class{index % 2}" / f"{index}.png")
    (tmp_path / "images" / "class1" / "broken.png").write_bytes(b"\x89PNG not really")
    return tmp_path / "images"


def _views_of_every_row(folder: Path, skip_bad_images: bool) -> list:
    data = load_image_dataset(DataConfig(dataset=str(folder), eval_split=None), "train")
    views = SeededViews(data, lambda image: [torch.tensor(np.array(image))], 0, skip_bad_images)
    return [views[(0, index)] for index in range(len(views))]


def test_an_undecodable_training_image_is_named(folder_with_a_broken_image):
    with pytest.raises(
        ValueError,
        match=r"Training image \d \(.*class1/broken\.png\) could not be decoded .*--skip-bad-images",
    ):
        _views_of_every_row(folder_with_a_broken_image, skip_bad_images=False)


def test_bad_images_can_be_skipped_by_choice(folder_with_a_broken_image, caplog):
    items = _views_of_every_row(folder_with_a_broken_image, skip_bad_images=True)
    assert len(items) == 4 and all(item["views"][0].shape == (8, 8) for item in items)
    assert re.search(r"Skipping training image \d \(.*broken\.png\): it could not be decoded", caplog.text)


@pytest.mark.parametrize("content", ["class folder of notes", "nothing"])
def test_folders_without_images_are_named(tmp_path, content):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    if content != "nothing":
        (tmp_path / "images" / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(
        FileNotFoundError, match=r"images holds no images that datasets can read: an image folder"
    ):
        load_image_dataset(DataConfig(dataset=str(tmp_path / "images")), "train")


# --- The local Hub (a test utility) refuses what the Hub refuses ---------------------------------------


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\..\\b"])
def test_local_hub_refuses_file_paths_outside_the_repo(tmp_path, path):
    storage = HubStorage(tmp_path)
    storage.create_repo("model", "me/paths")
    entry = storage.put_blob("model", "me/paths", b"data")
    with pytest.raises(HubError, match=r"Invalid file path .*relative, without '\.' or '\.\.'") as error:
        storage.commit("model", "me/paths", "main", "bad path", {path: entry})
    assert error.value.status == 400
    with pytest.raises(HubError, match="Invalid file path"):
        storage.commit("model", "me/paths", "main", "bad deletion", {}, [path])
    assert storage.get_commit("model", "me/paths", "main").files == {}


@pytest.mark.parametrize("branch", ["../main", "/abs", "a..b", "x/", "-x", ".hidden", "v1.lock", "a b"])
def test_local_hub_refuses_bad_branch_names(tmp_path, branch):
    storage = HubStorage(tmp_path)
    storage.create_repo("model", "me/branches")
    with pytest.raises(HubError, match=r"Invalid branch name"):
        storage.create_branch("model", "me/branches", branch)
    assert list(storage.branches("model", "me/branches")) == ["main"]
    storage.create_branch("model", "me/branches", "release/v1.0")  # an ordinary one is fine


def test_local_hub_answers_a_bad_branch_name_with_400(local_hub):
    repo_id = HfApi().create_repo("me/bad-branch", exist_ok=True).repo_id
    with pytest.raises(HfHubHTTPError, match=r"Invalid branch name '\.\./main'") as error:
        HfApi().create_branch(repo_id, branch="../main")
    assert error.value.response.status_code == 400

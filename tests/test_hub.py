"""Publishing and loading checkpoints with the real huggingface_hub client against the local Hub.

The module publishes one "trained" resnet18_cifar_simclr_topk (a small top-k projector) under the zoo's
own repo id, so ``ibzoo.create_model("resnet18_cifar_simclr_topk", pretrained=True)`` goes through the
zoo's pretrained path exactly as it would against huggingface.co.
"""

import dataclasses
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from safetensors import safe_open
from safetensors.torch import load_file

import ibzoo
from helpers.scripts import load_train_script
from ibzoo.hub import push_to_hub, save_pretrained
from ibzoo.loading import CheckpointError, PretrainedWeightsUnavailableError, published_folder
from ibzoo.projectors import ProjectorConfig
from ibzoo.published_source import CONFIG_FILE, PublishedSource
from ibzoo.testing.hub_storage import HubStorage

ZOO_NAME = "resnet18_cifar_simclr_topk"
TAGGED_NAME = f"{ZOO_NAME}.cifar10"
REPO_ID = f"ibzoo/{TAGGED_NAME}"
SMALL_TOPK = ProjectorConfig(hidden_features=(), out_features=None, topk_latents=256, topk_k=16)
RESULTS = {"linear_top1": 91.5, "knn_top1": 89.25}
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _pretend_trained(model: torch.nn.Module) -> torch.nn.Module:
    """Move every weight and BatchNorm statistic away from its initial value, as training would."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        model.train()(torch.randn(4, 3, *model.backbone.pretrained_cfg["input_size"][1:]))
    return model.eval()


def _write_log(path: Path) -> Path:
    rows = [{"step": s, "train/ssl_loss": 5.0 - s / 10, "mutual_information": 3 - s / 20} for s in range(10)]
    for row in rows[::3]:
        row["z1_target_information"] = -4 + row["step"] / 5
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def _equal_state_dicts(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def trained():
    return _pretend_trained(ibzoo.create_pretraining_model(ZOO_NAME, projector_config=SMALL_TOPK))


@pytest.fixture(scope="module")
def folder(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    log_file = _write_log(root / "log.jsonl")
    return save_pretrained(
        trained, root / "model", model_name=TAGGED_NAME, results=RESULTS, log_file=log_file
    )


@pytest.fixture(scope="module")
def published(folder, local_hub):
    return push_to_hub(folder, REPO_ID, commit_message="Publish the test encoder")


@pytest.fixture
def tiny_folder(tmp_path):
    """A small non-zoo checkpoint (timm's test_resnet), for tests that push or break files."""
    model = ibzoo.create_pretraining_model(
        "test_resnet", framework="simclr", projector="mlp", projector_config=ProjectorConfig((32,), 16)
    )
    return save_pretrained(
        _pretend_trained(model), tmp_path / "run" / "model", model_name="test_resnet_simclr"
    )


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_folder_holds_timm_backbone_projector_config_and_card(folder, trained):
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "projector.safetensors", "training_curves.png"
    ]  # fmt: skip
    for name, content in (("model.safetensors", "backbone"), ("projector.safetensors", "projector")):
        with safe_open(str(folder / name), framework="pt") as weights:
            metadata = {"format": "pt", "ibzoo_version": ibzoo.__version__, "model_name": TAGGED_NAME}
            assert weights.metadata() == {**metadata, "content": content}
            assert set(weights.keys()) == set(getattr(trained, content).state_dict())
    config = json.loads((folder / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["num_features"]) == (
        "resnet18_cifar",
        0,
        512,
    )
    assert config["global_pool"] == "avg"
    assert config["pretrained_cfg"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    section = config["ibzoo"]
    assert (section["framework"], section["projector"], section["dataset"]) == (
        "simclr",
        "topk",
        "uoft-cs/cifar10",
    )
    assert ProjectorConfig(**section["projector_config"]) == SMALL_TOPK
    assert section["results"] == RESULTS


def test_tag_sets_the_preprocessing_and_overrides_win(trained, tmp_path):
    folder = save_pretrained(
        trained, tmp_path, model_name=f"{ZOO_NAME}.cifar100", pretrained_cfg=dict(crop_pct=0.9)
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["tag"] == "cifar100" and config["pretrained_cfg"]["crop_pct"] == 0.9
    assert config["pretrained_cfg"]["mean"] == [0.5071, 0.4865, 0.4409]
    assert config["ibzoo"]["dataset"] == "uoft-cs/cifar100"
    with pytest.raises(ValueError, match="JSON values"):
        save_pretrained(trained, tmp_path, model_name=ZOO_NAME, train_config={"optimizer": torch.optim.SGD})


def test_zoo_name_loads_the_published_backbone(published, trained):
    backbone = ibzoo.create_model(ZOO_NAME, pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(IMAGES), trained(IMAGES), rtol=0, atol=0)


def test_plain_timm_loads_the_state_dict_bit_for_bit(published, trained):
    backbone = timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True)
    _equal_state_dicts(backbone.state_dict(), trained.backbone.state_dict())


def test_new_classifier_keeps_every_backbone_weight(published, trained):
    classifier = ibzoo.create_model(ZOO_NAME, pretrained=True, num_classes=10)
    state = classifier.state_dict()
    assert state["fc.weight"].shape == (10, 512)
    _equal_state_dicts(
        {k: v for k, v in state.items() if not k.startswith("fc.")}, trained.backbone.state_dict()
    )


@pytest.mark.parametrize(
    "way",
    [
        "local-dir",
        pytest.param("pretrained_cfg_overlay", marks=pytest.mark.slow),
        pytest.param("checkpoint_path", marks=pytest.mark.slow),
    ],
)
def test_local_copies_load_the_same_backbone(folder, trained, way):
    weights = str(folder / "model.safetensors")
    backbone = {
        "local-dir": lambda: ibzoo.create_model(f"local-dir:{folder}", pretrained=True),
        "pretrained_cfg_overlay": lambda: ibzoo.create_model(
            ZOO_NAME, pretrained=True, pretrained_cfg_overlay=dict(file=weights)
        ),
        "checkpoint_path": lambda: ibzoo.create_model(ZOO_NAME, checkpoint_path=weights),
    }[way]()
    _equal_state_dicts(backbone.state_dict(), trained.backbone.state_dict())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        pytest.param(ZOO_NAME, dict(projector_config=SMALL_TOPK), marks=pytest.mark.slow),  # as offline below
        (ZOO_NAME, {}),  # the checkpoint's own top-k size, not the recipe's 100000 latents
        (f"hf-hub:{REPO_ID}", {}),
        ("local-dir:{folder}", {}),
    ],
)
def test_pretraining_model_round_trip(published, folder, trained, name, kwargs):
    model = ibzoo.create_pretraining_model(name.format(folder=folder), pretrained=True, **kwargs)
    assert model.projector_config == SMALL_TOPK and model.objective_config == trained.objective_config
    _equal_state_dicts(model.state_dict(), trained.state_dict())


@pytest.mark.parametrize(
    ("name", "pretraining"),
    [
        (ZOO_NAME, True),
        (f"hf-hub:{REPO_ID}", True),
        ("local-dir:{folder}", True),
        ("local-dir:{folder}", False),
    ],
)
def test_a_load_reads_config_json_once(published, folder, monkeypatch, name, pretraining):
    """ibzoo reads a checkpoint's config.json once per load (timm reads it once more for an ``hf-hub:`` or
    ``local-dir:`` name, to build the architecture)."""
    fetched = []
    fetch = PublishedSource.fetch

    def counting_fetch(source, filename):
        fetched.append(filename)
        return fetch(source, filename)

    monkeypatch.setattr(PublishedSource, "fetch", counting_fetch)
    create = ibzoo.create_pretraining_model if pretraining else ibzoo.create_model
    create(name.format(folder=folder), pretrained=True)
    assert fetched.count(CONFIG_FILE) == 1


@pytest.mark.slow  # a fresh interpreter imports torch and timm: about 10 s on a shared 2-core machine
def test_loading_a_folder_imports_no_publishing_code(folder):
    """Loading is its own door: the card renderer, the plots and the rest of publishing stay unimported.
    A fresh interpreter, so that what other tests imported does not count."""
    name = f"local-dir:{folder}"
    script = (
        "import sys\n"
        "import ibzoo\n"
        f"ibzoo.create_model({name!r}, pretrained=True)\n"
        f"ibzoo.create_pretraining_model({name!r}, pretrained=True)\n"
        "print(sorted({'ibzoo.hub', 'ibzoo.model_card', 'ibzoo.plotting'} & set(sys.modules)))\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_checkpoint_folder_prefers_the_folder_named(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Neither .*run/config\.json nor .*run/model/config\.json"):
        published_folder(run)
    (run / "model" / "config.json").write_text("{}")
    assert published_folder(run) == run / "model"  # a pretraining run: its Hub-ready model/
    assert published_folder(run / "model") == run / "model"
    (run / "config.json").write_text("{}")
    assert published_folder(run) == run  # a folder that is a checkpoint is taken as it is


def test_training_configuration_stores_projector_and_objective_once(trained, tmp_path):
    """config.json holds the projector and objective configs once; files that hold them twice (the
    training configuration's copies, as earlier versions wrote) still load, with the same card."""
    train_config = {
        "model": TAGGED_NAME,
        "projector": dataclasses.asdict(trained.projector_config),
        "objective": dataclasses.asdict(trained.objective_config),
        "epochs": 3,
    }
    folder = save_pretrained(trained, tmp_path / "once", model_name=TAGGED_NAME, train_config=train_config)
    config = json.loads((folder / "config.json").read_text())
    assert config["ibzoo"]["train_config"] == {"model": TAGGED_NAME, "epochs": 3}
    card = (folder / "README.md").read_text()
    assert "| `projector.topk_latents` | 256 |" in card and "| `epochs` | 3 |" in card

    config["ibzoo"]["train_config"] = json.loads(json.dumps(train_config))  # as earlier versions wrote it
    (folder / "config.json").write_text(json.dumps(config))
    model = ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)
    assert model.projector_config == SMALL_TOPK
    _equal_state_dicts(model.state_dict(), trained.state_dict())


def test_offline_loads_from_the_cache_without_requests(published, trained, local_hub, hf_offline):
    requests_before = len(local_hub.requests)
    with pytest.MonkeyPatch.context() as online:  # the first download happens online
        online.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        ibzoo.create_pretraining_model(ZOO_NAME, pretrained=True, projector_config=SMALL_TOPK)
    requests_online = len(local_hub.requests)
    model = ibzoo.create_pretraining_model(ZOO_NAME, pretrained=True, projector_config=SMALL_TOPK)
    assert requests_online > requests_before and len(local_hub.requests) == requests_online
    _equal_state_dicts(model.state_dict(), trained.state_dict())


def test_card_metadata_parses_back(published):
    card = ModelCard.load(hf_hub_download(REPO_ID, "README.md"))
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-feature-extraction"
    assert {"image-feature-extraction", "self-supervised", "ibzoo", "simclr", "topk"} <= set(card.data.tags)
    assert card.data.datasets == ["uoft-cs/cifar10"]
    metrics = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert metrics == {"linear-probe top-1 accuracy": 91.5, "k-NN top-1 accuracy": 89.25}
    assert f'ibzoo.create_model("{TAGGED_NAME}", pretrained=True)' in card.text
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in card.text
    assert "![Training loss and information plane](training_curves.png)" in card.text


def test_offline_and_not_cached_says_so(local_hub, hf_offline):
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"offline \(HF_HUB_OFFLINE=1\).*local-dir:"):
        ibzoo.create_model("resnet18_cifar_simclr_fsq", pretrained=True)


def test_unpublished_zoo_name_names_the_repo_and_a_mirror(local_hub):
    with pytest.raises(
        PretrainedWeightsUnavailableError,
        match=r"no published weights yet.*HF_ENDPOINT.*"
        r"Tried: Hub repo 'ibzoo/resnet18_cifar_barlow_mlp\.cifar10' at http://127\.0\.0\.1:\d+"
        r" does not exist",
    ):
        ibzoo.create_pretraining_model("resnet18_cifar_barlow_mlp", pretrained=True)


def test_unknown_revision(published):
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"revision 'v9'.*no such revision.*@main"):
        ibzoo.create_pretraining_model(f"hf-hub:{REPO_ID}@v9", pretrained=True)


def test_missing_projector_on_the_hub_and_on_disk(published, folder, tmp_path):
    api = HfApi()
    api.create_branch(REPO_ID, branch="backbone-only", exist_ok=True)
    api.delete_file("projector.safetensors", REPO_ID, revision="backbone-only")
    with pytest.raises(
        PretrainedWeightsUnavailableError, match=r"backbone-only.*has no projector\.safetensors"
    ):
        ibzoo.create_pretraining_model(f"hf-hub:{REPO_ID}@backbone-only", pretrained=True)
    copy = _copy(folder, tmp_path)
    (copy / "projector.safetensors").unlink()
    with pytest.raises(
        PretrainedWeightsUnavailableError, match=r"has no projector\.safetensors.*save_pretrained"
    ):
        ibzoo.create_pretraining_model(f"local-dir:{copy}", pretrained=True)


def test_architecture_mismatch(folder):
    overlay = dict(file=str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"do not fit .*'resnet50_cifar' .*another model"):
        ibzoo.create_model("resnet50_cifar_simclr_topk", pretrained=True, pretrained_cfg_overlay=overlay)


def test_projector_mismatch(folder):
    overlay = dict(file=str(folder / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"projector of resnet18_cifar_simclr_topk\.cifar10.*topk_latents=256"
    ):
        ibzoo.create_pretraining_model(
            "resnet18_cifar_simclr_mlp", pretrained=True, pretrained_cfg_overlay=overlay
        )


@pytest.mark.parametrize("file_name", ["model.safetensors", "projector.safetensors"])
def test_truncated_weights(folder, tmp_path, file_name):
    copy = _copy(folder, tmp_path)
    weights = copy / file_name
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=rf"{file_name} is truncated or corrupt .*Re-save the checkpoint"
    ):
        ibzoo.create_pretraining_model(f"local-dir:{copy}", pretrained=True)


def test_newer_ibzoo_version_is_refused(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["ibzoo"]["version"] = "99.1.0"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"ibzoo 99\.1\.0, newer than.*ibzoo>=99\.1"):
        ibzoo.create_pretraining_model(f"local-dir:{copy}", pretrained=True)


def test_push_to_a_new_branch_with_the_cli(tiny_folder, local_hub, monkeypatch):
    run_dir = tiny_folder.parent  # a pretraining run keeps its Hub folder in DIR/model
    monkeypatch.setattr(
        sys, "argv", ["push_to_hub.py", str(run_dir), "--repo-id", "me/tiny", "--revision", "v2"]
    )
    runpy.run_path(str(Path(__file__).parents[1] / "train" / "push_to_hub.py"), run_name="__main__")
    assert (
        local_hub.repo_files("me/tiny", "v2")["model.safetensors"]
        == (tiny_folder / "model.safetensors").read_bytes()
    )
    model = ibzoo.create_pretraining_model("hf-hub:me/tiny@v2", pretrained=True)
    _equal_state_dicts(
        model.state_dict(),
        ibzoo.create_pretraining_model(f"local-dir:{tiny_folder}", pretrained=True).state_dict(),
    )


def test_push_cli_checks_every_folder_before_uploading(folder, tiny_folder, local_hub, capsys):
    push = load_train_script("push_to_hub")
    requests = len(local_hub.requests)
    with pytest.raises(SystemExit, match="test_resnet_simclr, which has no zoo repo: pass --repo-id"):
        push.main([str(folder), str(tiny_folder)])
    with pytest.raises(SystemExit):
        push.main([str(folder), str(tiny_folder), "--repo-id", "me/both"])
    assert "--repo-id names one repo, but 2 folders were given" in capsys.readouterr().err
    assert len(local_hub.requests) == requests


def test_failed_push_leaves_the_folder_intact(tiny_folder, local_hub, monkeypatch):
    before = _digests(tiny_folder)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(HubStorage, "commit", fail)  # the server answers the commit with a 500
    monkeypatch.setattr(
        "huggingface_hub.utils._http.time.sleep", lambda seconds: None
    )  # skip the retry back-off
    with pytest.raises(ConnectionError, match=r"me/broken.*500.*The folder is unchanged"):
        push_to_hub(tiny_folder, "me/broken")
    assert _digests(tiny_folder) == before
    assert local_hub.repo_files("me/broken") == {}
    local_hub.stop()
    try:
        with pytest.raises(ConnectionError, match=r"me/broken.*push it again"):
            push_to_hub(tiny_folder, "me/broken")
    finally:
        local_hub.start()
    assert _digests(tiny_folder) == before


def test_push_needs_a_saved_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*save_pretrained"):
        push_to_hub(tmp_path, "me/empty")


@pytest.mark.parametrize("framework", ["byol", "mocov3"])
def test_momentum_framework_folder_continues_with_its_predictor_and_target(framework, tmp_path):
    """model.safetensors stays the backbone alone; projector.safetensors carries the predictor and the EMA
    target too, so that create_pretraining_model(..., pretrained=True) continues training exactly."""
    name = f"resnet18_cifar_{framework}_fsq"
    info = ibzoo.model_info(name)
    projector = dataclasses.replace(info.projector_config, hidden_features=(32,), out_features=16)
    objective = dataclasses.replace(info.objective_config, predictor_hidden=8)
    trained = _pretend_trained(
        ibzoo.create_pretraining_model(name, projector_config=projector, objective_config=objective)
    )
    folder = save_pretrained(trained, tmp_path / "model", model_name=name)
    heads = load_file(folder / "projector.safetensors")
    assert {key.split(".")[0] for key in heads} == {
        "projector",
        "predictor",
        "target_backbone",
        "target_projector",
    }
    assert load_file(folder / "model.safetensors").keys() == trained.backbone.state_dict().keys()
    loaded = ibzoo.create_pretraining_model(f"local-dir:{folder}", pretrained=True)
    assert loaded.objective_config == trained.objective_config
    _equal_state_dicts(loaded.state_dict(), trained.state_dict())
    card = (folder / "README.md").read_text()
    assert "with the predictor and the momentum (EMA) target" in card

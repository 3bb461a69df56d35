import dataclasses

import pytest
from huggingface_hub import ModelCard

import ibzoo
from ibzoo.model_card import render_model_card
from ibzoo.models.catalog import get_model_info


def _config(**ibzoo_section):
    info = ibzoo.model_info("resnet18_cifar_barlow_fsq")
    section = {
        "version": "0.1.0",
        "model_name": "resnet18_cifar_barlow_fsq.cifar100",
        "framework": "barlow",
        "projector": "fsq",
        "projector_config": dataclasses.asdict(info.projector_config),
        "objective_config": dataclasses.asdict(info.objective_config),
        "train_config": None,
        "dataset": "uoft-cs/cifar100",
        "results": {"linear_top1": 70.5, "knn_top1": 66.0},
    }
    return {
        "architecture": "resnet18_cifar",
        "num_classes": 0,
        "num_features": 512,
        "pretrained_cfg": {"license": "apache-2.0"},
        "ibzoo": {**section, **ibzoo_section},
    }


def test_card_metadata_round_trips_through_model_card(tmp_path):
    card = render_model_card(_config(), repo_id="ibzoo/resnet18_cifar_barlow_fsq.cifar100")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "timm" and loaded.data.license == "apache-2.0"
    assert loaded.data.tags == [
        "image-feature-extraction",
        "timm",
        "self-supervised",
        "ibzoo",
        "barlow",
        "fsq",
    ]
    assert loaded.data.datasets == ["uoft-cs/cifar100"]
    results = {(r.task_type, r.dataset_type, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert results == {
        ("image-classification", "uoft-cs/cifar100", "linear-probe top-1 accuracy"): 70.5,
        ("image-classification", "uoft-cs/cifar100", "k-NN top-1 accuracy"): 66.0,
    }
    assert "Barlow Twins" in loaded.text and "quantized to 3 levels per dimension" in loaded.text
    assert "| `projector.fsq_levels` | 3 |" in loaded.text
    assert "Ouyang, Zhuo" in loaded.text and "training_curves.png" not in loaded.text


def test_card_of_an_unevaluated_run_on_local_data():
    train_config = {"data": {"dataset": "/data/my-images"}, "optimizer": {"lr": 0.3, "name": "lars"}}
    config = _config(
        model_name="my_encoder", dataset="/data/my-images", results=None, train_config=train_config
    )
    card = render_model_card(config, repo_id="me/my-encoder", curves_file="training_curves.png")
    assert card.data.datasets is None and card.data.eval_results is None  # a path is not a Hub dataset
    assert 'ibzoo.create_model("hf-hub:me/my-encoder", pretrained=True)' in card.text
    assert "Not evaluated yet." in card.text
    assert "| `optimizer.lr` | 0.3 |" in card.text and "![Training loss" in card.text


def test_benchmark_comparison_section():
    table = "| framework | projector |\n|---|---|\n| Barlow Twins | fsq |\n"
    description = "Seed 0 of the `fsq` row by `make bench`\n(train/bench_x.py), 2 seeds per row."
    benchmark = {"description": description, "table": table}
    card = render_model_card(_config(benchmark=benchmark), repo_id="ibzoo/resnet18_cifar_barlow_fsq.cifar100")
    section = card.text.split("## Compared with the other projectors", 1)[1]
    # On one line, code spans kept with the spaces around them, the rest escaped.
    expected = "Seed 0 of the `fsq` row by `make bench` (train/bench\\_x.py), 2 seeds per row."
    assert section.lstrip().startswith(expected)
    assert table in section and section.index(table) < section.index("## Citation")
    assert "## Compared with" not in render_model_card(_config(), repo_id="me/x").text


def test_missing_template_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="hub_cards"):
        render_model_card(_config(), repo_id="me/x", template=tmp_path / "hub_cards" / "nope.md")


def test_a_card_names_ibzoos_deviations_from_the_reference_heads():
    def card_of(name: str) -> str:
        info = get_model_info(name, withheld=True)  # a withheld pair's card, too
        config = _config(
            model_name=name,
            framework=info.framework,
            projector=info.projector,
            projector_config=dataclasses.asdict(info.projector_config),
        )
        return render_model_card(config, repo_id=f"ibzoo/{name}").text

    tied = "encoder and decoder tied at initialization"
    assert tied in card_of("resnet18_cifar_barlow_topk") and tied in card_of("resnet18_cifar_barlow_topk_fsq")
    assert "standardized over the batch" in card_of("resnet18_cifar_barlow_topk_fsq")
    simclr = card_of("resnet18_cifar_simclr_topk")  # the reference's init
    assert "autoencoder projector (1000 of 100000 latents active)" in simclr and tied not in simclr

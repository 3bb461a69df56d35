import dataclasses
import json
from pathlib import Path

import pytest

import ibzoo
from ibzoo.models.datasets import DATASETS
from ibzoo.training.checkpoint import check_output_dir, write_run_config
from ibzoo.training.config import (
    RESUMABLE_CHANGES,
    PretrainConfig,
    parse_pretrain_args,
    upgraded_run_config,
)

RECIPES = Path(__file__).parents[2] / "train" / "recipes"
MODEL = "resnet18_cifar_simclr_topk"
REQUIRED = ["--model", MODEL, "--data.dataset", "data/tiny", "--output-dir", "runs/x"]


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_model_recipe():
    config = parse_pretrain_args(REQUIRED)
    info = ibzoo.model_info(MODEL)
    assert config.projector == info.projector_config and config.objective == info.objective_config
    assert config.optimizer == info.optimizer_config
    assert (config.epochs, config.batch_size, config.sync_batchnorm) == (200, 256, True)
    assert config.online_classifier_lr == info.online_classifier_lr == 0.1
    # A dataset that is none of the model's tags: the default tag's (CIFAR-10) preprocessing.
    assert config.pretrained_tag is None and config.hub_model_name == MODEL
    assert (config.image_size, config.mean, config.std) == (
        32,
        DATASETS["cifar10"].mean,
        DATASETS["cifar10"].std,
    )
    # The recipe's objects are copied, not shared: editing the run's config leaves the zoo alone.
    config.optimizer.lr = 9.0
    assert ibzoo.model_info(MODEL).optimizer_config.lr == 0.4


def test_a_run_of_a_zoo_tag_takes_the_tags_recipe():
    """resnet18 on Fashion-MNIST (named by tag or by dataset) trains with the CIFAR recipe at 32 px."""
    by_tag = parse_pretrain_args(["--model", "resnet18_simclr_fsq.fmnist", *REQUIRED[2:]])
    by_data = parse_pretrain_args(
        ["--model", "resnet18_simclr_fsq", "--data.dataset", DATASETS["fmnist"].hf_dataset, *REQUIRED[4:]]
    )
    recipe = ibzoo.model_info("resnet18_simclr_fsq.fmnist")
    for config in (by_tag, by_data):
        assert config.hub_model_name == "resnet18_simclr_fsq.fmnist" and config.image_size == 32
        assert (config.projector, config.optimizer) == (recipe.projector_config, recipe.optimizer_config)
        assert (
            config.projector.out_features == 256 and config.optimizer.lr == 0.4 and not config.zero_init_last
        )
    untagged = parse_pretrain_args(["--model", "resnet18_simclr_fsq", *REQUIRED[2:], "--zero-init-last"])
    assert untagged.projector.out_features == 512 and untagged.optimizer.lr == 0.3 and untagged.zero_init_last
    assert "zero_init_last" in untagged.identity()  # part of what a run is: not changeable on resume


def test_precedence_model_recipe_then_yaml_then_command_line(tmp_path):
    recipe = write_yaml(
        tmp_path,
        "model: resnet18_cifar_simclr_mlp\n"
        "epochs: 7\nseed: 3\n"
        "optimizer: {lr: 0.1, warmup_epochs: 2}\n"
        "projector: {out_features: 64}\n"
        "data: {dataset: uoft-cs/cifar100, image_column: img, label_column: fine_label}\n"
        "output_dir: runs/from-yaml\n",
    )
    argv = ["--recipe", str(recipe), "--model", MODEL, "--epochs", "5", "--optimizer.lr", "0.2"]
    config = parse_pretrain_args([*argv, "--projector.topk-latents", "64", "--projector.topk-k", "8"])
    assert config.model == MODEL  # command line over YAML
    assert (config.epochs, config.seed, config.output_dir) == (5, 3, "runs/from-yaml")
    # Nested settings merge field by field: YAML's warmup stays, the command line's lr wins, the rest is the
    # model's recipe (LARS, weight decay); YAML's out_features applies to the topk model's projector too.
    expected_optimizer = dataclasses.replace(
        ibzoo.model_info(MODEL).optimizer_config, lr=0.2, warmup_epochs=2
    )
    assert config.optimizer == expected_optimizer
    assert (config.projector.topk_latents, config.projector.topk_k, config.projector.out_features) == (
        64,
        8,
        64,
    )
    assert config.data.image_column == "img" and config.data.label_column == "fine_label"
    # The dataset is the model's cifar100 tag: its preprocessing, and the tag in the published name.
    assert config.pretrained_tag == "cifar100" and config.hub_model_name == f"{MODEL}.cifar100"
    assert config.mean == DATASETS["cifar100"].mean


def test_flag_kinds_bool_none_tuple_and_choices():
    config = parse_pretrain_args(
        [
            *REQUIRED,
            "--no-online-classifier",
            "--sync-batchnorm",
            "--max-steps",
            "none",
            "--projector.hidden-features",
            "--projector.out-features",
            "none",
            "--projector.topk-latents",
            "32",
            "--projector.topk-k",
            "4",
            "--log-with",
            "--mixed-precision",
            "bf16",
            "--mean",
            "0.5",
            "0.5",
            "0.5",
        ]
    )
    assert config.online_classifier is False and config.sync_batchnorm is True and config.max_steps is None
    assert config.projector.hidden_features == () and config.projector.out_features is None
    assert config.log_with == () and config.mixed_precision == "bf16" and config.mean == (0.5, 0.5, 0.5)
    with pytest.raises(SystemExit):
        parse_pretrain_args([*REQUIRED, "--mixed-precision", "fp8"])
    with pytest.raises(SystemExit):
        parse_pretrain_args([*REQUIRED, "--epochs", "two"])


def test_speed_flags_are_off_by_default_and_only_compile_may_change_on_resume():
    default = parse_pretrain_args(REQUIRED)
    assert default.compile is False and default.augment_on_device is False
    config = parse_pretrain_args([*REQUIRED, "--compile", "--augment-on-device"])
    assert config.compile is True and config.augment_on_device is True
    # Compiling changes how the same model trains; on-device augmentation draws other views.
    assert dataclasses.replace(default, compile=True).identity() == default.identity()
    assert dataclasses.replace(default, augment_on_device=True).identity() != default.identity()
    assert parse_pretrain_args([*REQUIRED, "--no-compile"]).compile is False


def test_resolved_config_round_trips_through_json():
    config = parse_pretrain_args([*REQUIRED, "--projector.topk-latents", "64", "--projector.topk-k", "8"])
    saved = json.loads(json.dumps(config.to_dict()))
    from ibzoo.training.cli import from_dict

    assert from_dict(PretrainConfig, saved) == config


def test_identity_ignores_only_resumable_changes():
    config = parse_pretrain_args(REQUIRED)
    resumed = dataclasses.replace(
        config, max_steps=10, max_epochs_this_run=1, num_workers=0, output_dir="moved"
    )
    assert resumed.identity() == config.identity()
    assert set(config.to_dict()) - set(config.identity()) == RESUMABLE_CHANGES
    assert dataclasses.replace(config, seed=1).identity() != config.identity()


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        (["--data.dataset", "d", "--output-dir", "o"], ValueError, "pass --model"),
        (["--model", MODEL, "--output-dir", "o"], ValueError, "pass --data.dataset"),
        (
            ["--model", "resnet18_cifar_simclr_topq", "--data.dataset", "d", "--output-dir", "o"],
            KeyError,
            "topk",
        ),
        ([*REQUIRED, "--objective.framework", "barlow"], ValueError, "simclr model"),
        ([*REQUIRED, "--epochs", "5"], ValueError, "warmup_epochs=10 exceeds epochs=5"),
        ([*REQUIRED, "--batch-size", "0"], ValueError, "batch_size=0 must be a positive integer"),
        ([*REQUIRED, "--projector.topk-latents", "64"], ValueError, "exceeds topk_latents"),
        ([*REQUIRED, "--push-to-hub", "no-org"], ValueError, "ORG/NAME"),
        ([*REQUIRED, "--resume", "/does/not/exist"], FileNotFoundError, "checkpoint folder"),
        (
            ["--model", f"{MODEL}.in100", "--data.dataset", "d", "--output-dir", "o"],
            ValueError,
            "unknown tag",
        ),
    ],
)
def test_invalid_settings_name_the_fix(argv, error, match):
    with pytest.raises(error, match=match):
        parse_pretrain_args(argv)


def test_yaml_errors_name_the_file_and_the_key(tmp_path):
    recipe = write_yaml(tmp_path, "optimiser: {lr: 0.1}\n")
    with pytest.raises(
        KeyError, match=r"recipe .*recipe.yaml: unknown setting 'optimiser'; did you mean 'optimizer'"
    ):
        parse_pretrain_args(["--recipe", str(recipe), *REQUIRED])
    recipe = write_yaml(tmp_path, "optimizer: {learning_rate: 0.1}\n")
    with pytest.raises(KeyError, match=r"'optimizer.learning_rate'"):
        parse_pretrain_args(["--recipe", str(recipe), *REQUIRED])
    recipe = write_yaml(tmp_path, "- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        parse_pretrain_args(["--recipe", str(recipe), *REQUIRED])
    with pytest.raises(FileNotFoundError, match="--recipe"):
        parse_pretrain_args(["--recipe", str(tmp_path / "missing.yaml"), *REQUIRED])


@pytest.mark.parametrize(("processes", "accumulation", "expected"), [(1, 1, 256), (8, 1, 32), (2, 4, 32)])
def test_global_batch_is_split_over_processes_and_accumulation(processes, accumulation, expected):
    assert parse_pretrain_args(REQUIRED).per_process_batch_size(processes, accumulation) == expected


def test_indivisible_global_batch_suggests_sizes():
    config = parse_pretrain_args([*REQUIRED, "--batch-size", "100"])
    with pytest.raises(
        ValueError, match=r"3 processes x 1 accumulation steps = 3; pass e.g. --batch-size 102 or 99"
    ):
        config.per_process_batch_size(3, 1)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.stem)
def test_shipped_recipes_resolve_for_every_zoo_model_of_their_framework(recipe):
    framework, tag = recipe.stem.split("_")
    configs = [
        parse_pretrain_args(["--recipe", str(recipe), "--model", name, "--output-dir", "o"])
        for name in ibzoo.list_models(f"*_{framework}_*")
        if tag in ibzoo.model_info(name).pretrained_tags
    ]
    assert configs, f"no zoo model has the {tag} tag for {recipe.name}"
    for config in configs:
        # Each recipe names its dataset, whose tag then sets the preprocessing and the published name.
        assert config.data.dataset == DATASETS[tag].hf_dataset and config.pretrained_tag == tag
        assert config.hub_model_name == f"{config.model}.{tag}"
        assert (config.image_size, config.mean) == (DATASETS[tag].input_size[-1], DATASETS[tag].mean)


def test_recipes_cover_every_framework_and_tag_of_the_zoo():
    pairs = {
        (ibzoo.model_info(n).framework, t)
        for n in ibzoo.list_models()
        for t in ibzoo.model_info(n).pretrained_tags
    }
    assert {tuple(path.stem.split("_")) for path in RECIPES.glob("*.yaml")} == pairs


def test_a_run_an_older_ibzoo_started_still_resumes_and_another_run_is_still_refused(tmp_path):
    argv = [
        "--model",
        "resnet18_barlow_mlp.fmnist",
        "--data.dataset",
        "data/f",
        "--output-dir",
        str(tmp_path),
    ]
    config = parse_pretrain_args(argv)
    older = config.to_dict()
    # Before the framework files ibzoo recorded every framework's settings, and ProjectorConfig had no
    # bias / out_batch_norm fields.
    older["objective"].update(temperature=0.2)
    del older["projector"]["bias"], older["projector"]["out_batch_norm"]
    write_run_config(tmp_path, older)
    with pytest.raises(ValueError, match=r"objective.temperature: 0.2 -> None; projector.bias: None -> True"):
        check_output_dir(tmp_path, config.identity(), "auto")  # compared as written
    check_output_dir(tmp_path, config.identity(), "auto", upgrade=upgraded_run_config)
    changed = parse_pretrain_args([*argv, "--optimizer.lr", "0.1", "--no-projector.bias"])
    with pytest.raises(ValueError, match=r"optimizer.lr: 0.3 -> 0.1; projector.bias: True -> False"):
        check_output_dir(tmp_path, changed.identity(), "auto", upgrade=upgraded_run_config)

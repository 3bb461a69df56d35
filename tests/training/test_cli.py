import argparse
import re

import pytest

from helpers.scripts import load_train_script
from ibzoo.data import DataConfig
from ibzoo.training.cli import (
    add_data_arguments,
    add_dataclass_arguments,
    add_model_source_arguments,
    data_config_from_args,
    model_source,
    per_process_batch_size,
)
from ibzoo.training.config import PretrainConfig, parse_pretrain_args


def shared_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_model_source_arguments(parser)
    add_data_arguments(parser)
    return parser


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_data_flags_are_pretraining_flags():
    pretrain = argparse.ArgumentParser()
    add_dataclass_arguments(pretrain, PretrainConfig)
    expected = {option for option in option_strings(pretrain) if option.startswith("--data.")}
    got = {option for option in option_strings(shared_parser()) if option.startswith("--data.")}
    assert got == expected and "--data.image-column" in got


def test_data_config_from_flags():
    argv = ["--model", "m", "--data.dataset", "org/set", "--data.name", "plain", "--data.eval-split", "val"]
    args = shared_parser().parse_args([*argv, "--data.image-column", "img", "--data.label-column", "y"])
    expected = DataConfig(
        dataset="org/set", eval_split="val", image_column="img", label_column="y", name="plain"
    )
    assert data_config_from_args(args) == expected
    # Flags not given keep DataConfig's defaults.
    args = shared_parser().parse_args(["--model", "m", "--data.dataset", "d"])
    assert data_config_from_args(args) == DataConfig(dataset="d")


def test_data_flags_are_checked(capsys):
    with pytest.raises(SystemExit):
        shared_parser().parse_args(["--model", "m"])
    assert "the following arguments are required: --data.dataset" in capsys.readouterr().err
    args = shared_parser().parse_args(["--model", "m", "--data.dataset", "d", "--data.eval-split", "none"])
    with pytest.raises(ValueError, match=r"--data\.eval-split none"):
        data_config_from_args(args)
    argv = ["--model", "m", "--data.dataset", "d", "--data.image-column", "x", "--data.label-column", "x"]
    with pytest.raises(ValueError, match="two different columns"):
        data_config_from_args(shared_parser().parse_args(argv))


def test_model_name_is_pretrained_unless_random_init():
    args = shared_parser().parse_args(["--model", "m.tag", "--data.dataset", "d"])
    assert model_source(args) == ("m.tag", True)
    args = shared_parser().parse_args(["--model", "hf-hub:org/m", "--random-init", "--data.dataset", "d"])
    assert model_source(args) == ("hf-hub:org/m", False)


@pytest.mark.parametrize("flag", ["--model-dir", "--checkpoint"], ids=["model-dir", "older-name"])
def test_model_dir_loads_its_weights(tmp_path, flag):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    args = shared_parser().parse_args([flag, str(tmp_path / "run"), "--data.dataset", "d"])
    assert model_source(args) == (f"local-dir:{(tmp_path / 'run' / 'model').resolve()}", True)

    args = shared_parser().parse_args([flag, str(tmp_path), "--random-init", "--data.dataset", "d"])
    with pytest.raises(ValueError, match="--random-init goes with --model"):
        model_source(args)


@pytest.mark.parametrize(
    "argv",
    [["--data.dataset", "d"], ["--model-dir", "run", "--model", "m", "--data.dataset", "d"]],
    ids=["no-source", "two-sources"],
)
def test_exactly_one_model_source(argv):
    with pytest.raises(SystemExit):
        shared_parser().parse_args(argv)


def test_required_names_fields():
    with pytest.raises(KeyError, match="did you mean 'dataset'"):
        add_dataclass_arguments(argparse.ArgumentParser(), DataConfig, required=("datset",))


def test_every_script_shares_the_run_flags_and_their_meanings(capsys):
    """--batch-size is the GLOBAL batch in pretrain.py, evaluate.py and finetune.py alike."""
    parsers = {
        "pretrain": parse_pretrain_args,
        "evaluate": load_train_script("evaluate").parse_args,
        "finetune": load_train_script("finetune").parse_args,
    }
    for script, parse in parsers.items():
        with pytest.raises(SystemExit):
            parse(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert re.search(r"--batch-size [A-Z_]+ GLOBAL batch", text), script
        for flag in ("--num-workers", "--seed", "--cpu", "--data.dataset"):
            assert flag in text, (script, flag)


def test_per_process_batch_size_splits_the_global_batch():
    assert per_process_batch_size(256, 4) == 64 and per_process_batch_size(256, 2, 4) == 32
    with pytest.raises(ValueError, match=r"--batch-size 100 is the global batch .* --batch-size 102 or 99\."):
        per_process_batch_size(100, 3)

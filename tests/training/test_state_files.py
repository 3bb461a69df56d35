import math

import pytest
import torch

from ibzoo.training.state_files import load_state_files, save_state_files


def test_state_round_trips_with_tuples_integer_keys_tensors_and_special_floats(tmp_path):
    state = {
        "state": {0: {"momentum_buffer": torch.arange(6.0).view(2, 3), "step": torch.tensor(3.0)}},
        "param_groups": [
            {"params": [0], "lr": 0.1, "betas": (0.9, 0.999), "nesterov": False, "foreach": None}
        ],
        "python": (3, tuple(range(5)), None),
        "scale": math.inf,
        "__tuple__": "a key that looks like a marker",
    }
    save_state_files(state, tmp_path, "optimizer")
    loaded = load_state_files(tmp_path, "optimizer")
    torch.testing.assert_close(loaded["state"][0]["momentum_buffer"], state["state"][0]["momentum_buffer"])
    assert loaded["state"][0]["step"].shape == () and isinstance(loaded["param_groups"][0]["betas"], tuple)
    assert loaded["python"] == state["python"] and loaded["scale"] == math.inf
    assert loaded["__tuple__"] == state["__tuple__"] and list(loaded["state"]) == [0]


def test_state_without_tensors_is_one_json_file(tmp_path):
    save_state_files({"last_epoch": 3, "base_lrs": [0.1]}, tmp_path, "scheduler")
    assert [path.name for path in tmp_path.iterdir()] == ["scheduler.json"]


def test_values_that_are_not_data_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match=r"scheduler\.lr_lambda is a function; run state is saved as JSON"):
        save_state_files({"lr_lambda": lambda step: step}, tmp_path, "scheduler")

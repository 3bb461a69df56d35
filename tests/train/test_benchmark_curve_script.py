"""train/benchmark_curve.py end to end on a synthetic Fashion-MNIST: a curve scored on the way, resumed."""

import json

import pytest
import torch
from safetensors.torch import save_file

from helpers.scripts import load_train_script
from ibzoo.models.catalog import WITHHELD
from ibzoo.models.zoo import backbone_source
from ibzoo.training.checkpoint import _BACKBONE_PREFIX

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow  # four pretraining subprocesses (1 epoch of 2 steps each) and four evaluations
def test_curve_scores_each_point_once_and_resumes(idx_dir, tmp_path, monkeypatch):
    script = load_train_script("benchmark_curve")
    output = tmp_path / "bench"
    argv = ["--output-dir", str(output), "--budget", "quick", "--idx-dir", str(idx_dir), "--cpu"]
    argv += ["--num-workers", "0", "--cell", "byol/mlp", "--epochs", "3"]
    curves = json.loads(script.main(argv).read_text())
    (curve,) = curves["curves"]
    assert (curve["framework"], curve["projector"], curve["epochs"]) == ("byol", "mlp", 3)
    # Points 1, 2 and the end, each scored on the newest checkpoint of one 3-epoch schedule (2 steps each).
    assert [(p["epoch"], p["step"]) for p in curve["points"]] == [(1, 2), (2, 4), (3, 6)]
    assert all(0 <= p["linear_top1"] <= 100 and p["machine"].startswith("cpu (") for p in curve["points"])
    assert (output / "curves.png").stat().st_size > 0
    run = output / "curves" / "byol_mlp_3ep" / "seed0"
    assert json.loads((run / "run_config.json").read_text())["epochs"] == 3 and (run / "model").is_dir()

    # Again: nothing is trained or scored twice.
    monkeypatch.setattr(script, "pretrain", lambda *a, **k: pytest.fail("a finished point was retrained"))
    assert json.loads(script.main(argv).read_text()) == curves
    # Another cell's curve in the same folder (the two may run at once) keeps this one's points.
    monkeypatch.undo()
    both = json.loads(script.main([*argv[:-4], "--cell", "simclr/mlp", "--epochs", "1"]).read_text())
    assert [(c["framework"], len(c["points"])) for c in both["curves"]] == [("byol", 3), ("simclr", 1)]
    # Another budget's settings are refused rather than mixed in.
    with pytest.raises(ValueError, match="holds curves with settings"):
        script.main([*argv[:3], "full", *argv[4:]])


def test_an_older_curves_file_is_read_with_each_curves_warm_up(tmp_path):
    """Before the warm-up was in each curve's key it was one setting of the file (or none at all)."""
    script = load_train_script("benchmark_curve")
    older = {"settings": {"image_size": 32, "reference_warmup_steps": {"vicreg": 1950}}, "curves": []}
    older["curves"] = [
        dict(framework=f, projector="mlp", seed=0, epochs=1, points=[]) for f in ("vicreg", "byol")
    ]
    (tmp_path / "curves.json").write_text(json.dumps(older))
    curves = script.read_curves(tmp_path / "curves.json")
    assert curves["settings"] == {"image_size": 32}
    assert [c["reference_warmup_steps"] for c in curves["curves"]] == [1950, None]


def test_a_curve_whose_run_is_not_there_is_refused_rather_than_restarted(idx_dir, tmp_path):
    """Points of a curve without its run folder (an older ibzoo's folder name, or a deleted run): a fresh
    run would put two runs' points in one curve."""
    script = load_train_script("benchmark_curve")
    output = tmp_path / "bench"
    argv = ["--output-dir", str(output), "--budget", "quick", "--idx-dir", str(idx_dir), "--cpu"]
    argv += ["--cell", "byol/mlp", "--epochs", "3"]
    settings = {
        k: v for k, v in script.BUDGETS["quick"].items() if k not in ("epochs", "main_seeds", "seeds")
    }
    shared = {k: v for k, v in settings.items() if k != "reference_warmup_steps"}
    key = dict(framework="byol", projector="mlp", seed=0, epochs=3, reference_warmup_steps=None)
    output.mkdir()
    script.record_point(output / "curves.json", shared, key, dict(epoch=1, step=2, linear_top1=50.0))
    with pytest.raises(
        ValueError, match=r"holds epochs \[1\] of this curve, but .*byol_mlp_3ep/seed0 has no"
    ):
        script.main(argv)


@pytest.mark.parametrize("name", sorted(WITHHELD)[:1])
def test_a_withheld_pairs_checkpoint_is_scored_like_a_zoo_names(name, tmp_path):
    """A curve of the benchmark's withheld row (trained with --experiment) loads its checkpoints' backbone
    although timm does not know the name."""
    script = load_train_script("benchmark_curve")
    architecture, backbone_args = backbone_source(f"{name}.fmnist")
    trained = script.ibzoo.create_model(architecture, **backbone_args)
    torch.nn.init.normal_(trained.conv1.weight)  # not what a fresh backbone has
    weights = {_BACKBONE_PREFIX + key: value.contiguous() for key, value in trained.state_dict().items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    backbone = script.checkpoint_backbone(tmp_path, f"{name}.fmnist", 32)
    assert torch.equal(backbone.conv1.weight, trained.conv1.weight) and backbone.num_classes == 0
    assert backbone.pretrained_cfg["input_size"] == (3, 32, 32) and backbone.pretrained_cfg["tag"] == "fmnist"

"""train/benchmark_fmnist.py end to end on a synthetic Fashion-MNIST: the results, the table, resuming,
and the Hub folders it writes loading by their zoo name (``*.fmnist``) from the local Hub."""

import json
import shutil
import types
from pathlib import Path

import pytest
import torch

import ibzoo
from benchmark_table import find_run
from helpers.scripts import load_train_script
from ibzoo.models.catalog import WITHHELD, get_model_info

NAME = "resnet18_simclr_mlp"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow  # one pretraining subprocess (2 steps at 16 px) and three evaluations: 20-40 s on 2 cores
def test_quick_benchmark_resumes_and_publishes_loadable_models(idx_dir, tmp_path, local_hub, monkeypatch):
    script = load_train_script("benchmark_fmnist")
    # One zoo cell beside the two references keeps the end-to-end run short; the full list is tested below.
    monkeypatch.setattr(script, "CELLS", (script.Cell("simclr", "mlp", "mlp", main=True),))
    # A 2-step run on 64 images decides nothing about the reference; the publishing rule is tested below.
    monkeypatch.setattr(script, "earns_its_place", lambda results, cell: True)
    output = tmp_path / "bench"
    argv = ["--output-dir", str(output), "--budget", "quick", "--idx-dir", str(idx_dir)]
    argv += ["--num-workers", "0", "--cpu"]
    results = json.loads(script.main(argv).read_text())

    runs = {(r["framework"], r["projector"], r["seed"]): r for r in results["runs"]}
    assert runs.keys() == {("none", "random_init", 0), ("none", "random_init_bn", 0), ("simclr", "mlp", 0)}
    assert all(r["num_train"] == r["num_test"] == 64 and 0 <= r["linear_top1"] <= 100 for r in runs.values())
    assert all(r["linear_l2"] is not None for r in runs.values())  # chosen on held-out training images
    # Each run names the machine it ran on (a table may be finished on another one).
    assert all(r["machine"].startswith("cpu (") and "torch" in r["machine"] for r in runs.values())
    trained = runs[("simclr", "mlp", 0)]
    assert trained["final_ssl_loss"] > 0 and trained["final_mi_term"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < trained["pretrain_seconds"] < trained["train_seconds"]  # the steps, not the subprocess
    assert results["settings"]["budget"] == "quick" and results["wall_seconds"] > 0
    table, margins = (output / "results.md").read_text().split("\n\n", 1)
    table += "\n"
    assert "| SimCLR | mlp | 0 |" in table and "| — | random init (γ = 1, BN recalibrated) | 0 |" in table
    margin = trained["linear_top1"] - runs[("none", "random_init_bn", 0)]["linear_top1"]
    assert f"- SimCLR mlp: {margin:+.2f} points" in margins

    folder = output / "hub" / "ibzoo" / f"{NAME}.fmnist"
    config = json.loads((folder / "config.json").read_text())
    assert config["ibzoo"]["results"] == {key: trained[key] for key in ("linear_top1", "knn_top1")}
    assert config["ibzoo"]["dataset"] == "zalando-datasets/fashion_mnist"
    assert config["ibzoo"]["train_config"]["data"]["dataset"] == "zalando-datasets/fashion_mnist"
    assert config["ibzoo"]["train_config"]["model"] == f"{NAME}.fmnist"
    assert "output_dir" not in config["ibzoo"]["train_config"]
    card = (folder / "README.md").read_text()
    # The card holds the whole table, its Markdown specials (_ [ ]) escaped.
    assert table in card.replace("\\", "") and "seed 0 of the row SimCLR / mlp" in card
    # The description reads as written: code spans with their spaces, λ per framework by name.
    assert "Every `resnet18_*.fmnist` model was pretrained by `make bench-fmnist` (train" in card
    assert (
        "mlp\\_mi with λ = 0.1 (SimCLR), 5 (Barlow Twins), 0.01 (BYOL), 0.8 (VICReg) and 0.08 (MoCo v3);"
        in card
    )
    # The card states the checkpoint's own margin over the fair reference, and warns when it is below.
    reference = runs[("none", "random_init_bn", 0)]
    standing = "above" if margin >= 0 else "below"
    assert f"linear top-1 is {abs(margin):.2f} points {standing} the fair random-init reference" in card
    cell, benchmark = script.Cell("simclr", "mlp", "mlp", main=True), {"budget": "", "table": ""}
    for offset, warned in ((1.0, False), (-1.0, True)):
        run = dict(trained, linear_top1=reference["linear_top1"] + offset)
        other = script.publish(folder, tmp_path / "other_hub", cell, run, reference, benchmark)
        assert ("an untrained encoder's features score higher" in (other / "README.md").read_text()) == warned

    # A finished benchmark run again with --resume trains nothing and keeps every record.
    def no_pretraining(*args, **kwargs):
        raise AssertionError("--resume retrained a finished run")

    real_pretrain = script.pretrain
    monkeypatch.setattr(script, "pretrain", no_pretraining)
    with pytest.raises(ValueError, match="--resume"):
        script.main(argv)
    resumed = json.loads(script.main([*argv, "--resume"]).read_text())
    assert resumed["runs"] == results["runs"] and resumed["wall_seconds"] > results["wall_seconds"]
    # --rerun with --cells forgets just those cells' runs and does them again.
    rerun = json.loads(script.main([*argv, "--resume", "--cells", "none/random_init", "--rerun"]).read_text())
    assert [r for r in rerun["runs"] if r["projector"] != "random_init"] == [
        r for r in results["runs"] if r["projector"] != "random_init"
    ]
    assert (
        find_run(rerun, "none", "random_init", 0)["eval_seconds"]
        != runs[("none", "random_init", 0)]["eval_seconds"]
    )

    load_train_script("push_to_hub").main([str(folder)])
    from_hub = ibzoo.create_model(f"{NAME}.fmnist", pretrained=True)
    from_folder = ibzoo.create_model(f"local-dir:{folder}", pretrained=True)
    for key, value in from_folder.state_dict().items():
        torch.testing.assert_close(from_hub.state_dict()[key], value, rtol=0, atol=0, msg=key)

    # Records without their weights (results.json carried to another machine): named, not a traceback.
    shutil.rmtree(output / "runs" / "simclr_mlp" / "seed0" / "model")
    with pytest.raises(SystemExit, match="seed 0's model folder of simclr/mlp") as missing:
        script.main([*argv, "--resume"])
    # ... and the command it suggests trains just that seed again and publishes.
    assert "(--cells simclr/mlp --seeds 0 --rerun)" in str(missing.value)
    monkeypatch.setattr(script, "pretrain", real_pretrain)
    retrained = json.loads(
        script.main([*argv, "--resume", "--cells", "simclr/mlp", "--seeds", "0", "--rerun"]).read_text()
    )
    assert find_run(retrained, "simclr", "mlp", 0)["train_seconds"] != trained["train_seconds"]
    assert [r for r in retrained["runs"] if r["framework"] == "none"] == [
        r for r in rerun["runs"] if r["framework"] == "none"
    ]
    assert (folder / "model.safetensors").is_file()


def test_cells_seeds_and_pretraining_flags_follow_the_issue(tmp_path, monkeypatch):
    """Every zoo cell plus the two ablations; 5 seeds for SimCLR mlp / fsq / topk, 3 elsewhere; each
    pretraining gets the budget's flags, top-k above the feature width and a weight that makes MI act."""
    script = load_train_script("benchmark_fmnist")
    settings = script.BUDGETS["full"]
    seeds = {cell.key: len(cell.seeds(settings)) for cell in (*script.REFERENCES, *script.CELLS)}
    frameworks = ("simclr", "barlow", "byol", "vicreg", "mocov3")
    assert seeds == {
        **{f"{f}/{p}": 3 for f in frameworks for p in ("mlp", "fsq", "topk", "topk_fsq", "mlp_mi")},
        **{f"{f}/{p}": 1 for f in ("byol", "vicreg", "mocov3") for p in ("topk_fsq", "mlp_mi")},
        "simclr/mlp": 5,
        "simclr/fsq": 5,
        "simclr/topk": 5,
        "simclr/topk_tied": 3,
        "simclr/mlp_zero_init": 3,
        "none/random_init": 3,
        "none/random_init_bn": 3,
    }
    assert script.TOPK["k"] > 512 and settings["epochs"]["simclr"] * 60000 // settings["batch_size"] >= 800
    commands = []
    monkeypatch.setattr(
        script.subprocess, "run", lambda argv: commands.append(argv) or types.SimpleNamespace(returncode=0)
    )
    args = script.parse_args(["--output-dir", str(tmp_path), "--cells", "simclr/topk_tied,byol/mlp_mi"])
    for cell in args.selected:
        script.pretrain(cell, 0, tmp_path / "data", settings, args)
    tied, mi = (" ".join(command) for command in commands)
    assert "--experiment" not in tied + mi
    assert "--model resnet18_simclr_topk.fmnist" in tied and "--projector.topk-init tied" in tied
    assert f"--projector.topk-k {script.TOPK['k']}" in tied and "--batch-size 256" in tied
    assert (
        "--model resnet18_byol_mlp_mi.fmnist" in mi
        and f"--objective.mi-weight {script.MI_WEIGHTS['byol']}" in mi
    )
    with pytest.raises(SystemExit):
        script.parse_args(["--output-dir", str(tmp_path), "--cells", "simclr/vq"])
    with pytest.raises(SystemExit):
        script.parse_args(["--output-dir", str(tmp_path), "--rerun"])


def test_seeds_picks_seeds_within_each_cells_own(tmp_path, capsys):
    script = load_train_script("benchmark_fmnist")
    settings = script.BUDGETS["full"]
    args = script.parse_args(["--output-dir", str(tmp_path), "--seeds", "0, 3,4"])
    cells = {cell.key: cell for cell in script.CELLS}
    main_cell, other = cells["simclr/mlp"], cells["barlow/mlp"]
    assert main_cell.main and script.seeds_to_run(main_cell, settings, args) == [0, 3, 4]
    assert script.seeds_to_run(other, settings, args) == [0]  # a 3-seed cell has no seeds 3 and 4
    every = script.parse_args(["--output-dir", str(tmp_path)])
    assert script.seeds_to_run(main_cell, settings, every) == [0, 1, 2, 3, 4]
    for bad in ("", "one", "-1", "0,x"):
        with pytest.raises(SystemExit):
            script.parse_args(["--output-dir", str(tmp_path), "--seeds", bad])
        assert f"--seeds: {bad!r} is not" in capsys.readouterr().err


def test_log_summary_times_every_step_of_a_resumed_run_at_its_median_speed(tmp_path):
    """A run resumed once: its log holds both invocations' intervals, one slowed by other work."""
    script = load_train_script("benchmark_fmnist")
    records = [
        {"step": step, "epoch": 0, "train/images_per_s": rate, "train/mutual_information": 0.5}
        for step, rate in ((20, 256.0), (40, 512.0), (60, 25.0), (80, 512.0))
    ]
    records.append({"step": 80, "epoch": 0, "epoch/mean_loss": 4.5, "epoch/mean_ssl_loss": 4.25})
    records.append({"step": 80, "backbone_parameter_sha256": ["0" * 64]})
    log_file = tmp_path / "log.jsonl"
    log_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = script.log_summary(log_file, batch_size=64)
    # 80 steps of 64 images at the median 384 images/s; the slowed interval does not count.
    assert summary["pretrain_seconds"] == pytest.approx(80 * 64 / 384.0)
    assert summary["final_ssl_loss"] == 4.25 and summary["final_mi_term"] == pytest.approx(0.25)
    assert summary["final_mutual_information"] == 0.5


def test_only_cells_above_the_fair_reference_are_published():
    script = load_train_script("benchmark_fmnist")
    above, below = script.Cell("simclr", "mlp", "mlp"), script.Cell("barlow", "mlp", "mlp")
    runs = [dict(framework="none", projector="random_init_bn", seed=s, linear_top1=76.0) for s in (0, 1)]
    runs += [
        dict(framework="simclr", projector="mlp", seed=s, linear_top1=v) for s, v in ((0, 75.0), (1, 79.0))
    ]
    runs += [
        dict(framework="barlow", projector="mlp", seed=s, linear_top1=v) for s, v in ((0, 77.0), (1, 74.0))
    ]
    results = {"runs": runs}
    # Paired by seed: simclr +1.0 on average (one seed below), barlow -0.5.
    assert script.earns_its_place(results, above) and not script.earns_its_place(results, below)
    assert not script.earns_its_place({"runs": runs[:2]}, above)  # no runs: nothing to publish
    text = script.margins_over_reference(results)
    assert (
        "- Barlow Twins mlp: -0.50 ± 2.12 points (below the fair reference: no `.fmnist` Hub folder" in text
    )
    assert "- SimCLR mlp: +1.00 ± 2.83 points\n" in text


def test_a_pair_the_zoo_withholds_is_measured_as_an_experiment_and_never_published(tmp_path, monkeypatch):
    """Its row stays (the measurement that keeps it out); it trains with --experiment, gets no Hub folder
    whatever its margin, and the margins list says why."""
    script = load_train_script("benchmark_fmnist")
    withheld = [cell for cell in script.CELLS if cell.withheld]
    assert [script.model_name(cell) for cell in withheld] == [
        name
        for name in sorted(WITHHELD)
        if get_model_info(name, withheld=True).architecture == script.BACKBONE
    ]
    assert not any(cell.published for cell in withheld)
    commands = []
    monkeypatch.setattr(
        script.subprocess, "run", lambda argv: commands.append(argv) or types.SimpleNamespace(returncode=0)
    )
    # warmup_args counts the images of a data folder; any warm-up within the budget will do here.
    monkeypatch.setattr(script, "warmup_args", lambda *_: ["--optimizer.warmup-epochs", "1"])
    args = script.parse_args(["--output-dir", str(tmp_path)])
    settings = script.BUDGETS["full"]
    for cell in withheld:
        script.pretrain(cell, 0, tmp_path / "data", settings, args)
        config = script.parse_pretrain_args(commands[-1][2:])  # after the interpreter and the script
        assert config.experiment and config.model == f"{script.model_name(cell)}.{script.TAG}"
        runs = [dict(framework="none", projector="random_init_bn", seed=0, linear_top1=70.0)]
        runs.append(dict(framework=cell.framework, projector=cell.row, seed=0, linear_top1=80.0))
        assert script.earns_its_place({"runs": runs}, cell)  # above the reference, and still withheld:
        assert "(withheld from the zoo: no such name, no `.fmnist` Hub folder)" in (
            script.margins_over_reference({"runs": runs})
        )


def test_budget_changes_per_framework_and_none_when_a_shared_setting_changed():
    script = load_train_script("benchmark_fmnist")
    settings = script.benchmark_settings("full")
    older = {**settings, "epochs": {"simclr": 4, "barlow": 4}, "mi_weights": {"simclr": 0.1, "barlow": 5.0}}
    older["reference_warmup_steps"] = {"vicreg": 1950}
    assert script.budget_changes(settings, settings) == {}
    changes = script.budget_changes(older, settings)
    assert changes.keys() == {"barlow", "byol", "vicreg", "mocov3"}
    assert changes["barlow"] == {"epochs": (4, 8), "reference_warmup_steps": (None, 1950)}
    # A record from before reference_warmup_steps existed: read as no framework having one.
    oldest = {key: value for key, value in older.items() if key != "reference_warmup_steps"}
    assert script.budget_changes(oldest, settings)["vicreg"]["reference_warmup_steps"] == (None, 1950)
    assert script.budget_changes({**settings, "batch_size": 128}, settings) is None
    assert script.budget_changes({key: v for key, v in settings.items() if key != "knn_k"}, settings) is None
    assert script.budget_changes({**settings, "epochs": 4}, settings) is None
    # Another MI weight makes only that framework's mlp_mi runs stale; other budget changes all of them.
    lam = script.budget_changes(
        {**settings, "mi_weights": {**settings["mi_weights"], "simclr": 1.0}}, settings
    )
    assert script.is_stale(dict(framework="simclr", projector="mlp_mi"), lam)
    assert not script.is_stale(dict(framework="simclr", projector="topk"), lam)
    assert script.is_stale(dict(framework="barlow", projector="topk"), changes)
    assert not script.is_stale(dict(framework="simclr", projector="topk"), changes)


def test_runs_of_a_framework_whose_budget_changed_are_refused_and_kept(tmp_path):
    """A record holding Barlow Twins runs of another budget: the benchmark names them, what changed and
    how to rerun them, and leaves results.json as it was."""
    script = load_train_script("benchmark_fmnist")
    settings = script.benchmark_settings("full")
    older = {**settings, "epochs": {**settings["epochs"], "barlow": 2}}
    runs = [dict(framework="barlow", projector="fsq", seed=0, linear_top1=70.0)]
    runs.append(dict(framework="simclr", projector="mlp", seed=0, linear_top1=85.0))
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps({"settings": older, "runs": runs}))
    before = results_file.read_text()
    with pytest.raises(
        ValueError, match=r"barlow: epochs 2 -> 8\): train them again with --cells barlow/fsq --rerun"
    ):
        script.main(["--output-dir", str(tmp_path), "--resume"])
    with pytest.raises(ValueError, match=r"other settings \(batch_size 128 -> 256\)"):
        results_file.write_text(json.dumps({"settings": {**settings, "batch_size": 128}, "runs": runs}))
        script.main(["--output-dir", str(tmp_path), "--resume"])
    results_file.write_text(before)
    # --rerun of other seeds than the stale ones' is refused too, and deletes nothing.
    (tmp_path / "runs" / "barlow_fsq" / "seed1").mkdir(parents=True)
    with pytest.raises(ValueError, match="without --seeds"):
        script.main(
            ["--output-dir", str(tmp_path), "--resume", "--cells", "barlow/fsq", "--seeds", "1", "--rerun"]
        )
    assert results_file.read_text() == before and (tmp_path / "runs" / "barlow_fsq" / "seed1").is_dir()


def test_runs_whose_recipe_changed_since_are_refused_and_kept(idx_dir, tmp_path, monkeypatch):
    """A run trained before an upgrade changed its cell's projector (as Barlow Twins' top-k init) is named,
    with what changed and how to rerun it; the record stays as it was."""
    script = load_train_script("benchmark_fmnist")

    def no_training(*args, **kwargs):
        raise AssertionError("the stale run was not refused: the benchmark went on to train")

    monkeypatch.setattr(script, "pretrain", no_training)
    monkeypatch.setattr(script, "evaluate_backbone", no_training)
    argv = ["--output-dir", str(tmp_path), "--resume", "--budget", "quick", "--idx-dir", str(idx_dir)]
    argv.append("--cpu")
    args, settings = script.parse_args(argv), script.benchmark_settings("quick")
    cells = {cell.key: cell for cell in script.CELLS}
    runs = []
    for key, projector_change in (("simclr/topk", {"topk_init": "tied"}), ("simclr/mlp", {})):
        cell = cells[key]
        folder = script.run_dir(tmp_path, cell, 0)
        flags = script.pretrain_args(cell, 0, tmp_path / "data", settings, args, None, folder)
        trained = script.parse_pretrain_args(flags).to_dict()
        trained["projector"].update(projector_change)
        folder.mkdir(parents=True)
        (folder / "run_config.json").write_text(json.dumps(trained))
        runs.append(dict(framework=cell.framework, projector=cell.row, seed=0, linear_top1=80.0))
    runs.append(dict(framework="simclr", projector="fsq", seed=0, linear_top1=80.0))  # nothing to check: kept
    # A record copied without its folders (train/results/fmnist.json) is checked by the recipe it keeps.
    recipe = script.cell_recipe(cells["simclr/topk_fsq"], 0, tmp_path / "data", settings, args)
    recipe["objective"]["temperature"] = 0.5
    runs.append(dict(framework="simclr", projector="topk_fsq", seed=0, linear_top1=80.0, recipe=recipe))
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps({"settings": settings, "runs": runs}))
    before = results_file.read_text()
    expected = (
        r"simclr/topk: projector.topk_init: 'tied' -> 'independent'; "
        r"simclr/topk_fsq: objective.temperature: 0.5 -> 0.2\): train them again with --cells "
    )
    with pytest.raises(ValueError, match=expected + r"simclr/topk,simclr/topk_fsq --rerun"):
        script.main(argv)
    assert results_file.read_text() == before


def test_a_finished_run_keeps_the_recipe_it_trained(idx_dir, tmp_path, monkeypatch):
    """Each run's record holds its cell's recipe, equal to the run_config.json it trained with, so that a
    record without its folders can be checked after an upgrade."""
    script = load_train_script("benchmark_fmnist")
    argv = ["--output-dir", str(tmp_path), "--budget", "quick", "--idx-dir", str(idx_dir), "--cpu"]
    argv += ["--cells", "simclr/topk", "--seeds", "0"]
    cell = next(cell for cell in script.CELLS if cell.key == "simclr/topk")

    def pretrain(cell, seed, data_dir, settings, args):  # writes the run_config.json pretrain.py would
        folder = script.run_dir(args.output_dir, cell, seed)
        flags = script.pretrain_args(cell, seed, data_dir, settings, args, None, folder)
        folder.mkdir(parents=True)
        (folder / "run_config.json").write_text(json.dumps(script.parse_pretrain_args(flags).to_dict()))
        (folder / "log.jsonl").write_text("")
        return folder

    monkeypatch.setattr(script, "pretrain", pretrain)
    monkeypatch.setattr(script.ibzoo, "create_model", lambda *args, **kwargs: None)
    scores = {"linear_top1": 80.0, "knn_top1": 70.0}
    monkeypatch.setattr(script, "evaluate_backbone", lambda *args, **kwargs: scores)
    script.main(argv)
    run = script.find_run(script.load_results(tmp_path / "results.json"), "simclr", "topk", 0)
    folder = script.run_dir(tmp_path, cell, 0)
    assert set(run["recipe"]) == {"projector", "objective"}
    assert script.run_differences(folder, run["recipe"], script.upgraded_run_config) == []
    assert run["recipe"]["projector"]["topk_latents"] == script.TOPK["latents"]


def test_the_committed_record_continues_with_this_benchmarks_settings():
    """README: copy train/results/fmnist.json to OUTPUT/results.json and run with --resume."""
    script = load_train_script("benchmark_fmnist")
    record = json.loads((Path(script.__file__).parent / "results" / "fmnist.json").read_text())
    assert record["settings"] == script.benchmark_settings("full")


def test_vicreg_and_barlow_warm_up_at_their_references_slope_and_the_others_over_a_fraction(
    idx_dir, tmp_path
):
    """VICReg's and Barlow Twins' lr reaches 0.3 x steps / 1950 at the end of a short budget (the
    reference's first steps), and 0.3 once the budget is longer than the reference's warm-up; other
    frameworks warm up over 5 %."""
    script = load_train_script("benchmark_fmnist")
    settings = {**script.BUDGETS["full"], "subset": 64, "batch_size": 16}  # 4 steps per epoch
    args = script.parse_args(["--output-dir", str(tmp_path), "--idx-dir", str(idx_dir)])
    data_dir = script.benchmark_data(tmp_path, settings, args)[0]
    cells = {cell.key: cell for cell in script.CELLS}
    short = script.warmup_args(cells["vicreg/topk"], 2, settings, data_dir)
    assert short == ["--optimizer.lr", f"{0.3 * 8 / 1950:g}", "--optimizer.warmup-epochs", "2"]
    long = script.warmup_args(cells["vicreg/mlp"], 500, settings, data_dir)
    assert long == ["--optimizer.lr", "0.3", "--optimizer.warmup-epochs", f"{1950 / 4:g}"]
    barlow = script.warmup_args(cells["barlow/topk"], 8, settings, data_dir)
    assert barlow == ["--optimizer.lr", f"{0.3 * 32 / 1950:g}", "--optimizer.warmup-epochs", "8"]
    assert script.warmup_args(cells["simclr/topk"], 4, settings, data_dir) == [
        "--optimizer.warmup-epochs",
        "0.2",
    ]

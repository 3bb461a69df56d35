import json
import logging

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from ibzoo.training.checkpoint import (
    LATEST_FILE,
    RUN_CONFIG_FILE,
    CheckpointManager,
    CorruptCheckpointError,
    TrainerState,
    check_output_dir,
    checkpoint_name,
    write_run_config,
)


class Run:
    """A tiny model, optimiser and schedule prepared by a CPU Accelerator, with a TrainerState."""

    def __init__(self, seed: int = 0) -> None:
        self.accelerator = Accelerator(cpu=True)
        torch.manual_seed(seed)
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.state = TrainerState()

    def manager(self, folder, keep: int = 2) -> CheckpointManager:
        return CheckpointManager(
            self.accelerator,
            folder,
            keep,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=self.state,
        )

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.model(torch.randn(8, 4)).square().mean().backward()
            self.optimizer.step()
            self.scheduler.scheduler.step()
            self.optimizer.zero_grad()
            self.state.global_step += 1

    def snapshot(self) -> dict:
        return {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "momentum": [self.optimizer.state[p]["momentum_buffer"].clone() for p in self.model.parameters()],
            "lr": self.scheduler.get_last_lr(),
            "state": self.state.state_dict(),
        }


def assert_same(a: dict, b: dict) -> None:
    torch.testing.assert_close(a["model"], b["model"], rtol=0, atol=0)
    torch.testing.assert_close(a["momentum"], b["momentum"], rtol=0, atol=0)
    assert a["lr"] == b["lr"] and a["state"] == b["state"]


def saved_run(tmp_path, epochs: int = 2, keep: int = 2) -> tuple[Run, CheckpointManager, list[dict]]:
    run = Run()
    manager = run.manager(tmp_path / "checkpoints", keep=keep)
    snapshots = []
    for _ in range(epochs):
        run.train(3)
        run.state.epoch += 1
        manager.save(checkpoint_name(run.state, steps_per_epoch=3))
        snapshots.append(run.snapshot())
    return run, manager, snapshots


def test_resume_restores_model_optimizer_schedule_and_trainer_state(tmp_path):
    _, manager, snapshots = saved_run(tmp_path)
    assert (manager.folder / LATEST_FILE).read_text() == "epoch-0002\n"

    fresh = Run(seed=1)
    assert fresh.state == TrainerState() and not fresh.optimizer.state
    resumed = fresh.manager(manager.folder).resume("auto")
    assert resumed == manager.folder / "epoch-0002"
    assert_same(fresh.snapshot(), snapshots[-1])
    assert fresh.state == TrainerState(epoch=2, global_step=6)

    explicit = Run(seed=2)
    explicit.manager(tmp_path / "elsewhere").resume(str(manager.folder / "epoch-0001"))
    assert_same(explicit.snapshot(), snapshots[0])
    assert Run().manager(tmp_path / "empty").resume("auto") is None


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run, manager, snapshots = saved_run(tmp_path, epochs=1)
    original_write = manager._write

    def crash_halfway(folder):
        original_write(folder)
        (folder / "optimizer.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(manager, "_write", crash_halfway)
    run.train(3)
    run.state.epoch += 1
    with pytest.raises(OSError, match="disk full"):
        manager.save("epoch-0002")
    assert (manager.folder / LATEST_FILE).read_text() == "epoch-0001\n"
    assert manager.complete_checkpoints(manager.folder) == [manager.folder / "epoch-0001"]

    fresh = Run(seed=1)
    assert fresh.manager(manager.folder).resume("auto") == manager.folder / "epoch-0001"
    assert_same(fresh.snapshot(), snapshots[0])
    # The next save clears the half-written folder.
    monkeypatch.undo()
    manager.save("epoch-0002")
    assert sorted(p.name for p in manager.folder.iterdir()) == ["epoch-0001", "epoch-0002", LATEST_FILE]


def test_corrupt_checkpoint_falls_back_to_an_older_one_with_a_warning(tmp_path, caplog):
    _, manager, snapshots = saved_run(tmp_path)
    newest = manager.folder / "epoch-0002"
    (newest / "model.safetensors").write_bytes(b"not safetensors")

    fresh = Run(seed=1)
    with caplog.at_level(logging.WARNING, logger="ibzoo.training.checkpoint"):
        resumed = fresh.manager(manager.folder).resume("auto")
    assert resumed == manager.folder / "epoch-0001"
    assert_same(fresh.snapshot(), snapshots[0])
    assert f"Checkpoint {newest} could not be loaded" in caplog.text and "older checkpoint" in caplog.text

    # Asked for by path, a corrupt checkpoint is an error, not a fallback.
    with pytest.raises(CorruptCheckpointError, match=rf"{newest} could not be loaded .*Delete that folder"):
        Run().manager(manager.folder).resume(str(newest))
    (manager.folder / "epoch-0001" / "optimizer.json").unlink()
    with pytest.raises(CorruptCheckpointError, match=r"No checkpoint .* could be loaded") as error:
        Run().manager(manager.folder).resume("auto")
    assert "epoch-0001" in str(error.value) and "epoch-0002" in str(error.value)


def test_a_dangling_latest_pointer_falls_back_to_the_newest_folder(tmp_path):
    _, manager, snapshots = saved_run(tmp_path)
    (manager.folder / LATEST_FILE).write_text("epoch-0009\n")
    fresh = Run(seed=1)
    assert fresh.manager(manager.folder).resume("auto") == manager.folder / "epoch-0002"
    assert_same(fresh.snapshot(), snapshots[-1])


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    _, manager, _ = saved_run(tmp_path, epochs=4, keep=2)
    assert [p.name for p in manager.complete_checkpoints(manager.folder)] == ["epoch-0003", "epoch-0004"]
    with pytest.raises(ValueError, match="keep=0"):
        Run().manager(manager.folder, keep=0)
    assert Run().manager(manager.folder).resume("never") is None


def test_checkpoint_names_sort_in_training_order():
    states = [TrainerState(1, 10), TrainerState(1, 13), TrainerState(2, 20), TrainerState(10, 100)]
    names = [checkpoint_name(state, steps_per_epoch=10) for state in states]
    assert names == ["epoch-0001", "epoch-0001-step-00000013", "epoch-0002", "epoch-0010"]
    assert sorted(names) == names


IDENTITY = {"model": "resnet18_cifar_simclr_mlp", "seed": 0, "optimizer": {"lr": 0.4, "name": "lars"}}


def test_output_folder_of_another_run_is_refused_and_left_alone(tmp_path):
    check_output_dir(tmp_path / "new", IDENTITY, "auto")  # a fresh folder is fine
    write_run_config(tmp_path, {**IDENTITY, "max_steps": None})
    saved = (tmp_path / RUN_CONFIG_FILE).read_text()
    check_output_dir(tmp_path, IDENTITY, "auto")  # the same run continues
    other = {**IDENTITY, "seed": 1, "optimizer": {"lr": 0.3, "name": "lars"}}
    with pytest.raises(ValueError, match=r"holds another run; .* optimizer.lr: 0.4 -> 0.3; seed: 0 -> 1"):
        check_output_dir(tmp_path, other, "auto")
    write_run_config(tmp_path, {**other, "max_steps": 5})  # written once: the first run's record stays
    assert (tmp_path / RUN_CONFIG_FILE).read_text() == saved and json.loads(saved)["seed"] == 0


def test_output_folder_errors_that_would_lose_work(tmp_path):
    write_run_config(tmp_path, IDENTITY)
    (tmp_path / "checkpoints" / "epoch-0001").mkdir(parents=True)
    with pytest.raises(ValueError, match="--resume never would overwrite them"):
        check_output_dir(tmp_path, IDENTITY, "never")
    (tmp_path / RUN_CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match=r"no run_config\.json"):
        check_output_dir(tmp_path, IDENTITY, "auto")
    (tmp_path / RUN_CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_output_dir(tmp_path, IDENTITY, "auto")

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import DataLoader

from ibzoo.augment import collate
from ibzoo.batched_augment import build_batched_pretrain_augment
from ibzoo.models.pretraining import SSLModel
from ibzoo.objectives import ObjectiveConfig
from ibzoo.optim import OptimizerConfig, warmup_cosine_schedule
from ibzoo.projectors import ProjectorConfig
from ibzoo.training.checkpoint import TrainerState
from ibzoo.training.loader import sample_seed
from ibzoo.training.loop import Pretrainer, PretrainingModule, build_pretrain_optimizer, parameter_digest
from ibzoo.training.run_log import RunLog, RunningMeans, flat_hparams


class TinyBackbone(nn.Module):
    """A timm-like encoder small enough for unit tests: (B, 3, H, W) -> (B, 6)."""

    num_classes, num_features = 0, 6

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def tiny_module(num_classes: int | None = 3, mi_weight: float = 0.0) -> PretrainingModule:
    torch.manual_seed(0)
    ssl_model = SSLModel(TinyBackbone(), ProjectorConfig((8,), 4), ObjectiveConfig(mi_weight=mi_weight))
    return PretrainingModule(ssl_model, num_classes)


def test_online_classifier_learns_from_detached_features():
    module = tiny_module()
    views, labels = [torch.randn(5, 3, 8, 8) for _ in range(2)], torch.tensor([0, 1, 2, 0, 1])
    output = module(views, labels)

    z1 = torch.cat([module.ssl_model(view) for view in views])
    logits = module.classifier(z1)
    targets = labels.repeat(2)
    torch.testing.assert_close(output.online_loss, F.cross_entropy(logits, targets))
    torch.testing.assert_close(output.online_top1, (logits.argmax(1) == targets).float().mean() * 100)
    torch.testing.assert_close(output.loss, output.objective.loss + output.online_loss)

    # The classifier's loss reaches the classifier only: backbone gradients are the objective's alone.
    output.loss.backward()
    with_classifier = [p.grad.clone() for p in module.ssl_model.parameters()]
    assert module.classifier.weight.grad.abs().sum() > 0
    module.zero_grad()
    module(views, labels).objective.loss.backward()
    torch.testing.assert_close([p.grad for p in module.ssl_model.parameters()], with_classifier)


def test_without_labels_the_step_is_the_objective_alone():
    module = tiny_module(num_classes=None)
    output = module([torch.randn(4, 3, 8, 8) for _ in range(2)], torch.zeros(4, dtype=torch.int64))
    assert output.online_loss is None and output.online_top1 is None and output.loss is output.objective.loss


@pytest.mark.parametrize(("scaling", "expected_lr"), [("linear", 0.1 * 512 / 256), ("none", 0.1)])
def test_classifier_has_its_own_groups_without_weight_decay(scaling, expected_lr):
    module = tiny_module()
    config = OptimizerConfig(name="lars", lr=0.3, weight_decay=1e-4, lr_scaling=scaling)
    optimizer = build_pretrain_optimizer(module, config, total_batch_size=512, classifier_lr=0.1)
    *ssl_groups, weight_group, bias_group = optimizer.param_groups
    assert sum(len(group["params"]) for group in ssl_groups) == len(list(module.ssl_model.parameters()))
    assert weight_group["params"] == [module.classifier.weight]
    assert bias_group["params"] == [module.classifier.bias]
    # As the reference's LARS: the weight keeps the trust ratio (without decay), the bias takes plain steps.
    assert (weight_group["weight_decay"], weight_group["lars_exclude"]) == (0.0, False)
    assert (bias_group["weight_decay"], bias_group["lars_exclude"]) == (0.0, True)
    assert weight_group["lr"] == bias_group["lr"] == pytest.approx(expected_lr)
    assert ssl_groups[0]["lr"] == pytest.approx(config.scaled_lr(512))


def test_classifier_weight_step_is_the_trust_ratio_without_decay():
    """solo-learn's LARS on a weight-decay-0 tensor: step = lr * min(eta ||w|| / ||g|| / lr, 1) * g."""
    module = tiny_module()
    config = OptimizerConfig(name="lars", lr=0.3, weight_decay=1e-4, lars_eta=0.02, lr_scaling="none")
    optimizer = build_pretrain_optimizer(module, config, total_batch_size=256, classifier_lr=5.0)
    weight = module.classifier.weight
    weight.grad = torch.full_like(weight, 0.5)
    before = weight.detach().clone()
    optimizer.step()
    trust = min(0.02 * before.norm().item() / weight.grad.norm().item() / 5.0, 1.0)
    torch.testing.assert_close(weight.detach(), before - 5.0 * trust * weight.grad)


def test_parameter_digest_hashes_names_and_parameter_bytes_only():
    module = tiny_module()
    expected = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        expected.update(name.encode() + param.detach().numpy().tobytes())
    assert parameter_digest(module) == expected.hexdigest()
    module.ssl_model.backbone.body[1].running_mean += 1  # buffers may differ between replicas
    assert parameter_digest(module) == expected.hexdigest()
    with torch.no_grad():
        module.classifier.bias[0] += 1e-6
    assert parameter_digest(module) != expected.hexdigest()


def test_running_means_and_hparams():
    means = RunningMeans()
    means.add({"loss": torch.tensor(1.0), "top1": None})
    means.add({"loss": torch.tensor(3.0), "top1": torch.tensor(50.0)})
    assert means.read(Accelerator(cpu=True)) == {"loss": 2.0, "top1": 50.0}
    assert means.read(Accelerator(cpu=True)) == {}
    assert flat_hparams({"a": {"b": 1, "c": None}, "d": (1, 2), "e": "x"}) == {
        "a/b": 1,
        "a/c": "None",
        "d": "(1, 2)",
        "e": "x",
    }


class RandomViews(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {"views": list(torch.randn(2, 3, 8, 8, generator=generator)), "label": index % 3}


class RandomImages(torch.utils.data.Dataset):
    """Decode-only rows, as build_pretrain_loader(augment_on_device=True) yields them."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        image = torch.randint(0, 256, (3, 12, 12), generator=generator, dtype=torch.uint8)
        return {"views": [image], "label": index % 3}


def prepared_trainer(
    accelerator: Accelerator, module: PretrainingModule, data, log_file, batch_size: int, steps: int, **kwargs
) -> tuple[Pretrainer, DataLoader]:
    """A Pretrainer over ``data`` in batches of ``batch_size`` (one process), SGD, warmup-cosine over
    ``steps``, logging every 2 steps; ``kwargs`` go to Pretrainer."""
    global_batch = batch_size * accelerator.gradient_accumulation_steps
    optimizer = build_pretrain_optimizer(
        module, OptimizerConfig(name="sgd", lr=0.1), global_batch, classifier_lr=0.1
    )
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=1, total_steps=steps)
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate)
    module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    log = RunLog(accelerator, log_file, resumed_step=0)
    trainer = Pretrainer(
        accelerator,
        module,
        optimizer,
        scheduler,
        TrainerState(),
        log,
        steps_per_epoch=steps,
        global_batch_size=global_batch,
        log_every=2,
        total_steps=steps,
        **kwargs,
    )
    return trainer, loader


def test_epoch_with_gradient_accumulation_steps_logs_and_schedules_per_optimisation_step(tmp_path):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2, step_scheduler_with_optimizer=False)
    # 8 micro-batches of 2, 4 steps of 4
    trainer, loader = prepared_trainer(
        accelerator, tiny_module(mi_weight=0.1), RandomViews(), tmp_path / "log.jsonl", 2, 4
    )
    state, scheduler = trainer.state, trainer.scheduler
    trainer.train_epoch(loader, epoch=0, last_step=4)

    assert state == TrainerState(epoch=1, global_step=4)
    assert scheduler.scheduler.last_epoch == 4 and scheduler.get_last_lr()[0] == pytest.approx(0.0)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [2, 4, 4]
    step_record, epoch_record = records[1], records[2]
    # The lr the 4th step used: cosine at (3 - 1 warmup) / 3 decay steps, 0.5 (1 + cos(2 pi / 3)) = 0.25.
    assert step_record["train/lr"] == pytest.approx(0.1 * 4 / 256 * 0.25)
    plane_keys = ("mutual_information", "z1_entropy", "z1_target_information", "lower_bound", "upper_bound")
    assert all(f"train/{key}" in step_record for key in plane_keys)
    assert {"train/loss", "train/ssl_loss", "train/online_top1", "train/images_per_s"} <= set(step_record)
    assert set(epoch_record) >= {"epoch", "epoch/mean_loss", "epoch/mean_online_top1"}

    # A run resumed from step 3 keeps the records up to that step only.
    RunLog(accelerator, tmp_path / "log.jsonl", resumed_step=3)
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [2]


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps one process-wide state; mixed precision may only change after a reset."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_autocast_step_gives_float32_outputs_and_gradients(fresh_accelerate):
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    module = accelerator.prepare(tiny_module(mi_weight=0.1))
    views, labels = [torch.randn(6, 3, 8, 8) for _ in range(2)], torch.tensor([0, 1, 2] * 2)
    output = module(views, labels, information_plane=True)
    assert output.loss.dtype == output.online_top1.dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in output.objective.information_plane)
    accelerator.backward(output.loss)
    grads = [param.grad for param in module.parameters()]
    assert all(grad.dtype == torch.float32 and torch.isfinite(grad).all() for grad in grads)


def test_augment_on_device_draws_each_batchs_views_from_its_key(tmp_path, fresh_accelerate):
    augment = build_batched_pretrain_augment("simclr", 8, (0.5,) * 3, (0.25,) * 3)
    trainer, _ = prepared_trainer(
        Accelerator(cpu=True),
        tiny_module(),
        RandomImages(),
        tmp_path / "log.jsonl",
        4,
        2,
        augment=augment,
        seed=7,
    )
    images = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    batch = trainer.augment_views({"views": [images], "label": torch.arange(4)}, epoch=2, batch_index=5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training's RNG is left alone
    torch.manual_seed(sample_seed(7, 2, 5, 0))  # (seed, epoch, batch index, process index)
    expected = augment(images)
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (4, 3, 8, 8)
    assert batch["views"][0].dtype == torch.float32
    torch.testing.assert_close(batch["views"], expected, rtol=0, atol=0)
    assert torch.equal(batch["label"], torch.arange(4))
    other = trainer.augment_views({"views": [images]}, epoch=2, batch_index=6)
    assert not torch.equal(other["views"][0], expected[0])


def augmented_on_device_run(tmp_path, seed: int) -> tuple[PretrainingModule, list[dict]]:
    """Two steps of two micro-batches of decoded images, augmented in the step; the module and log."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2, step_scheduler_with_optimizer=False)
    augment = build_batched_pretrain_augment("simclr", 8, (0.5,) * 3, (0.25,) * 3)
    trainer, loader = prepared_trainer(
        accelerator,
        tiny_module(),
        RandomImages(),
        tmp_path / f"log-{seed}.jsonl",
        2,
        2,
        augment=augment,
        seed=seed,
    )
    trainer.train_epoch(loader, epoch=0, last_step=2)
    assert trainer.state == TrainerState(epoch=1, global_step=2)
    log = [json.loads(line) for line in (tmp_path / f"log-{seed}.jsonl").read_text().splitlines()]
    return accelerator.unwrap_model(trainer.module), log


def test_augment_on_device_trains_repeatably_from_the_seed(tmp_path, fresh_accelerate):
    first, log = augmented_on_device_run(tmp_path, seed=0)
    assert log[0]["step"] == 2 and all(np.isfinite(log[0][f"train/{key}"]) for key in ("loss", "ssl_loss"))
    AcceleratorState._reset_state(reset_partial_state=True)
    again, _ = augmented_on_device_run(tmp_path, seed=0)
    AcceleratorState._reset_state(reset_partial_state=True)
    other_seed, _ = augmented_on_device_run(tmp_path, seed=1)
    assert parameter_digest(again) == parameter_digest(first)
    assert parameter_digest(other_seed) != parameter_digest(first)


def test_compiled_backbone_trains_like_the_eager_one(tmp_path, fresh_accelerate):
    """The in-place ``backbone.compile()`` of --compile keeps parameter names and trains the same step.

    Traced with dynamo's eager backend: the default inductor backend needs ~30 s to compile even this
    tiny module on a cold CPU cache, too slow for a unit test; what the flag adds is the tracing.
    """
    digests = []
    for compiled in (False, True):
        AcceleratorState._reset_state(reset_partial_state=True)
        module = tiny_module()
        if compiled:
            module.ssl_model.backbone.compile(backend="eager")
        accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
        trainer, loader = prepared_trainer(accelerator, module, RandomViews(), tmp_path / "log.jsonl", 4, 1)
        trainer.train_epoch(loader, epoch=0, last_step=1)
        digests.append(parameter_digest(accelerator.unwrap_model(trainer.module)))
    assert digests[0] == digests[1]

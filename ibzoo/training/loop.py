"""The pretraining step and epoch: what is trained, how one optimisation step runs, and what is logged.

One step: V augmented views -> backbone (Z1) -> projector (Z2) -> ``BottleneckObjective`` (SSL loss +
lambda I(Z1; Z2), Ouyang et al., ICLR 2025, arXiv:2503.00507) -> ``accelerator.backward`` ->
optimiser and schedule step once per optimisation step (gradient accumulation through
``accelerator.accumulate``). An online linear classifier on detached Z1 (solo-learn's habit) trains
alongside when the data has labels, so a run reports how linearly separable its features are without a
separate evaluation. Every ``log_every`` steps the information-plane quantities are computed on that
step's batch; the host reads values only then. With a batched augmentation (``--augment-on-device``) the
loader yields decoded uint8 images and the epoch turns each batch into views on the accelerator first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import Tensor, nn
from tqdm.auto import tqdm

from ibzoo.batched_augment import BatchedAugment
from ibzoo.models.pretraining import SSLModel
from ibzoo.objectives import ObjectiveOutput
from ibzoo.optim import OptimizerConfig, build_optimizer, parameter_groups
from ibzoo.training.checkpoint import TrainerState
from ibzoo.training.loader import sample_seed
from ibzoo.training.run_log import RunLog, RunningMeans

__all__ = [
    "PretrainStepOutput",
    "Pretrainer",
    "PretrainingModule",
    "build_pretrain_optimizer",
    "parameter_digest",
    "replica_digests",
]

logger = logging.getLogger(__name__)


class PretrainStepOutput(NamedTuple):
    """What :class:`PretrainingModule` returns for one batch."""

    loss: Tensor  # objective loss + online classifier's cross-entropy: what to backpropagate
    objective: ObjectiveOutput
    online_loss: Tensor | None  # cross-entropy of the online classifier; None without labels
    online_top1: Tensor | None  # its top-1 accuracy on this batch, percent (detached)


class PretrainingModule(nn.Module):
    """An :class:`~ibzoo.models.pretraining.SSLModel` plus an optional online linear classifier on Z1.

    One ``forward`` computes everything a step needs, so that DistributedDataParallel sees the whole
    computation. Shapes (V: views, B: batch, C: channels, H x W: image):
    ``forward(V tensors (B, C, H, W), labels (B,) or None) -> PretrainStepOutput``.
    """

    def __init__(self, ssl_model: SSLModel, num_classes: int | None = None) -> None:
        super().__init__()
        self.ssl_model = ssl_model
        self.classifier = nn.Linear(ssl_model.num_features, num_classes) if num_classes else None

    def forward(
        self, views: Sequence[Tensor], labels: Tensor | None = None, information_plane: bool = False
    ) -> PretrainStepOutput:
        objective, z1 = self.ssl_model.encode_and_loss(views, information_plane)
        if self.classifier is None or labels is None:
            return PretrainStepOutput(objective.loss, objective, None, None)
        # Detached: the classifier measures the features and must not shape them.
        logits = self.classifier(torch.cat(z1).detach())
        targets = labels.repeat(len(views))
        online_loss = F.cross_entropy(logits, targets)
        online_top1 = (logits.detach().argmax(dim=1) == targets).float().mean() * 100
        return PretrainStepOutput(objective.loss + online_loss, objective, online_loss, online_top1)


def build_pretrain_optimizer(
    module: PretrainingModule, config: OptimizerConfig, total_batch_size: int, classifier_lr: float
) -> torch.optim.Optimizer:
    """``config``'s optimiser over the SSL model, plus the online classifier's own groups.

    The classifier has no weight decay; its lr is ``classifier_lr`` scaled with the batch like the main lr
    (``config.lr_scaling``). Under LARS its weight still gets the trust ratio and its bias does not, as in
    the reference (Projector_Theory ``methods/base.py`` puts the classifier in a group with weight decay 0,
    and ``utils/lars.py`` adapts every tensor with ndim > 1).
    """
    optimizer = build_optimizer(module.ssl_model, config, total_batch_size)
    if module.classifier is not None:
        scale = config.scaled_lr(total_batch_size) / config.lr
        for group in parameter_groups(module.classifier, weight_decay=0.0):
            optimizer.add_param_group(dict(group, lr=classifier_lr * scale))
    return optimizer


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of ``module``'s parameters: for each name in sorted order, the name's UTF-8 bytes then the
    tensor's bytes (CPU, contiguous, own dtype)."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def replica_digests(accelerator: Accelerator, module: nn.Module) -> list[str]:
    """:func:`parameter_digest` of ``module`` on every process, in rank order (a collective).

    Data-parallel replicas must hold identical parameters; BatchNorm running statistics are buffers and
    stay per process unless SyncBatchNorm is on, so they are left out.
    """
    digests = gather_object([parameter_digest(module)]) if accelerator.num_processes > 1 else None
    digests = digests or [parameter_digest(module)]
    if len(set(digests)) > 1:
        logger.warning("Parameters differ between processes: %s", digests)
    return digests


class Pretrainer:
    """Runs prepared objects through optimisation steps, advancing ``state`` and writing ``log``.

    ``steps_per_epoch`` counts optimisation steps (global batches); every process iterates
    ``steps_per_epoch * gradient_accumulation_steps`` batches per epoch. With ``augment`` the loader's
    batches hold decoded uint8 images (:func:`ibzoo.training.build_pretrain_loader` with
    ``augment_on_device``), made into views by :meth:`augment_views` with randomness keyed by ``seed``.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainerState,
        log: RunLog,
        *,
        steps_per_epoch: int,
        global_batch_size: int,
        log_every: int,
        total_steps: int,
        augment: BatchedAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.accelerator = accelerator
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.state, self.log = state, log
        self.steps_per_epoch = steps_per_epoch
        self.global_batch_size = global_batch_size
        self.log_every = log_every
        self.total_steps = total_steps
        self.augment, self.seed = augment, seed
        self.channels_last = accelerator.device.type == "cuda"
        self.interval_means, self.epoch_means = RunningMeans(), RunningMeans()
        self._interval_start, self._interval_steps, self._lr = time.perf_counter(), 0, 0.0

    def augment_views(self, batch: dict[str, Any], epoch: int, batch_index: int) -> dict[str, Any]:
        """Replace a decode-only batch's images, one uint8 (b, 3, S, S) tensor, by the V augmented views.

        b: per-process batch, S: image size, V: views. The random parameters are seeded from (seed, epoch,
        this process's batch index in the epoch, process index): a resumed run draws the same views, but
        unlike the per-image path the views depend on the number of processes.
        """
        (images,) = batch["views"]
        device = images.device
        # BatchedAugment takes no generator: it draws from the default one of the images' device. Fork that
        # one, seed it for this batch and restore it after, so the rest of training sees its RNG untouched.
        forked_devices = [] if device.type == "cpu" else [device]
        with torch.random.fork_rng(devices=forked_devices, device_type=device.type):
            torch.manual_seed(sample_seed(self.seed, epoch, batch_index, self.accelerator.process_index))
            views = self.augment(images)
        return {**batch, "views": views}

    def train_step(self, batch: dict[str, Any]) -> PretrainStepOutput:
        """Forward and backward one (micro-)batch; steps optimiser and schedule when gradients sync."""
        views = batch["views"]
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        with self.accelerator.accumulate(self.module):
            # The information plane costs an extra SSL loss on Z1: only on the batch a record describes.
            logging_step = (
                self.accelerator.sync_gradients and (self.state.global_step + 1) % self.log_every == 0
            )
            output = self.module(views, batch.get("label"), information_plane=logging_step)
            self.accelerator.backward(output.loss)
            self._lr = self.optimizer.param_groups[0]["lr"]  # this step's lr, before the schedule moves on
            self.optimizer.step()
            if self.accelerator.sync_gradients and not self.optimizer.step_was_skipped:
                self.scheduler.step()
                # A momentum target (BYOL, MoCo v3) follows every optimisation step, as its tau schedule
                # is counted in steps; on every process alike, since the online weights are in sync.
                ssl_model = self.accelerator.unwrap_model(self.module).ssl_model
                ssl_model.update_target(self.state.global_step + 1, self.total_steps)
            self.optimizer.zero_grad(set_to_none=True)
        means = {"loss": output.objective.loss, "ssl_loss": output.objective.ssl_loss}
        means |= {"online_loss": output.online_loss, "online_top1": output.online_top1}
        self.interval_means.add(means)
        self.epoch_means.add(means)
        return output

    def train_epoch(self, loader: Iterable[dict[str, Any]], epoch: int, last_step: int) -> None:
        """Train ``epoch`` from ``state.global_step`` (skipping batches a resumed run already saw) to its
        end or to ``last_step``; ``state.epoch`` becomes ``epoch + 1`` when the epoch completes."""
        self.module.train()
        accumulation = self.accelerator.gradient_accumulation_steps
        done = self.state.global_step - epoch * self.steps_per_epoch
        assert 0 <= done <= self.steps_per_epoch, (self.state, epoch)
        loader.set_epoch(epoch)
        if done:
            loader = self.accelerator.skip_first_batches(loader, done * accumulation)
            loader.set_epoch(epoch)
        end_step = min(last_step, (epoch + 1) * self.steps_per_epoch)
        progress = tqdm(
            total=end_step - epoch * self.steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch}",
            disable=not self.accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        # images/s measures training only: checkpointing between epochs is left out.
        self._interval_start, self._interval_steps = time.perf_counter(), 0
        # Batch indices count this process's micro-batches in the epoch, the skipped ones included.
        for batch_index, batch in enumerate(loader, start=done * accumulation):
            if self.augment is not None:
                batch = self.augment_views(batch, epoch, batch_index)
            output = self.train_step(batch)
            if not self.accelerator.sync_gradients:
                continue
            self.state.global_step += 1
            self._interval_steps += 1
            progress.update(1)
            if self.state.global_step % self.log_every == 0:
                record = self._log_interval(output, epoch)
                progress.set_postfix(loss=f"{record['train/loss']:.4f}", refresh=False)
            if self.state.global_step >= end_step:
                break
        progress.close()
        if self.state.global_step == (epoch + 1) * self.steps_per_epoch:
            self.state.epoch = epoch + 1
            epoch_record = {
                f"epoch/mean_{name}": value for name, value in self.epoch_means.read(self.accelerator).items()
            }
            self.log.write({"epoch": epoch, **epoch_record}, step=self.state.global_step)
            self._stop_if_diverged(epoch_record["epoch/mean_loss"], f"the mean of epoch {epoch}")

    def _stop_if_diverged(self, loss: float, what: str) -> None:
        """Raise FloatingPointError, naming the step, when a logged loss is NaN or infinite: before the
        next checkpoint could save diverged weights over the last good ones."""
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss} by step {self.state.global_step} ({what}): training "
                "diverged. The last checkpoint is kept; lower --optimizer.lr (or check the data) and run "
                "again with a new --output-dir, or --resume PATH from a checkpoint before the divergence."
            )

    def _log_interval(self, output: PretrainStepOutput, epoch: int) -> dict[str, Any]:
        values = self.interval_means.read(self.accelerator)  # host sync: the interval's work is done
        elapsed = time.perf_counter() - self._interval_start
        record = {f"train/{name}": value for name, value in values.items()}
        plane = output.objective.information_plane
        if plane is not None:
            # The plane's quantities that the framework defines (no I(Z1; R) with a predictor and target).
            names = [name for name, value in zip(plane._fields, plane, strict=True) if value is not None]
            quantities = torch.stack([getattr(plane, name) for name in names])
            if self.accelerator.num_processes > 1:
                quantities = self.accelerator.reduce(quantities, reduction="mean")
            record |= {f"train/{name}": value for name, value in zip(names, quantities.tolist(), strict=True)}
        self._stop_if_diverged(record["train/loss"], f"the mean of the last {self._interval_steps} steps")
        record["train/lr"] = self._lr
        record["train/images_per_s"] = self._interval_steps * self.global_batch_size / elapsed
        self.log.write({"epoch": epoch, **record}, step=self.state.global_step)
        self._interval_start, self._interval_steps = time.perf_counter(), 0
        return record

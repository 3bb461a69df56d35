"""The pretraining DataLoader, built so that a resumed run sees exactly the data an uninterrupted one would.

Shuffling and augmentation depend only on (seed, epoch, image index): the sampler draws each epoch's
permutation from (seed, epoch) and hands out ``(epoch, index)`` keys, and the data set seeds the view
transforms of each image from its key. Nothing depends on the global RNG, on the number of DataLoader
workers or processes, or on where in an epoch the run was resumed (``accelerator.skip_first_batches``
skips keys, not RNG draws). Each epoch keeps whole global batches only, so every process and every
gradient-accumulation step gets a full batch.

With ``augment_on_device`` the workers only decode (:func:`ibzoo.augment.build_decode_transform`) and
the views are made batched on the accelerator by :class:`ibzoo.training.loop.Pretrainer`, seeded from
(seed, epoch, batch, process) with :func:`sample_seed`: still exact on resume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ibzoo.augment import MultiViewTransform, build_decode_transform, build_pretrain_transform, collate
from ibzoo.data import ImageDataset

__all__ = [
    "MAX_DEFAULT_WORKERS",
    "EpochShuffleSampler",
    "SeededViews",
    "build_pretrain_loader",
    "default_num_workers",
    "lower_worker_priority",
    "sample_seed",
]

# Enough workers to keep one GPU fed at the zoo's image sizes; more only compete with the step.
MAX_DEFAULT_WORKERS = 4


def default_num_workers(max_workers: int = MAX_DEFAULT_WORKERS) -> int:
    """DataLoader workers per training process that fit this machine: min(max_workers, cores per process).

    The default of every script's ``--num-workers``. Cores are the ones this process may run on
    (``os.sched_getaffinity``, which respects taskset and container CPU sets, else ``os.cpu_count``),
    shared by the ``LOCAL_WORLD_SIZE`` processes a launcher (``accelerate launch``, torchrun) starts on
    the machine. More workers than cores make torch warn that the DataLoader may freeze, and on a small
    machine they only take time from the training step.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(max_workers, cores // local_processes))


logger = logging.getLogger(__name__)


def lower_worker_priority(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` that gives a worker the lowest CPU priority (nice 19), where the OS has
    one (``os.nice``; not on Windows).

    For training on the CPU, where the step's threads use every core: a worker that takes a core from
    one of them stalls the other at the next barrier too, so it costs twice its own time. At the lowest
    priority the workers fill the step's idle moments, and only have the cores to themselves while the
    step waits for a batch. Measured on 2 cores, --augment-on-device: 229 -> 250 images/s
    (``make bench-speed``, section f).
    """
    if hasattr(os, "nice"):
        os.nice(19)


def sample_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (numpy's SeedSequence), e.g. (seed, epoch, index)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` keys: a permutation of the rows drawn from (seed, epoch), cut to whole
    global batches. Call :meth:`set_epoch` before iterating each epoch."""

    def __init__(self, num_rows: int, global_batch_size: int, seed: int) -> None:
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0
        self.num_keys = num_rows // global_batch_size * global_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_rows, generator=generator)[: self.num_keys]
        return ((self.epoch, index) for index in order.tolist())

    def __len__(self) -> int:
        return self.num_keys


class SeededViews(Dataset):
    """Rows of an image data set as ``{"views": V tensors, "label": int}``, augmented reproducibly.

    Indexed by ``(epoch, index)``: the transform of row ``index`` runs with torch's RNG seeded from
    (seed, epoch, index) inside ``torch.random.fork_rng``, so the caller's RNG is left untouched.
    """

    def __init__(
        self,
        data: ImageDataset,
        transform: Callable[[Any], list[torch.Tensor]],
        seed: int,
        skip_bad_images: bool = False,
    ) -> None:
        self.data, self.transform, self.seed = data, transform, seed
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.data.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        for attempt in range(len(self.data.dataset)):
            row_index = (index + attempt) % len(self.data.dataset)
            try:
                return self._item(epoch, index, row_index)
            except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # what PIL raises
                where = self.data.describe_image(row_index)
                if not self.skip_bad_images:
                    raise ValueError(
                        f"Training {where} could not be decoded ({type(error).__name__}: {error}). Fix or "
                        "remove that file, or pass --skip-bad-images to train on the next image instead."
                    ) from error
                # The next row stands in, the same one every epoch and on resume: the run stays exact.
                logger.warning("Skipping training %s: it could not be decoded (%s).", where, error)
        raise ValueError("No training image could be decoded.")

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch of keys, its rows read from the data set at once: one Arrow query instead of one per
        row (14 instead of 25 ms for 256 Fashion-MNIST images). The DataLoader calls this when it exists.
        A batch with an image that does not decode is redone row by row, which names or skips it."""
        try:
            columns = self.data.dataset[[index for _, index in keys]]
            return [
                self._augment(epoch, index, {name: values[position] for name, values in columns.items()})
                for position, (epoch, index) in enumerate(keys)
            ]
        except (OSError, SyntaxError, Image.DecompressionBombError):  # what PIL raises
            return [self[key] for key in keys]

    def _item(self, epoch: int, index: int, row_index: int) -> dict[str, Any]:
        return self._augment(epoch, index, self.data.dataset[row_index])

    def _augment(self, epoch: int, index: int, row: dict[str, Any]) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator, the one the transforms draw from: torch.manual_seed would also queue a
            # lazy CUDA seeding, with a formatted stack trace, for every image (15 % of a worker's time).
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            item: dict[str, Any] = {"views": self.transform(row[self.data.image_column])}
        if self.data.label_column is not None:
            item["label"] = row[self.data.label_column]
        return item


def build_pretrain_loader(
    data: ImageDataset,
    *,
    framework: str,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    global_batch_size: int,
    per_process_batch_size: int,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    augment_on_device: bool = False,
    skip_bad_images: bool = False,
    low_priority_workers: bool = False,
) -> DataLoader:
    """The two-view pretraining DataLoader of one process, before ``accelerator.prepare``.

    Batches are ``{"views": [V tensors (b, 3, S, S)], "label": (b,)}`` (label only for labelled data);
    b: per-process batch, S: image_size. ``accelerator.prepare`` shards its batches over processes.
    The framework's view recipes come from :mod:`ibzoo.augment`. With ``augment_on_device`` the batches
    hold one uint8 (b, C, S, S) tensor of decoded, centre-cropped images instead (C = 1 when every image of
    the batch is greyscale, else 3), for
    :func:`ibzoo.batched_augment.build_batched_pretrain_augment` to turn into views on the accelerator.
    An image that does not decode stops training with an error naming it, or with ``skip_bad_images``
    is replaced by the next row that decodes. ``low_priority_workers`` (for training on the CPU) runs the
    workers at the lowest priority (:func:`lower_worker_priority`).

    Raises:
        ValueError: The data set holds fewer images than one global batch.
    """
    num_rows = len(data.dataset)
    if num_rows < global_batch_size:
        raise ValueError(
            f"The training split has {num_rows} images, fewer than one batch of {global_batch_size}; "
            "lower --batch-size (it is the global batch over all processes) or use more data."
        )
    if augment_on_device:
        transform = MultiViewTransform([build_decode_transform(image_size)])
    else:
        transform = build_pretrain_transform(framework, image_size, mean, std)
    return DataLoader(
        SeededViews(data, transform, seed, skip_bad_images),
        batch_size=per_process_batch_size,
        sampler=EpochShuffleSampler(num_rows, global_batch_size, seed),
        drop_last=True,  # the sampler already yields whole batches; this keeps every rank's batch full
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=lower_worker_priority if low_priority_workers else None,
    )

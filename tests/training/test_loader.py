import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.scripts import load_train_script
from ibzoo.augment import build_decode_transform
from ibzoo.data import ImageDataset
from ibzoo.training.config import parse_pretrain_args
from ibzoo.training.loader import (
    EpochShuffleSampler,
    SeededViews,
    build_pretrain_loader,
    default_num_workers,
    lower_worker_priority,
    sample_seed,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_images(num_rows: int = 10, labelled: bool = True) -> ImageDataset:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(num_rows)]
    columns, features = {"image": images}, {"image": datasets.Image()}
    if labelled:
        columns["label"] = [i % 3 for i in range(num_rows)]
        features["label"] = datasets.ClassLabel(names=["a", "b", "c"])
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return ImageDataset(dataset, "image", "label" if labelled else None, None, 3 if labelled else None)


def loader(data: ImageDataset, **kwargs):
    settings = dict(framework="simclr", image_size=8, mean=MEAN, std=STD, global_batch_size=4)
    settings |= dict(per_process_batch_size=4, seed=0, num_workers=0, pin_memory=False)
    return build_pretrain_loader(data, **(settings | kwargs))


def test_sampler_draws_each_epochs_permutation_from_seed_and_epoch():
    sampler = EpochShuffleSampler(num_rows=10, global_batch_size=4, seed=7)
    assert len(sampler) == 8  # whole global batches only
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected = torch.randperm(10, generator=torch.Generator().manual_seed(sample_seed(7, epoch)))[:8]
        assert list(sampler) == [(epoch, index) for index in expected.tolist()]
        assert list(sampler) == list(sampler)  # repeatable, whatever the global RNG does
    sampler.set_epoch(0)
    first = [index for _, index in sampler]
    sampler.set_epoch(1)
    assert first != [index for _, index in sampler]


def test_views_depend_on_seed_epoch_and_index_only():
    data = tiny_images()
    views = SeededViews(data, lambda image: [torch.rand(3)], seed=0)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    first = views[(0, 5)]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    torch.manual_seed(999)
    assert torch.equal(views[(0, 5)]["views"][0], first["views"][0])
    assert not torch.equal(views[(1, 5)]["views"][0], first["views"][0])
    assert not torch.equal(views[(0, 6)]["views"][0], first["views"][0])
    assert first["label"] == 5 % 3
    assert "label" not in SeededViews(tiny_images(labelled=False), lambda image: [torch.zeros(1)], 0)[(0, 1)]


def test_loader_batches_two_normalised_views_and_labels():
    batches = list(loader(tiny_images()))
    assert len(batches) == 2  # 10 images, global batch 4: the last 2 are left for another epoch
    views, labels = batches[0]["views"], batches[0]["label"]
    assert len(views) == 2 and all(view.shape == (4, 3, 8, 8) for view in views)
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert not torch.equal(views[0], views[1])  # two different augmentations of the same images
    assert views[0].min() < 0  # normalised with the given mean / std


def test_loader_is_independent_of_workers_and_batch_split():
    """Worker processes and per-process batch sizes change nothing: keys, not RNG streams, decide."""
    reference = list(loader(tiny_images()))
    with_worker = list(loader(tiny_images(), num_workers=1))
    split = list(loader(tiny_images(), per_process_batch_size=2))
    for batch, other in zip(reference, with_worker, strict=True):
        torch.testing.assert_close(batch, other, rtol=0, atol=0)
    rejoined = [torch.cat([split[2 * i]["views"][0], split[2 * i + 1]["views"][0]]) for i in range(2)]
    torch.testing.assert_close(rejoined, [batch["views"][0] for batch in reference], rtol=0, atol=0)


class _ReportPriority(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no process priorities on this OS")
def test_low_priority_workers_run_at_nice_19_and_give_the_same_batches():
    own = os.getpriority(os.PRIO_PROCESS, 0)
    workers = torch.utils.data.DataLoader(
        _ReportPriority(), num_workers=1, worker_init_fn=lower_worker_priority
    )
    assert [int(batch) for batch in workers] == [19] and os.getpriority(os.PRIO_PROCESS, 0) == own
    reference = list(loader(tiny_images(), num_workers=1))
    low = list(loader(tiny_images(), num_workers=1, low_priority_workers=True))
    torch.testing.assert_close(low, reference, rtol=0, atol=0)


def test_augment_on_device_loader_only_decodes_to_uint8():
    batches = list(loader(tiny_images(), augment_on_device=True))
    assert len(batches) == 2
    (images,) = batches[0]["views"]  # one decoded image per row; the views are made on the accelerator
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    # Rows are the sampler's order and the plain decode of each image: resize 12 -> 8, nothing random.
    sampler = EpochShuffleSampler(num_rows=10, global_batch_size=4, seed=0)
    first_rows = [index for _, index in sampler][:4]
    decode = build_decode_transform(8)
    expected = torch.stack([decode(tiny_images().dataset[index]["image"]) for index in first_rows])
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert torch.equal(batches[0]["label"], torch.tensor(first_rows) % 3)


def test_batch_larger_than_the_data_set_is_refused():
    with pytest.raises(ValueError, match=r"has 10 images, fewer than one batch of 16; lower --batch-size"):
        loader(tiny_images(), global_batch_size=16)


def test_sample_seed_mixes_keys():
    seeds = {sample_seed(seed, epoch, index) for seed in range(3) for epoch in range(3) for index in range(3)}
    assert len(seeds) == 27 and all(0 <= seed < 2**63 for seed in seeds)


@pytest.mark.parametrize(
    ("cores", "local_processes", "expected"),
    [(2, None, 2), (1, None, 1), (16, None, 4), (16, "8", 2), (2, "2", 1), (2, "4", 1)],
)
def test_default_workers_fit_the_cores_of_each_process(cores, local_processes, expected, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    if local_processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    assert default_num_workers() == expected


def test_every_script_defaults_to_the_shared_worker_count(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    flags = ["--model", "resnet18_cifar_simclr_mlp", "--data.dataset", "d"]
    assert parse_pretrain_args([*flags, "--output-dir", "o"]).num_workers == 3
    for script in ("finetune", "evaluate"):
        extra = ["--output-dir", "o"] if script == "finetune" else []
        assert load_train_script(script).parse_args([*flags, *extra]).num_workers == 3

"""Frozen-feature evaluation of a backbone: weighted k-NN and linear probes on pre-projector features Z1.

"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507)
judges a projector by what it leaves in the backbone's features Z1, the ones downstream tasks use, so
every number here is computed on Z1 with the projector thrown away:

- weighted k-NN (Wu et al., 2018, arXiv:1805.01978, as in solo-learn): cosine similarity to the k nearest
  training features, each neighbour votes for its class with weight exp(similarity / T);
- linear probe, ``"paper"`` protocol: the paper's (solo-learn's) linear evaluation, a linear classifier on
  frozen features trained with SGD; here on cached features, which equals a frozen backbone without the
  crop / flip augmentation solo-learn applies while training the classifier;
- linear probe, ``"fast"`` protocol: standardised features, full-batch L-BFGS on L2-regularised
  cross-entropy, the L2 weight chosen on a held-out tenth of the training features (never on test);
  seconds to a minute, for demos, tests and benchmarks.

An untrained backbone is a reference row only when it is a fair one: :func:`recalibrate_batchnorm`
gives it BatchNorm statistics of real images instead of the initial (0, 1).

Accuracies are percentages (0..100).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import timm.data
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from PIL import Image
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Subset

from ibzoo.augment import build_eval_transform, collate, with_views
from ibzoo.data import ImageDataset

__all__ = [
    "LinearProbeResult",
    "ProbeProtocol",
    "choose_probe_l2",
    "evaluate_backbone",
    "extract_features",
    "knn_accuracy",
    "linear_probe",
    "model_eval_transform",
    "recalibrate_batchnorm",
    "topk_accuracy",
]

ProbeProtocol = Literal["paper", "fast"]

# The paper's linear evaluation (solo-learn's linear.yaml for CIFAR and ImageNet-100).
PAPER_EPOCHS = 100
PAPER_BATCH_SIZE = 256
PAPER_LR = 0.1
PAPER_MOMENTUM = 0.9
PAPER_LR_MILESTONES = (60, 80)
PAPER_LR_DECAY = 0.1
FAST_MAX_ITERATIONS = 500
# The fast probe's L2 weights tried on the held-out part of the training features.
PROBE_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
PROBE_HOLDOUT_FRACTION = 0.1


class LinearProbeResult(NamedTuple):
    """Accuracies of a linear probe, in percent.

    Attributes:
        top1: Top-1 accuracy on the test features.
        top5: Top-5 accuracy on the test features (top-C when there are C < 5 classes).
        train_top1: Top-1 accuracy on the training features; far above ``top1`` means overfitting.
    """

    top1: float
    top5: float
    train_top1: float


def model_eval_transform(model: nn.Module) -> Callable[[Image.Image], Tensor]:
    """The model's own deterministic preprocessing: PIL image -> (3, S, S) normalised tensor.

    Input size, mean / std, crop_pct and interpolation come from the model's ``pretrained_cfg`` (timm's
    data config), so preprocessing travels with the model, and an RGB image gives the tensor that
    ``timm.data.create_transform(**timm.data.resolve_model_data_config(model))`` gives. The zoo's inputs
    are square; S is the input width.
    """
    config = timm.data.resolve_model_data_config(model)
    size, mean, std = config["input_size"][-1], config["mean"], config["std"]
    return build_eval_transform(size, mean, std, config["crop_pct"], config["interpolation"])


def extract_features(
    model: nn.Module, loader: Iterable[Any], accelerator: Accelerator | None = None
) -> tuple[Tensor, Tensor]:
    """Run the frozen ``model`` over ``loader`` and collect its outputs and the labels.

    The outputs are pooled features for a backbone (``num_classes=0``) and logits for a classifier.

    The model runs in eval mode under ``torch.inference_mode`` (its previous mode is restored). With an
    ``accelerator``, ``loader`` should be prepared by it: batches are gathered from every process with
    ``gather_for_metrics`` (so each process gets all N rows, without the padding of the last batch) and
    run under its autocast.

    Args:
        model: Maps images (B, C, H, W) to features (B, F), e.g. a timm model with ``num_classes=0``.
        loader: Yields :func:`ibzoo.augment.collate` batches, {"views": [images (B, C, H, W)], "label": (B,)}.

    Returns:
        features (N, F) float32 and labels (N,) int64, on the CPU; N: rows of the loader, F: features.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    features, labels = [], []
    with torch.inference_mode(), autocast:
        for batch in loader:
            if "label" not in batch:
                raise ValueError("The data loader yields no labels; evaluation needs a labelled data set.")
            batch_features = model(batch["views"][0].to(device)).float()
            if batch_features.ndim != 2:
                raise ValueError(
                    f"The model returns shape {tuple(batch_features.shape)}, not (B, F); build it with "
                    "num_classes=0 and a global pool so that it returns pooled features."
                )
            batch_labels = batch["label"].to(device)
            if accelerator is not None:
                batch_features, batch_labels = accelerator.gather_for_metrics((batch_features, batch_labels))
            features.append(batch_features.cpu())
            labels.append(batch_labels.cpu())
    model.train(was_training)
    if not features:
        raise ValueError("The data loader is empty; evaluation needs at least one labelled image.")
    # Concatenating outside inference mode gives ordinary tensors that probes can train on.
    return torch.cat(features), torch.cat(labels).long()


def _check_split(split: str, features: Tensor, labels: Tensor) -> None:
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(features) == 0:
        raise ValueError(
            f"{split} features must be (N, F) and labels (N,) with N >= 1, got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{split} labels must be integer class ids, got dtype {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError(f"{split} labels must be class ids >= 0, got {int(labels.min())}.")


def _num_classes(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor
) -> int:
    """Validate a train / test pair of feature sets and return the number of classes C."""
    _check_split("train", train_features, train_labels)
    _check_split("test", test_features, test_labels)
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features have different widths ({train_features.shape[1]} vs "
            f"{test_features.shape[1]}); extract both with the same model."
        )
    return int(max(train_labels.max(), test_labels.max())) + 1


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy (percent) of the weighted k-NN classifier of Wu et al. (2018) on L2-normalised features.

    Each test row takes its k most cosine-similar training rows; neighbour j adds exp(s_j / temperature)
    to the score of its class, and the highest score is the prediction. Test rows are processed
    ``chunk_size`` at a time, so memory stays O(chunk_size * N). ``k`` above N is clamped to N.

    Args:
        train_features: (N, F); train_labels: (N,) class ids.
        test_features: (M, F); test_labels: (M,) class ids. N: train rows, M: test rows, F: features.
    """
    num_classes = _num_classes(train_features, train_labels, test_features, test_labels)
    if k < 1 or temperature <= 0 or chunk_size < 1:
        raise ValueError(
            f"knn_accuracy needs k >= 1, temperature > 0 and chunk_size >= 1, got k={k}, "
            f"temperature={temperature}, chunk_size={chunk_size}."
        )
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1).to(train.device)
    train_labels, test_labels = train_labels.to(train.device), test_labels.to(train.device)
    correct = torch.zeros((), dtype=torch.int64, device=train.device)
    for start in range(0, len(test), chunk_size):
        similarity, neighbours = (test[start : start + chunk_size] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, device=train.device)
        votes.scatter_add_(1, train_labels[neighbours], (similarity / temperature).exp())
        correct += (votes.argmax(dim=1) == test_labels[start : start + chunk_size]).sum()
    return 100.0 * correct.item() / len(test)


def _fit_paper_probe(features: Tensor, labels: Tensor, classifier: nn.Linear, seed: int) -> None:
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=PAPER_LR, momentum=PAPER_MOMENTUM, weight_decay=0.0
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, PAPER_LR_MILESTONES, gamma=PAPER_LR_DECAY)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(PAPER_EPOCHS):
        order = torch.randperm(len(features), generator=generator).to(features.device)
        for batch in order.split(PAPER_BATCH_SIZE):
            loss = F.cross_entropy(classifier(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()


def _fit_fast_probe(features: Tensor, labels: Tensor, classifier: nn.Linear, l2: float) -> None:
    optimizer = torch.optim.LBFGS(
        classifier.parameters(),
        lr=1.0,
        max_iter=FAST_MAX_ITERATIONS,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(classifier(features), labels) + l2 * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Percentage of rows whose label is among the k largest logits (B, C); labels (B,). k is capped at C."""
    hits = (logits.topk(min(k, logits.shape[1]), dim=1).indices == labels[:, None]).any(dim=1)
    return 100.0 * hits.sum().item() / len(labels)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    protocol: ProbeProtocol = "fast",
    *,
    seed: int = 0,
    l2: float = 1e-4,
) -> LinearProbeResult:
    """Train a linear classifier on frozen training features and score it on the test features.

    ``"paper"``: raw features, SGD (momentum 0.9, no weight decay), batch 256, 100 epochs, lr 0.1 divided
    by 10 at epochs 60 and 80; ``seed`` fixes the batch order. ``"fast"``: features standardised with the
    training mean / std, full-batch L-BFGS (at most 500 iterations) on cross-entropy + ``l2`` * ||W||^2.
    Both start from a zero classifier (the problem is convex), so a result is a function of the inputs
    and ``seed``. Runs on the device of ``train_features``.

    Args:
        train_features: (N, F); train_labels: (N,) class ids.
        test_features: (M, F); test_labels: (M,) class ids. N: train rows, M: test rows, F: features.
    """
    num_classes = _num_classes(train_features, train_labels, test_features, test_labels)
    if protocol not in ("paper", "fast"):
        raise ValueError(f"Unknown linear-probe protocol {protocol!r}; choose 'paper' or 'fast'.")
    if l2 < 0:
        raise ValueError(f"linear_probe: l2={l2} must be >= 0.")
    device = train_features.device
    train_x, test_x = train_features.float(), test_features.to(device).float()
    train_y, test_y = train_labels.to(device).long(), test_labels.to(device).long()
    if protocol == "fast":
        mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classifier = nn.Linear(train_x.shape[1], num_classes, device=device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    with torch.enable_grad():
        if protocol == "paper":
            _fit_paper_probe(train_x, train_y, classifier, seed)
        else:
            _fit_fast_probe(train_x, train_y, classifier, l2)
    with torch.no_grad():
        test_logits, train_logits = classifier(test_x), classifier(train_x)
    return LinearProbeResult(
        top1=topk_accuracy(test_logits, test_y, 1),
        top5=topk_accuracy(test_logits, test_y, 5),
        train_top1=topk_accuracy(train_logits, train_y, 1),
    )


def choose_probe_l2(
    features: Tensor,
    labels: Tensor,
    grid: Iterable[float] = PROBE_L2_GRID,
    holdout_fraction: float = PROBE_HOLDOUT_FRACTION,
    seed: int = 0,
) -> float:
    """The fast probe's L2 weight from ``grid`` that scores best on a held-out part of the training set.

    A random ``holdout_fraction`` of the rows (drawn from ``seed``) is held out, a fast probe is fitted on
    the rest for each weight, and the weight with the best held-out top-1 wins (ties: the stronger
    regularisation). The test set is never looked at.

    Args:
        features: (N, F) training features; labels: (N,) class ids. N: rows, at least 2.
    """
    grid = sorted(grid, reverse=True)
    if len(features) < 2 or not 0 < holdout_fraction < 1 or not grid:
        raise ValueError(
            f"choose_probe_l2 needs >= 2 rows, 0 < holdout_fraction < 1 and a grid, got {len(features)} "
            f"rows, holdout_fraction={holdout_fraction}, grid={grid}."
        )
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    held_out = max(1, round(holdout_fraction * len(features)))
    fit, check = order[held_out:].to(features.device), order[:held_out].to(features.device)
    scores = [
        linear_probe(features[fit], labels[fit], features[check], labels[check], "fast", l2=l2).top1
        for l2 in grid
    ]
    return grid[scores.index(max(scores))]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: ImageDataset, num_images: int = 4096, batch_size: int = 256
) -> nn.Module:
    """Replace ``model``'s BatchNorm running statistics by their average over training images.

    For an untrained backbone, whose statistics are still (0, 1), so that the random-init reference row
    measures the architecture rather than a mismatched normalisation. Uses torch's ``update_bn`` (the
    statistics of ``num_images`` images, the first ones of ``data``, with the model's own evaluation
    preprocessing); weights do not change. Returns ``model``, in eval mode.
    """
    rows = Subset(with_views(data, model_eval_transform(model)), range(min(num_images, len(data.dataset))))
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=collate)
    device = next(model.parameters()).device
    update_bn((batch["views"][0].to(device) for batch in loader), model)
    return model.eval()


def evaluate_backbone(
    backbone: nn.Module,
    train_data: ImageDataset,
    test_data: ImageDataset,
    *,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    protocol: ProbeProtocol = "fast",
    probe_l2: float | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    seed: int = 0,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """k-NN and linear-probe accuracy of ``backbone``'s frozen features on a labelled train / test pair.

    Images are preprocessed with :func:`model_eval_transform`. With an ``accelerator`` the backbone is
    moved to its device, the loaders are sharded over its processes and the probes run on its device.
    The fast probe's L2 weight is ``probe_l2``, or by default the one :func:`choose_probe_l2` picks on
    held-out training features.

    Returns:
        {"knn_top1", "linear_top1", "linear_top5", "linear_train_top1" (percent), "linear_l2" (None for
        the paper protocol), "knn_k", "protocol", "num_train", "num_test", "feature_dim"}.
    """
    for split, data in (("train", train_data), ("test", test_data)):
        if data.label_column is None:
            raise ValueError(f"The {split} split has no label column; pass --data.label-column to name it.")
    transform = model_eval_transform(backbone)
    loaders = [
        DataLoader(
            with_views(data, transform), batch_size=batch_size, num_workers=num_workers, collate_fn=collate
        )
        for data in (train_data, test_data)
    ]
    device = torch.device("cpu")
    if accelerator is not None:
        backbone = backbone.to(accelerator.device)
        loaders = [accelerator.prepare_data_loader(loader) for loader in loaders]
        device = accelerator.device
    (train_x, train_y), (test_x, test_y) = (
        extract_features(backbone, loader, accelerator) for loader in loaders
    )
    train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
    knn_top1 = knn_accuracy(train_x, train_y, test_x, test_y, k=knn_k, temperature=knn_temperature)
    if protocol == "fast" and probe_l2 is None:
        probe_l2 = choose_probe_l2(train_x, train_y, seed=seed)
    probe = linear_probe(train_x, train_y, test_x, test_y, protocol, seed=seed, l2=probe_l2 or 0.0)
    return {
        "knn_top1": knn_top1,
        "linear_top1": probe.top1,
        "linear_top5": probe.top5,
        "linear_train_top1": probe.train_top1,
        "linear_l2": probe_l2 if protocol == "fast" else None,
        "knn_k": min(knn_k, len(train_x)),
        "protocol": protocol,
        "num_train": len(train_x),
        "num_test": len(test_x),
        "feature_dim": train_x.shape[1],
    }

import datasets
import numpy as np
import pytest
import timm
import torch

from helpers.images import brightness_images
from ibzoo.augment import collate, with_views
from ibzoo.data import ImageDataset
from ibzoo.evaluation import (
    PROBE_L2_GRID,
    choose_probe_l2,
    evaluate_backbone,
    extract_features,
    knn_accuracy,
    linear_probe,
    model_eval_transform,
    recalibrate_batchnorm,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussian_blobs(num_classes, num_train, num_test, dim=16, spread=4.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=generator) * spread
    train_labels = torch.randint(0, num_classes, (num_train,), generator=generator)
    test_labels = torch.randint(0, num_classes, (num_test,), generator=generator)
    train = centers[train_labels] + torch.randn(num_train, dim, generator=generator)
    test = centers[test_labels] + torch.randn(num_test, dim, generator=generator)
    return train, train_labels, test, test_labels


def brute_force_knn(train, train_labels, test, test_labels, k, temperature):
    """Wu et al. (2018)'s weighted vote, one test row at a time, in float64."""
    train = train.double().numpy()
    test = test.double().numpy()
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for row, label in zip(test, test_labels.tolist(), strict=True):
        similarity = train @ row
        neighbours = np.argsort(-similarity)[: min(k, len(train))]
        scores = np.zeros(num_classes)
        for j in neighbours:
            scores[int(train_labels[j])] += np.exp(similarity[j] / temperature)
        correct += int(np.argmax(scores) == label)
    return 100.0 * correct / len(test)


@pytest.mark.parametrize(
    ("k", "temperature", "chunk_size"), [(1, 0.1, 1024), (7, 0.1, 5), (20, 0.5, 13), (500, 0.07, 64)]
)
def test_knn_matches_brute_force(k, temperature, chunk_size):
    generator = torch.Generator().manual_seed(k)
    train, test = torch.randn(120, 8, generator=generator), torch.randn(50, 8, generator=generator)
    train_labels = torch.randint(0, 4, (120,), generator=generator)
    test_labels = torch.randint(0, 4, (50,), generator=generator)
    expected = brute_force_knn(train, train_labels, test, test_labels, k, temperature)
    got = knn_accuracy(
        train, train_labels, test, test_labels, k=k, temperature=temperature, chunk_size=chunk_size
    )
    assert got == pytest.approx(expected)
    assert 0.0 < got < 100.0  # random data: the comparison above is not between two trivial answers


def test_knn_separable_clusters_are_perfect():
    train, train_labels, test, test_labels = gaussian_blobs(5, 200, 100, spread=10.0)
    assert knn_accuracy(train, train_labels, test, test_labels, k=20) == 100.0


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_linear_probe_separates_blobs_and_not_random_labels(protocol):
    train, train_labels, test, test_labels = gaussian_blobs(5, 300, 200)
    result = linear_probe(train, train_labels, test, test_labels, protocol)
    assert result.top1 > 97.0 and result.top5 == 100.0 and result.train_top1 > 97.0

    generator = torch.Generator().manual_seed(1)
    random_train = torch.randint(0, 10, (300,), generator=generator)
    random_test = torch.randint(0, 10, (200,), generator=generator)
    chance = linear_probe(train, random_train, test, random_test, protocol)
    assert chance.top1 < 25.0  # 10 classes: 10% expected
    assert result.top5 >= result.top1


@pytest.mark.parametrize("protocol", ["fast", "paper"])
def test_linear_probe_is_deterministic(protocol):
    train, train_labels, test, test_labels = gaussian_blobs(4, 100, 60, spread=0.7)
    first = linear_probe(train, train_labels, test, test_labels, protocol, seed=3)
    second = linear_probe(train, train_labels, test, test_labels, protocol, seed=3)
    assert first == second
    assert 25.0 < first.top1 < 100.0  # overlapping blobs, so the accuracy depends on the training


def test_linear_probe_trains_on_inference_mode_features():
    train, train_labels, test, test_labels = gaussian_blobs(3, 60, 30)
    with torch.inference_mode():
        train, test = train.clone(), test.clone()
    assert linear_probe(train, train_labels, test, test_labels, "paper").top1 > 90.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(train_features=torch.zeros(10)), "must be \\(N, F\\)"),
        (dict(train_labels=torch.zeros(9, dtype=torch.long)), "must be \\(N, F\\)"),
        (dict(test_labels=torch.zeros(5)), "integer class ids"),
        (dict(train_labels=torch.full((10,), -1)), ">= 0"),
        (dict(test_features=torch.zeros(5, 3)), "different widths"),
        (dict(train_features=torch.zeros(0, 4), train_labels=torch.zeros(0, dtype=torch.long)), "N >= 1"),
    ],
)
def test_bad_inputs_raise(change, message):
    inputs = dict(
        train_features=torch.randn(10, 4),
        train_labels=torch.zeros(10, dtype=torch.long),
        test_features=torch.randn(5, 4),
        test_labels=torch.zeros(5, dtype=torch.long),
    )
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        knn_accuracy(**inputs)
    with pytest.raises(ValueError, match=message):
        linear_probe(**inputs)


def test_bad_settings_raise():
    features, labels = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="k >= 1"):
        knn_accuracy(features, labels, features, labels, k=0)
    with pytest.raises(ValueError, match="temperature > 0"):
        knn_accuracy(features, labels, features, labels, temperature=0.0)
    with pytest.raises(ValueError, match="choose 'paper' or 'fast'"):
        linear_probe(features, labels, features, labels, "sklearn")


def tiny_image_data(num_rows, seed=0):
    """Greyscale 24x24 images whose brightness is their class (0, 1 or 2)."""
    images, labels = brightness_images(num_rows, num_classes=3, size=24, seed=seed)
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b", "c"])})
    dataset = datasets.Dataset.from_dict({"img": images, "y": labels}, features=features)
    return ImageDataset(dataset, "img", "y", ("a", "b", "c"), 3)


@pytest.fixture(scope="module")
def tiny_backbone():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=0, pretrained_cfg_overlay=dict(input_size=(3, 32, 32)))


def test_extract_features_matches_a_direct_forward(tiny_backbone):
    data = tiny_image_data(10)
    transform = model_eval_transform(tiny_backbone)
    loader = torch.utils.data.DataLoader(with_views(data, transform), batch_size=4, collate_fn=collate)
    tiny_backbone.train()
    features, labels = extract_features(tiny_backbone, loader)

    assert tiny_backbone.training  # the caller's mode is restored
    assert features.shape == (10, tiny_backbone.num_features) and features.dtype == torch.float32
    torch.testing.assert_close(labels, torch.tensor([i % 3 for i in range(10)]))
    images = torch.stack([transform(image) for image in data.dataset["img"]])
    assert images.shape == (10, 3, 32, 32)
    tiny_backbone.eval()
    with torch.no_grad():
        expected = tiny_backbone(images)
    tiny_backbone.train()
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)


def test_extract_features_rejects_unpooled_models_and_unlabelled_batches(tiny_backbone):
    batch = {"views": [torch.zeros(2, 3, 32, 32)], "label": torch.zeros(2, dtype=torch.long)}
    unpooled = timm.create_model("resnet10t", num_classes=0, global_pool="")
    with pytest.raises(ValueError, match="num_classes=0 and a global pool"):
        extract_features(unpooled, [batch])
    with pytest.raises(ValueError, match="no labels"):
        extract_features(tiny_backbone, [{"views": batch["views"]}])
    with pytest.raises(ValueError, match="empty"):
        extract_features(tiny_backbone, [])


def test_evaluate_backbone_reports_every_number(tiny_backbone):
    result = evaluate_backbone(tiny_backbone, tiny_image_data(30), tiny_image_data(12, seed=1), knn_k=50)
    assert result["num_train"] == 30 and result["num_test"] == 12 and result["knn_k"] == 30
    assert result["feature_dim"] == tiny_backbone.num_features and result["protocol"] == "fast"
    assert result["linear_l2"] in PROBE_L2_GRID  # chosen on held-out training images
    # Brightness separates the classes even through random convolutions.
    assert result["linear_top1"] > 80.0 and result["knn_top1"] > 60.0
    unlabelled = tiny_image_data(5)
    unlabelled = ImageDataset(unlabelled.dataset.remove_columns("y"), "img", None, None, None)
    with pytest.raises(ValueError, match="no label column"):
        evaluate_backbone(tiny_backbone, unlabelled, unlabelled)


def test_probe_l2_is_chosen_on_held_out_training_rows_only(monkeypatch):
    """Few noisy rows in many dimensions overfit without L2; the held-out rows see it, the test set never."""
    train, train_labels, _, _ = gaussian_blobs(2, 120, 1, dim=200, spread=0.15, seed=3)
    seen = []
    original = linear_probe

    def recording_probe(train_x, train_y, test_x, test_y, *args, **kwargs):
        seen.append((len(train_x), len(test_x), kwargs["l2"]))
        return original(train_x, train_y, test_x, test_y, *args, **kwargs)

    monkeypatch.setattr("ibzoo.evaluation.linear_probe", recording_probe)
    chosen = choose_probe_l2(train, train_labels, grid=(1e-6, 1.0), seed=0)
    assert seen == [(108, 12, 1.0), (108, 12, 1e-6)]  # a tenth held out, strongest weight first
    assert chosen == 1.0
    # Every held-out score equal: the stronger regularisation wins.
    separable, labels, _, _ = gaussian_blobs(2, 60, 1, dim=4, spread=20.0, seed=1)
    assert choose_probe_l2(separable, labels, grid=(1e-6, 1e-3)) == 1e-3
    with pytest.raises(ValueError, match="holdout_fraction"):
        choose_probe_l2(separable, labels, holdout_fraction=1.0)


def test_recalibrate_batchnorm_replaces_the_initial_statistics(tiny_backbone):
    torch.manual_seed(0)
    backbone = timm.create_model(
        "resnet10t", num_classes=0, pretrained_cfg_overlay=dict(input_size=(3, 32, 32))
    )
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    weights = {
        k: v.clone()
        for k, v in backbone.state_dict().items()
        if "running" not in k and "num_batches" not in k
    }
    data = tiny_image_data(12)
    recalibrate_batchnorm(backbone, data, num_images=8, batch_size=4)

    assert not backbone.training
    first = norms[0]
    # The stem's statistics are now those of the first 8 images through the model's own preprocessing.
    images = torch.stack([model_eval_transform(backbone)(image) for image in data.dataset["img"][:8]])
    stem = backbone.conv1[0] if isinstance(backbone.conv1, torch.nn.Sequential) else backbone.conv1
    with torch.no_grad():
        activations = stem(images)
    torch.testing.assert_close(first.running_mean, activations.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in weights.items())  # weights untouched

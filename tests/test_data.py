"""Tests for ibzoo.data: every source kind, column detection, each error message, the built-in sets."""

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from helpers.idx import write_idx
from ibzoo.data import (
    FASHION_MNIST_CLASSES,
    DataConfig,
    build_digits_dataset,
    build_fashion_mnist_dataset,
    load_image_dataset,
    read_idx,
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _image(mode: str, seed: int, size: int = 8) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 4), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGBA").convert(mode)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/ and test/ splits, classes cat and dog, in RGB, greyscale and RGBA."""
    root = tmp_path / "images"
    for split in ("train", "test"):
        for label, class_name in enumerate(("cat", "dog")):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for index, mode in enumerate(("RGB", "L", "RGBA")):
                _image(mode, seed=10 * label + index).save(folder / f"{index}.png")
    return root


def _small_dataset(num_rows: int = 4) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {"image": [_image("RGB", i) for i in range(num_rows)], "label": [i % 2 for i in range(num_rows)]}
    return datasets.Dataset.from_dict(rows, features=features)


def test_image_folder_splits_columns_and_classes(image_folder: Path) -> None:
    config = DataConfig(str(image_folder))
    train = load_image_dataset(config, "train")
    test = load_image_dataset(config, "test")
    assert (train.image_column, train.label_column) == ("image", "label")
    assert train.class_names == ("cat", "dog") and train.num_classes == 2
    assert len(train.dataset) == len(test.dataset) == 6
    assert sorted(train.dataset["label"]) == [0, 0, 0, 1, 1, 1]
    assert {row["image"].mode for row in train.dataset} == {"RGB", "L", "RGBA"}


def test_parquet_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "parquet"
    folder.mkdir()
    _small_dataset().to_parquet(str(folder / "train.parquet"))
    _small_dataset(2).to_parquet(str(folder / "test.parquet"))
    from_folder = load_image_dataset(DataConfig(str(folder)), "test")
    from_file = load_image_dataset(DataConfig(str(folder / "train.parquet")), "train")
    assert len(from_folder.dataset) == 2 and len(from_file.dataset) == 4
    assert from_file.class_names == ("a", "b")
    assert from_file.dataset[0]["image"].size == (8, 8)


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    _small_dataset().save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": _small_dataset(4), "validation": _small_dataset(2)}).save_to_disk(
        str(tmp_path / "dict")
    )
    assert len(load_image_dataset(DataConfig(str(tmp_path / "single")), "train").dataset) == 4
    validation = load_image_dataset(DataConfig(str(tmp_path / "dict")), "validation")
    assert len(validation.dataset) == 2 and validation.num_classes == 2


def test_detection_prefers_image_feature_and_class_label(tmp_path: Path) -> None:
    features = datasets.Features(
        {
            "caption": datasets.Value("string"),
            "label": datasets.Value("int64"),
            "picture": datasets.Image(),
            "kind": datasets.ClassLabel(names=["x", "y", "z"]),
        }
    )
    rows = {"caption": ["a", "b"], "label": [0, 1], "picture": [_image("RGB", 0)] * 2, "kind": [2, 0]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    data = load_image_dataset(DataConfig(str(tmp_path / "ds")), "train")
    assert (data.image_column, data.label_column, data.num_classes) == ("picture", "kind", 3)


def test_integer_labels_without_class_label(tmp_path: Path) -> None:
    rows = {"img": [_image("RGB", i) for i in range(3)], "target": [3, 0, 1]}
    features = datasets.Features({"img": datasets.Image(), "target": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    data = load_image_dataset(DataConfig(str(tmp_path / "ds")), "train")
    assert (data.label_column, data.num_classes, data.class_names) == ("target", 4, None)


def test_string_labels_become_sorted_class_ids(tmp_path: Path) -> None:
    rows = {"image": [_image("RGB", i) for i in range(3)], "label": ["zebra", "ant", "zebra"]}
    datasets.Dataset.from_dict(
        rows, features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    ).save_to_disk(str(tmp_path / "ds"))
    data = load_image_dataset(DataConfig(str(tmp_path / "ds")), "train")
    assert data.class_names == ("ant", "zebra")
    assert data.dataset["label"] == [1, 0, 1]


def test_image_paths_column_is_decoded_when_named(tmp_path: Path) -> None:
    paths = []
    for index in range(2):
        paths.append(str(tmp_path / f"{index}.png"))
        _image("L", index).save(paths[-1])
    datasets.Dataset.from_dict({"file": paths, "label": [0, 1]}).save_to_disk(str(tmp_path / "ds"))
    data = load_image_dataset(DataConfig(str(tmp_path / "ds"), image_column="file"), "train")
    assert isinstance(data.dataset[1]["file"], Image.Image)
    assert data.label_column == "label" and data.num_classes == 2


def _save_rows(tmp_path: Path, rows: dict) -> str:
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


def test_no_image_column_error_lists_columns(tmp_path: Path) -> None:
    path = _save_rows(tmp_path, {"pixels": [1, 2], "label": [0, 1]})
    expected = r"No image column found.*\['pixels', 'label'\].*--data.image-column"
    with pytest.raises(ValueError, match=expected):
        load_image_dataset(DataConfig(path), "train")


@pytest.mark.parametrize("column", ["image", "label"])
def test_missing_explicit_column_lists_available(tmp_path: Path, column: str) -> None:
    path = _save_rows(tmp_path, {"img": [_image("RGB", 0)], "y": [0]})
    config = DataConfig(path, image_column="img" if column == "label" else "pic", label_column="nope")
    flag = "--data.image-column" if column == "image" else "--data.label-column"
    with pytest.raises(ValueError, match=rf"not found; available columns: \['img', 'y'\].*{flag}"):
        load_image_dataset(config, "train")


def test_integer_image_column_is_rejected(tmp_path: Path) -> None:
    path = _save_rows(tmp_path, {"pixels": [1, 2]})
    with pytest.raises(ValueError, match=r"Image column 'pixels' holds .*int64.*not images"):
        load_image_dataset(DataConfig(path, image_column="pixels"), "train")


def test_string_image_column_that_is_not_paths_is_rejected(tmp_path: Path) -> None:
    path = _save_rows(tmp_path, {"caption": ["a cat", "a dog"]})
    with pytest.raises(ValueError, match="Image column 'caption' does not hold images"):
        load_image_dataset(DataConfig(path, image_column="caption"), "train")


def test_float_label_column_is_rejected(tmp_path: Path) -> None:
    path = _save_rows(tmp_path, {"image": [_image("RGB", 0)], "score": [0.5]})
    with pytest.raises(ValueError, match=r"Label column 'score' holds .*not class ids"):
        load_image_dataset(DataConfig(path, image_column="image", label_column="score"), "train")


def test_unknown_split_lists_splits(image_folder: Path) -> None:
    with pytest.raises(KeyError, match=r"'validation' not found .*available splits: train, test"):
        load_image_dataset(DataConfig(str(image_folder)), "validation")


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a Hub dataset id"):
        load_image_dataset(DataConfig(str(tmp_path / "missing")), "train")


def test_non_parquet_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match=r"is a \.csv file; pass a \.parquet file or a folder"):
        load_image_dataset(DataConfig(str(tmp_path / "labels.csv")), "train")


def test_unreachable_hub_id_explains_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode makes datasets fail at once instead of retrying the network for about 25 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        FileNotFoundError, match=r"'uoft-cs/cifar10'.*offline.*HF_DATASETS_OFFLINE.*HF_ENDPOINT"
    ):
        load_image_dataset(DataConfig("uoft-cs/cifar10"), "train")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": " "}, "dataset"),
        ({"dataset": "x", "train_split": ""}, "train_split"),
        ({"dataset": "x", "eval_split": ""}, "eval_split"),
        ({"dataset": "x", "image_column": "a", "label_column": "a"}, "both 'a'"),
    ],
)
def test_data_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_digits_dataset(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    config = DataConfig(str(build_digits_dataset(tmp_path / "digits")))
    train, test = load_image_dataset(config, "train"), load_image_dataset(config, "test")
    assert (len(train.dataset), len(test.dataset)) == (1437, 360)
    assert train.class_names == tuple("0123456789") and train.num_classes == 10
    assert sorted(set(test.dataset["label"])) == list(range(10))
    image = train.dataset[0]["image"]
    assert (image.size, image.mode) == ((32, 32), "L")


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array)
    np.testing.assert_array_equal(read_idx(tmp_path / f"x-idx3-ubyte{suffix}"), array)


def test_fashion_mnist_from_synthetic_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    path = build_fashion_mnist_dataset(tmp_path / "out", idx_dir=tmp_path, subset=4)
    train = load_image_dataset(DataConfig(str(path)), "train")
    assert len(train.dataset) == 4 and train.class_names == FASHION_MNIST_CLASSES
    assert train.dataset[3]["label"] == 3 and train.dataset[0]["image"].size == (28, 28)


def test_fashion_mnist_missing_files_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build_fashion_mnist_dataset(tmp_path / "out", idx_dir=tmp_path)


def test_fashion_mnist_falls_back_to_a_loadable_copy(tmp_path: Path) -> None:
    """Without IDX files the images come from ``fallback`` (the Hub's copy; a local folder here)."""
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    copy = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"img": [_image("L", seed, 28) for seed in range(count)], "label": list(range(count))},
                features=features,
            )
            for split, count in (("train", 5), ("test", 3))
        }
    )
    copy.save_to_disk(str(tmp_path / "copy"))
    path = build_fashion_mnist_dataset(
        tmp_path / "out", idx_dir=tmp_path / "no-idx", subset=4, fallback=str(tmp_path / "copy")
    )
    train = load_image_dataset(DataConfig(str(path)), "train")
    test = load_image_dataset(DataConfig(str(path)), "test")
    assert (len(train.dataset), len(test.dataset)) == (4, 3) and train.class_names == FASHION_MNIST_CLASSES
    assert train.dataset["label"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.asarray(train.dataset[2]["image"]), np.asarray(_image("L", 2, 28)))

    with pytest.raises(
        FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*nowhere.*failed too"
    ):
        build_fashion_mnist_dataset(tmp_path / "out2", idx_dir=tmp_path, fallback=str(tmp_path / "nowhere"))


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_installed_files(tmp_path: Path) -> None:
    config = DataConfig(str(build_fashion_mnist_dataset(tmp_path / "fmnist", subset=20)))
    train, test = load_image_dataset(config, "train"), load_image_dataset(config, "test")
    assert (len(train.dataset), len(test.dataset), train.num_classes) == (20, 20, 10)
    # The first training image of Fashion-MNIST is an ankle boot (label 9).
    assert train.dataset[0]["label"] == 9
    assert train.dataset[0]["image"].mode == "L"

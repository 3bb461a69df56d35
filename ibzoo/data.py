"""Image classification data for pretraining and evaluation, loaded through Hugging Face ``datasets``.

One entry point, :func:`load_image_dataset`, takes a Hub dataset id (e.g. ``uoft-cs/cifar10``) or a
local path: a folder of images in class sub-folders (``imagefolder``), a parquet file or folder, or a
``save_to_disk`` folder. It finds the image column (the first ``Image`` feature) and the label column
(the first ``ClassLabel``, else a column named like a label) unless they are given. Augmentation lives
in :mod:`ibzoo.augment`; images are decoded lazily, one batch at a time, by ``datasets``.

Two small data sets are built offline, saved with ``save_to_disk`` so they load through the same path:
scikit-learn's 8x8 digits upscaled to 32x32, and Fashion-MNIST (Xiao et al., 2017,
https://arxiv.org/abs/1708.07747) from the IDX files of Debian's ``dataset-fashion-mnist`` package, or
copied from the Hub's ``zalando-datasets/fashion_mnist`` where those are missing.
"""

import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.data_files import EmptyDatasetError
from PIL import Image

logger = logging.getLogger(__name__)

LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "target")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Arrow types that can hold image files: paths or encoded bytes.
_FILE_DTYPES = ("string", "large_string", "binary", "large_binary")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class DataConfig:
    """Where a data set comes from and which of its parts to use.

    Args:
        dataset: A Hub dataset id such as ``uoft-cs/cifar10``, or a local folder or parquet file.
        train_split: Split used for pretraining and for fitting probes.
        eval_split: Split used for evaluation; None when there is none.
        image_column: Column holding the images; None picks the first ``Image`` column.
        label_column: Column holding class labels; None picks the first ``ClassLabel`` column, else
            one named label / labels / fine_label / target, else no labels.
        name: The Hub dataset's configuration name, for ids that have several.
        data_dir: Sub-folder of the Hub dataset to load.
    """

    dataset: str
    train_split: str = "train"
    eval_split: str | None = "test"
    image_column: str | None = None
    label_column: str | None = None
    name: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"DataConfig: dataset={self.dataset!r} must name a Hub dataset or local path.")
        for field in ("train_split", "eval_split", "image_column", "label_column", "name", "data_dir"):
            value = getattr(self, field)
            if field != "train_split" and value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"DataConfig: {field}={value!r} must be a non-empty string.")
        if self.image_column is not None and self.image_column == self.label_column:
            raise ValueError(
                f"DataConfig: image_column and label_column are both {self.image_column!r}; "
                "pass two different columns."
            )


@dataclass(frozen=True)
class ImageDataset:
    """One split of an image data set with its resolved columns.

    Attributes:
        dataset: The split; rows decode to ``PIL.Image`` in ``image_column``.
        image_column: Column of ``datasets.Image`` feature.
        label_column: Column of integer class ids, or None for unlabelled data.
        class_names: Class names in id order, when the labels are a ``ClassLabel``.
        num_classes: Number of classes, or None for unlabelled data.
    """

    dataset: datasets.Dataset
    image_column: str
    label_column: str | None
    class_names: tuple[str, ...] | None
    num_classes: int | None

    def describe_image(self, index: int) -> str:
        """Where row ``index``'s image comes from (its file, when the data set records one), for errors."""
        raw = self.dataset.cast_column(self.image_column, datasets.Image(decode=False))[index][
            self.image_column
        ]
        path = raw.get("path") if isinstance(raw, dict) else None
        return f"image {index} ({path})" if path else f"image {index} (stored in the data set, no file name)"


def load_image_dataset(config: DataConfig, split: str) -> ImageDataset:
    """Load one split of ``config.dataset`` and resolve its image and label columns.

    Raises:
        FileNotFoundError: The local path does not exist, or the Hub id could not be loaded.
        KeyError: ``split`` is not a split of the data set.
        ValueError: No image column can be found, a named column does not exist, or the image column
            does not hold images.
    """
    splits = _load_splits(config)
    if split not in splits:
        raise KeyError(
            f"Split {split!r} not found in {config.dataset!r}; available splits: {', '.join(splits)}. "
            "Pass one of them as --data.train-split / --data.eval-split."
        )
    dataset = splits[split]
    image_column = _resolve_image_column(dataset, config.image_column)
    if dataset.features[image_column] != datasets.Image():
        dataset = _cast_to_images(dataset, image_column)
    label_column = _resolve_label_column(dataset, config.label_column)
    class_names, num_classes = None, None
    if label_column is not None:
        feature = dataset.features[label_column]
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            # Names are sorted, so splits that hold the same names get the same ids.
            dataset = dataset.class_encode_column(label_column)
            feature = dataset.features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            class_names, num_classes = tuple(feature.names), feature.num_classes
        elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
            num_classes = int(max(dataset.unique(label_column))) + 1
        else:
            raise ValueError(
                f"Label column {label_column!r} holds {feature}, not class ids; pass another "
                "--data.label-column or cast it to integers / datasets.ClassLabel."
            )
    return ImageDataset(dataset, image_column, label_column, class_names, num_classes)


def _load_splits(config: DataConfig) -> dict[str, datasets.Dataset]:
    path = Path(config.dataset).expanduser()
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(
                f"{path} is a {path.suffix or 'suffix-less'} file; pass a .parquet file or a folder."
            )
        loaded = datasets.load_dataset("parquet", data_files={"train": str(path)})
    elif (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    elif path.is_dir():
        # Two levels cover parquet exports (data/train-*.parquet) without walking a large image tree.
        has_parquet = any(path.glob("*.parquet")) or any(path.glob("*/*.parquet"))
        builder = "parquet" if has_parquet else "imagefolder"
        try:
            loaded = datasets.load_dataset(builder, data_dir=str(path))
        except (ValueError, EmptyDatasetError) as error:
            # An empty folder (EmptyDatasetError), or class folders without images (a ValueError).
            if not isinstance(error, EmptyDatasetError) and "corresponds to no data" not in str(error):
                raise
            raise FileNotFoundError(
                f"{path} holds no images that datasets can read: an image folder holds one sub-folder per "
                "class (or train/ and test/ with class sub-folders) of image files (.png, .jpg, ...)."
            ) from None
    elif not _HUB_ID.match(config.dataset):
        raise FileNotFoundError(
            f"{config.dataset!r} is neither an existing file or folder nor a Hub dataset id "
            "(owner/name); check the path."
        )
    else:
        try:
            loaded = datasets.load_dataset(config.dataset, name=config.name, data_dir=config.data_dir)
        except (ConnectionError, FileNotFoundError) as error:
            raise FileNotFoundError(
                f"Could not load Hub dataset {config.dataset!r} ({error}), and no local file or folder has "
                "that name. This machine may be offline: pass a local folder (imagefolder tree, parquet "
                "files or a save_to_disk folder), or set HF_DATASETS_OFFLINE=1 to use datasets cached "
                "earlier, or HF_ENDPOINT to reach a mirror."
            ) from error
    if isinstance(loaded, datasets.Dataset):
        return {str(loaded.split or "train"): loaded}
    return dict(loaded)


def _resolve_image_column(dataset: datasets.Dataset, requested: str | None) -> str:
    columns = list(dataset.features)
    if requested is not None:
        _require_column(dataset, requested, "--data.image-column")
        return requested
    for column in columns:
        if isinstance(dataset.features[column], datasets.Image):
            return column
    raise ValueError(
        f"No image column found: none of the columns {columns} has a datasets.Image feature. "
        "Pass the column that holds images (file paths or encoded bytes) as --data.image-column."
    )


def _cast_to_images(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """Decode ``column`` as images (paths or encoded bytes), checking the first row."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(column, datasets.Image())
    holds_files = isinstance(feature, datasets.Value) and feature.dtype in _FILE_DTYPES
    if not holds_files:
        raise ValueError(
            f"Image column {column!r} holds {feature}, not images; pass the column that holds images "
            "as --data.image-column."
        )
    dataset = dataset.cast_column(column, datasets.Image())
    try:
        dataset[0][column]
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Image column {column!r} does not hold images: its first value could not be decoded "
            f"({error}). Pass the column that holds image files or bytes as --data.image-column."
        ) from error
    return dataset


def _resolve_label_column(dataset: datasets.Dataset, requested: str | None) -> str | None:
    if requested is not None:
        _require_column(dataset, requested, "--data.label-column")
        return requested
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            return column
    return next((name for name in LABEL_COLUMN_NAMES if name in dataset.features), None)


def _require_column(dataset: datasets.Dataset, column: str, flag: str) -> None:
    if column not in dataset.features:
        raise ValueError(
            f"Column {column!r} not found; available columns: {list(dataset.features)}. Pass one of them "
            f"as {flag}."
        )


def _save_splits(
    path: str | Path, splits: dict[str, tuple[list[Image.Image], np.ndarray]], class_names: tuple[str, ...]
) -> Path:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)})
    dataset_dict = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)
            for split, (images, labels) in splits.items()
        }
    )
    path = Path(path)
    dataset_dict.save_to_disk(str(path))
    logger.info("Saved %s to %s", {name: len(split) for name, split in dataset_dict.items()}, path)
    return path


def build_digits_dataset(path: str | Path, test_size: int = 360, seed: int = 0) -> Path:
    """Save scikit-learn's 1797 handwritten digits as 32x32 greyscale images with train / test splits.

    The 8x8 images (values 0..16) are scaled to 0..255 and upscaled bilinearly to 32x32, the input size
    of the CIFAR models. The split is stratified and fixed by ``seed``. Needs scikit-learn (dev extra).

    Returns:
        ``path``, a ``save_to_disk`` folder for :func:`load_image_dataset`; labels are a ClassLabel
        named "0".."9".
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError(
            "build_digits_dataset needs scikit-learn: pip install scikit-learn (or ibzoo[dev])."
        ) from error
    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR) for image in pixels]
    train_ids, test_ids = train_test_split(
        np.arange(len(images)), test_size=test_size, stratify=digits.target, random_state=seed
    )
    splits = {
        name: ([images[i] for i in ids], digits.target[ids])
        for name, ids in (("train", train_ids), ("test", test_ids))
    }
    return _save_splits(path, splits, tuple(str(digit) for digit in range(10)))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST's format, optionally gzip'ed) into a uint8 array of its stored shape."""
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as file:
        data = file.read()
    zeros, dtype_code, ndim = data[0:2], data[2], data[3]
    if zeros != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def build_fashion_mnist_dataset(
    path: str | Path,
    idx_dir: str | Path = "/usr/share/datasets/fashion-mnist",
    subset: int | None = None,
    fallback: str | None = None,
) -> Path:
    """Save Fashion-MNIST (60000 train / 10000 test 28x28 greyscale images, 10 classes) from IDX files.

    Args:
        path: Folder to write with ``save_to_disk``.
        idx_dir: Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, as installed by
            ``apt-get install dataset-fashion-mnist``.
        subset: Keep at most this many images of each split (the first ones), for quick runs.
        fallback: Where to copy Fashion-MNIST from when ``idx_dir`` lacks the IDX files: anything
            :func:`load_image_dataset` loads with ``train`` and ``test`` splits, such as the Hub's
            ``zalando-datasets/fashion_mnist`` (the same images, in the same order). None: no fallback.

    Returns:
        ``path``, for :func:`load_image_dataset`; labels are a ClassLabel with the Fashion-MNIST names.
    """
    if subset is not None and subset < 1:
        raise ValueError(f"build_fashion_mnist_dataset: subset={subset!r} must be None or positive.")
    try:
        splits = _read_fashion_mnist_idx(Path(idx_dir), subset)
    except FileNotFoundError as missing:
        if fallback is None:
            raise
        logger.info("%s; copying Fashion-MNIST from %s instead", missing, fallback)
        try:
            splits = _first_images(DataConfig(fallback), subset)
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise FileNotFoundError(f"{missing} Copying it from {fallback!r} failed too: {error}") from error
    return _save_splits(path, splits, FASHION_MNIST_CLASSES)


def _read_fashion_mnist_idx(
    idx_dir: Path, subset: int | None
) -> dict[str, tuple[list[Image.Image], np.ndarray]]:
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            candidates = [idx_dir / f"{prefix}-{kind}-ubyte{suffix}" for suffix in (".gz", "")]
            found = next((candidate for candidate in candidates if candidate.is_file()), None)
            if found is None:
                raise FileNotFoundError(
                    f"Fashion-MNIST file {candidates[0]} not found. Install it with "
                    "`apt-get install dataset-fashion-mnist`, or pass idx_dir= the folder of the IDX files."
                )
            arrays.append(read_idx(found)[:subset])
        images, labels = arrays
        splits[split] = ([Image.fromarray(image) for image in images], labels)
    return splits


def _first_images(config: DataConfig, subset: int | None) -> dict[str, tuple[list[Image.Image], np.ndarray]]:
    """The first ``subset`` images and labels of the train and test splits of any loadable data set."""
    splits = {}
    for split in ("train", "test"):
        data = load_image_dataset(config, split)
        if data.label_column is None:
            raise ValueError(f"{config.dataset!r} has no label column in its {split!r} split.")
        rows = data.dataset.select(range(min(subset or len(data.dataset), len(data.dataset))))
        splits[split] = (list(rows[data.image_column]), np.asarray(rows[data.label_column]))
    return splits

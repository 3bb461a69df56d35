"""The end-to-end demo behind ``make demo``: offline, on 2 CPU cores, in a few minutes.

1. builds Fashion-MNIST as a ``datasets`` folder (60000 train / 10000 test 28 px greyscale images), from the
   IDX files of ``apt-get install dataset-fashion-mnist`` when installed, else from the Hub's copy;
2. pretrains ``resnet18_simclr_mlp.fmnist`` on it with ``train/pretrain.py``: the first 468 steps (2 epochs
   at 32 px, batch 256) of the SimCLR learning curve's 16-epoch schedule (``train/benchmark_curve.py``,
   README "Benchmark on Fashion-MNIST"), where its frozen features scored 84.5 % linear / 78.2 % k-NN
   against the fair random-init reference's 76.1 % / 76.1 %. (A whole 1-epoch schedule measured 82.0 % /
   71.0 %: above the reference on the linear probe, below it on k-NN.);
3. evaluates the frozen encoder (k-NN and linear probe) beside the fair reference, the same backbone at
   random init with its BatchNorm statistics recalibrated on training images, and prints the margin;
4. starts a local Hub-protocol server, pushes the trained model to it and loads it back with
   ``ibzoo.create_model("hf-hub:...", pretrained=True)``, checking the features equal the trained model's.

Everything is written under ``demo-output/``. Run ``python train/demo.py --help`` for the knobs.
"""

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

OUTPUT = Path("demo-output")
MODEL = "resnet18_simclr_mlp"
TAG = "fmnist"
RECALIBRATION_IMAGES = 4096  # as train/benchmark_fmnist.py's fair reference
SCHEDULE_EPOCHS = 16  # the SimCLR learning curve's schedule, whose first steps the demo trains


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# huggingface_hub reads its endpoint and cache folders once, at import: point them at the local Hub
# and a demo-only cache before anything imports it (ibzoo, timm and datasets all do).
HUB_PORT = _free_port()
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HOME=str((OUTPUT / "hf-home").resolve()),
    HF_HUB_DISABLE_TELEMETRY="1",
)

import torch  # noqa: E402

import ibzoo  # noqa: E402
from ibzoo.data import DataConfig, build_fashion_mnist_dataset, load_image_dataset  # noqa: E402
from ibzoo.evaluation import evaluate_backbone, recalibrate_batchnorm  # noqa: E402
from ibzoo.hub import push_to_hub  # noqa: E402
from ibzoo.models.datasets import DATASETS  # noqa: E402
from ibzoo.testing import LocalHub  # noqa: E402


def pretrain(data_dir: Path, run_dir: Path, steps: int) -> None:
    command = [
        sys.executable, "train/pretrain.py",
        "--model", f"{MODEL}.{TAG}",
        "--data.dataset", str(data_dir),
        "--output-dir", str(run_dir),
        "--epochs", str(SCHEDULE_EPOCHS),
        "--max-steps", str(steps),
        "--optimizer.warmup-epochs", f"{0.05 * SCHEDULE_EPOCHS:g}",  # the reference's 10 of 200 epochs
        "--mixed-precision", "bf16",
        "--num-workers", "1",
        "--log-every", "20",
        "--cpu",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def fashion_mnist(idx_dir: str) -> Path:
    """Fashion-MNIST as a datasets folder: the IDX files when installed, else the Hub's copy."""
    folder = OUTPUT / "fashion-mnist"
    if (folder / "dataset_dict.json").is_file():
        return folder
    try:
        return build_fashion_mnist_dataset(folder, idx_dir, fallback=DATASETS[TAG].hf_dataset)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise SystemExit(
            f"make demo needs Fashion-MNIST: install its IDX files (apt-get install dataset-fashion-mnist, "
            f"into {idx_dir}) or let it download from the Hub ({DATASETS[TAG].hf_dataset}). ({error})"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=468, help="pretraining steps of the 16-epoch schedule (default: 468)"
    )
    parser.add_argument(
        "--idx-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX files"
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: pretrain for at least 1 step.")
    torch.manual_seed(0)

    data_dir = fashion_mnist(args.idx_dir)
    run_dir = OUTPUT / "run"
    pretrain(data_dir, run_dir, args.steps)

    data = DataConfig(dataset=str(data_dir))
    train, test = load_image_dataset(data, "train"), load_image_dataset(data, "test")
    trained = ibzoo.create_model(f"local-dir:{(run_dir / 'model').resolve()}", pretrained=True)
    # The fair reference: the same architecture untrained, preprocessed exactly like the trained one, its
    # BatchNorm statistics recalibrated on training images (initial statistics would handicap it).
    preprocessing = {key: trained.pretrained_cfg[key] for key in ("input_size", "mean", "std", "crop_pct")}
    random_init = ibzoo.create_model(f"{MODEL}.{TAG}", pretrained_cfg_overlay=preprocessing)
    random_init = recalibrate_batchnorm(random_init, train, RECALIBRATION_IMAGES)
    print(
        f"\nFrozen encoder features on Fashion-MNIST ({len(train.dataset)} train / {len(test.dataset)} test):"
    )
    print(f"{'backbone':<44}{'k-NN top-1':>12}{'linear top-1':>14}")
    scores = {}
    for label, backbone in (
        (f"pretrained ({args.steps} SimCLR steps)", trained),
        ("random init, BatchNorm recalibrated (fair)", random_init),
    ):
        scores[label] = evaluate_backbone(backbone, train, test)
        print(f"{label:<44}{scores[label]['knn_top1']:>11.1f}%{scores[label]['linear_top1']:>13.1f}%")
    pretrained, reference = scores.values()
    print(
        f"{'margin (points)':<44}{pretrained['knn_top1'] - reference['knn_top1']:>+12.1f}"
        f"{pretrained['linear_top1'] - reference['linear_top1']:>+14.1f}"
    )

    with LocalHub(OUTPUT / "hub", port=HUB_PORT) as hub:
        repo_id = f"demo/{MODEL}-{TAG}"
        print(f"\nPushing {run_dir / 'model'} to the local Hub at {hub.endpoint} as {repo_id} ...")
        print("commit:", push_to_hub(run_dir / "model", repo_id, commit_message="Demo run on Fashion-MNIST"))
        loaded = ibzoo.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
        images = torch.randn(4, 3, 32, 32)
        with torch.inference_mode():
            same = torch.equal(loaded(images), trained.eval()(images))
        print(f"ibzoo.create_model('hf-hub:{repo_id}', pretrained=True)")
        print(f"  features equal the trained model's: {same}")
        if not same:
            raise SystemExit("The model loaded from the Hub differs from the trained one.")


if __name__ == "__main__":
    main()

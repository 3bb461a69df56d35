"""The end-to-end demo behind ``make demo``: offline, on 2 CPU cores, in a few minutes.

1. builds scikit-learn's digits as a ``datasets`` folder (32x32 greyscale, 1437 train / 360 test images);
2. pretrains ``resnet18_cifar_simclr_topk`` on it with ``train/pretrain.py`` (a short run at 16 px with a
   smaller top-k layer than the paper's 100000 latents, so it fits the time: the 8x8 digits lose nothing);
3. evaluates the frozen encoder (k-NN and linear probe) beside the same backbone at random init (the
   default 66 steps show that the chain works, not that pretraining helps: the README's Fashion-MNIST
   benchmark measures that);
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
MODEL = "resnet18_cifar_simclr_topk"


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
from ibzoo.data import DataConfig, build_digits_dataset, load_image_dataset  # noqa: E402
from ibzoo.evaluation import evaluate_backbone  # noqa: E402
from ibzoo.hub import push_to_hub  # noqa: E402
from ibzoo.testing import LocalHub  # noqa: E402


def pretrain(data_dir: Path, run_dir: Path, epochs: int) -> None:
    command = [
        sys.executable, "train/pretrain.py",
        "--model", f"{MODEL}.cifar10",
        "--data.dataset", str(data_dir),
        "--output-dir", str(run_dir),
        "--epochs", str(epochs),
        "--batch-size", "128",
        "--image-size", "16",
        "--optimizer.warmup-epochs", "1",
        "--projector.topk-latents", "8192",
        "--projector.topk-k", "128",
        "--mean", "0.5", "0.5", "0.5",
        "--std", "0.5", "0.5", "0.5",
        "--num-workers", "2",
        "--log-every", "5",
        "--cpu",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6, help="pretraining epochs (default: 6)")
    args = parser.parse_args()
    torch.manual_seed(0)

    data_dir = build_digits_dataset(OUTPUT / "digits")
    run_dir = OUTPUT / "run"
    pretrain(data_dir, run_dir, args.epochs)

    data = DataConfig(dataset=str(data_dir))
    train, test = load_image_dataset(data, "train"), load_image_dataset(data, "test")
    trained = ibzoo.create_model(f"local-dir:{(run_dir / 'model').resolve()}", pretrained=True)
    # The same architecture untrained, preprocessed exactly like the trained one.
    preprocessing = {key: trained.pretrained_cfg[key] for key in ("input_size", "mean", "std", "crop_pct")}
    random_init = ibzoo.create_model(MODEL, pretrained_cfg_overlay=preprocessing)
    print(f"\nFrozen encoder features on digits ({len(train.dataset)} train / {len(test.dataset)} test):")
    print(f"{'backbone':<28}{'k-NN top-1':>12}{'linear top-1':>14}")
    for label, backbone in (("pretrained (demo run)", trained), ("random init", random_init)):
        result = evaluate_backbone(backbone, train, test, knn_k=20)
        print(f"{label:<28}{result['knn_top1']:>11.1f}%{result['linear_top1']:>13.1f}%")
    print(
        "(a few dozen steps show that the chain works, not that pretraining helps; on digits a random\n"
        " ResNet is already strong. README, 'Benchmark on Fashion-MNIST', measures what pretraining gives.)"
    )

    with LocalHub(OUTPUT / "hub", port=HUB_PORT) as hub:
        repo_id = f"demo/{MODEL}-digits"
        print(f"\nPushing {run_dir / 'model'} to the local Hub at {hub.endpoint} as {repo_id} ...")
        print("commit:", push_to_hub(run_dir / "model", repo_id, commit_message="Demo run on digits"))
        loaded = ibzoo.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
        images = torch.randn(4, 3, 16, 16)
        with torch.inference_mode():
            same = torch.equal(loaded(images), trained.eval()(images))
        print(f"ibzoo.create_model('hf-hub:{repo_id}', pretrained=True)")
        print(f"  features equal the trained model's: {same}")
        if not same:
            raise SystemExit("The model loaded from the Hub differs from the trained one.")


if __name__ == "__main__":
    main()

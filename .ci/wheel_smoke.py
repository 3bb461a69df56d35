"""What a user of the wheel does, run by ``.ci/test-wheel`` in a fresh venv outside the checkout.

    python wheel_smoke.py CHECKOUT WORK_DIR

1. ``ibzoo`` is imported from the venv's site-packages, not from the checkout, and the installed
   package holds every module and template of the checkout (``hub_cards/`` as ``ibzoo.hub_cards``);
2. a model is saved with ``ibzoo.hub.save_pretrained`` (model card included: the template must be in
   the wheel), pushed to a local Hub (``ibzoo.testing.LocalHub``) and loaded back by its ``hf-hub:``
   name and from a folder outside the checkout (``local-dir:``), with the same weights.

Exits non-zero, with the reason, on the first difference.
"""

import os
import socket
import sys
import sysconfig
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_installed_files(checkout: Path) -> None:
    """ibzoo comes from the venv's site-packages and holds each module and template of ``checkout``."""
    import ibzoo

    installed = Path(ibzoo.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    if installed.parent != site_packages:
        sys.exit(f"ibzoo was imported from {installed}, not from the installed wheel in {site_packages}.")
    expected = {path.relative_to(checkout).as_posix() for path in (checkout / "ibzoo").rglob("*.py")}
    expected |= {"ibzoo/py.typed"}
    expected |= {
        f"ibzoo/hub_cards/{path.name}" for path in (checkout / "hub_cards").iterdir() if path.is_file()
    }
    missing = sorted(name for name in expected if not (installed.parent / name).is_file())
    if missing:
        sys.exit(f"The wheel lacks {', '.join(missing)}: list new packages in pyproject.toml.")
    print(f"installed package {installed}: {len(expected)} files of the checkout, none missing")


def save_push_load(work: Path) -> None:
    """save_pretrained -> push_to_hub (local Hub) -> create_model from the Hub and from a folder."""
    import torch

    import ibzoo
    from ibzoo.hub import push_to_hub, save_pretrained
    from ibzoo.projectors import ProjectorConfig
    from ibzoo.testing import LocalHub

    torch.manual_seed(0)
    small_head = ProjectorConfig(hidden_features=(64,), out_features=32)
    model = ibzoo.create_pretraining_model("resnet18_cifar_simclr_mlp", projector_config=small_head)
    folder = save_pretrained(model, work / "saved", model_name="wheel-smoke")
    if "# wheel-smoke" not in (folder / "README.md").read_text():
        sys.exit(f"{folder}/README.md is not the rendered model card.")
    port = int(os.environ["HF_ENDPOINT"].rsplit(":", 1)[1])
    with LocalHub(work / "hub", port=port):
        print("pushed:", push_to_hub(folder, "me/wheel-smoke"))
        from_hub = ibzoo.create_pretraining_model("hf-hub:me/wheel-smoke", pretrained=True)
    from_folder = ibzoo.create_model(f"local-dir:{folder}", pretrained=True)
    expected = model.state_dict()
    for loaded in (from_hub.state_dict(), {f"backbone.{k}": v for k, v in from_folder.state_dict().items()}):
        for key, value in loaded.items():
            if not torch.equal(value, expected[key]):
                sys.exit(f"{key} differs after save -> push -> load.")
    print("save_pretrained -> push_to_hub -> create_model (hf-hub: and local-dir:): same weights")


def main() -> None:
    checkout, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    if Path.cwd().resolve().is_relative_to(checkout):
        sys.exit("Run this from a folder outside the checkout.")
    # huggingface_hub reads these when first imported (ibzoo imports it): a local Hub and a fresh cache.
    os.environ.update(
        HF_ENDPOINT=f"http://127.0.0.1:{_free_port()}",
        HF_HOME=str(work / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)
    check_installed_files(checkout)
    save_push_load(work)


if __name__ == "__main__":
    main()

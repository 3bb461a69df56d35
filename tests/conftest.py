"""Pytest plumbing shared by the whole suite.

Hub isolation. ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and its cache folders once, when
it is first imported (timm, datasets and ibzoo import it), so they are set here, when pytest imports
this file and before any test module is collected. Every Hub call then goes to the local Hub of the
``local_hub`` fixture, on a port picked now, and every cache lives in a temporary folder: tests never
reach the network, never read ``~/.cache`` and never send the developer's token.
"""

import atexit
import os
import shutil
import socket
import sys
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point it at the local Hub "
        "(a pytest plugin?): run pytest with that plugin disabled (-p no:NAME)."
    )

LOCAL_HUB_PORT = _free_port()
_HF_HOME = tempfile.mkdtemp(prefix="ibzoo-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{LOCAL_HUB_PORT}",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HOME=_HF_HOME,
    HF_HUB_CACHE=os.path.join(_HF_HOME, "hub"),
    HF_DATASETS_CACHE=os.path.join(_HF_HOME, "datasets"),
)
# The caller's shell must not change what the tests see: offline switches are the hf_offline fixture's job.
for _name in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory):
    """The :class:`ibzoo.testing.LocalHub` that ``HF_ENDPOINT`` points at, serving for the whole session.

    Repos outlive the test that made them: give each test its own repo name. ``local_hub.requests``
    lists the (method, path) of every request served.
    """
    from ibzoo.testing import LocalHub

    with LocalHub(tmp_path_factory.mktemp("local-hub"), port=LOCAL_HUB_PORT) as hub:
        yield hub


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make huggingface_hub (and datasets) behave as under ``HF_HUB_OFFLINE=1`` for one test.

    huggingface_hub 2.4 reads the variable once, into ``constants.HF_HUB_OFFLINE``, and consults that
    constant through ``constants.is_offline_mode()`` before sending each request, so patching it is
    enough; datasets keeps its own copy in ``datasets.config``. The variable is set for subprocesses.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    if (datasets_config := sys.modules.get("datasets.config")) is not None:
        monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread: for tiny tensors on a busy machine, handing work to
    several threads costs 10-50x more time than it saves."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The local Hub against huggingface_hub's real client and timm's ``hf-hub:`` loading, over HTTP."""

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RevisionNotFoundError,
)
from safetensors.torch import save_file
from timm.models import push_to_hf_hub

from ibzoo.testing import LocalHub
from ibzoo.testing.hub_storage import git_blob_oid


@dataclass(frozen=True)
class UploadedRepo:
    repo_id: str
    commit_id: str
    files: dict[str, bytes]  # path in repo -> content, as uploaded


@pytest.fixture(scope="module")
def uploaded(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> UploadedRepo:
    """A repo holding a small text file and a ~3 MB safetensors file, uploaded with upload_folder."""
    folder = tmp_path_factory.mktemp("upload")
    (folder / "notes.txt").write_text("trained on nothing\n")
    save_file(
        {"weight": torch.randn(750_000, generator=torch.Generator().manual_seed(0))},
        folder / "model.safetensors",
    )
    api = HfApi()
    api.create_repo("ibzoo-tests/uploaded")
    commit = api.upload_folder(repo_id="ibzoo-tests/uploaded", folder_path=folder, commit_message="weights")
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    return UploadedRepo("ibzoo-tests/uploaded", commit.oid, files)


def test_create_repo_conflicts_unless_exist_ok(local_hub: LocalHub) -> None:
    api = HfApi()
    url = api.create_repo("ibzoo-tests/created")
    assert url == f"{local_hub.endpoint}/ibzoo-tests/created"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("ibzoo-tests/created")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("ibzoo-tests/created", exist_ok=True).repo_id == "ibzoo-tests/created"
    assert api.repo_exists("ibzoo-tests/created")
    assert not api.repo_exists("ibzoo-tests/never-created")
    assert local_hub.repo_files("ibzoo-tests/created") == {}


def test_upload_folder_stores_every_file(local_hub: LocalHub, uploaded: UploadedRepo) -> None:
    api = HfApi()
    assert local_hub.repo_files(uploaded.repo_id) == uploaded.files
    assert local_hub.repo_files(uploaded.repo_id, revision=uploaded.commit_id) == uploaded.files
    assert api.list_repo_files(uploaded.repo_id) == sorted(uploaded.files)
    assert api.model_info(uploaded.repo_id).sha == uploaded.commit_id
    assert api.file_exists(uploaded.repo_id, "notes.txt")
    assert not api.file_exists(uploaded.repo_id, "missing.txt")


@pytest.mark.parametrize("by_commit_id", [False, True])
def test_hf_hub_download_by_branch_and_commit(uploaded: UploadedRepo, by_commit_id: bool) -> None:
    revision = uploaded.commit_id if by_commit_id else "main"
    for name, content in uploaded.files.items():
        cached = Path(hf_hub_download(uploaded.repo_id, name, revision=revision))
        assert cached.read_bytes() == content
        assert cached.parent.name == uploaded.commit_id
        # As after a Hub download: weights are cached under their sha256 (LFS), text files under their git id.
        is_lfs = name.endswith(".safetensors")
        expected_blob_name = hashlib.sha256(content).hexdigest() if is_lfs else git_blob_oid(content)
        assert cached.resolve().name == expected_blob_name


def test_snapshot_download_fetches_the_whole_commit(uploaded: UploadedRepo) -> None:
    snapshot = Path(snapshot_download(uploaded.repo_id))
    assert snapshot.name == uploaded.commit_id
    assert {path.name: path.read_bytes() for path in snapshot.iterdir()} == uploaded.files


def test_identical_upload_makes_no_commit(
    local_hub: LocalHub, uploaded: UploadedRepo, tmp_path: Path
) -> None:
    for name, content in uploaded.files.items():
        (tmp_path / name).write_bytes(content)
    first_request = len(local_hub.requests)
    commit = HfApi().upload_folder(repo_id=uploaded.repo_id, folder_path=tmp_path)
    assert commit.oid == uploaded.commit_id
    assert not [path for method, path in local_hub.requests[first_request:] if "/commit/" in path]


def test_branch_commits_leave_main_alone(local_hub: LocalHub, uploaded: UploadedRepo) -> None:
    api = HfApi()
    api.create_branch(uploaded.repo_id, branch="dev/probe")
    api.upload_file(
        path_or_fileobj=b"v2", path_in_repo="sub/extra.txt", repo_id=uploaded.repo_id, revision="dev/probe"
    )
    api.delete_file("notes.txt", repo_id=uploaded.repo_id, revision="dev/probe")
    on_branch = hf_hub_download(uploaded.repo_id, "sub/extra.txt", revision="dev/probe")
    assert Path(on_branch).read_bytes() == b"v2"
    assert api.list_repo_files(uploaded.repo_id, revision="dev/probe") == [
        "model.safetensors",
        "sub/extra.txt",
    ]
    top_level = api.list_repo_tree(uploaded.repo_id, revision="dev/probe")
    assert sorted((type(entry).__name__, entry.path) for entry in top_level) == [
        ("RepoFile", "model.safetensors"),
        ("RepoFolder", "sub"),
    ]
    assert local_hub.repo_files(uploaded.repo_id) == uploaded.files


def test_missing_file_and_revision_raise_the_clients_errors(
    uploaded: UploadedRepo, local_hub: LocalHub
) -> None:
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(uploaded.repo_id, "missing.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(uploaded.repo_id, "notes.txt", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().upload_file(
            path_or_fileobj=b"x", path_in_repo="x", repo_id=uploaded.repo_id, revision="no-such-branch"
        )
    with pytest.raises(KeyError, match="no-such-branch"):
        local_hub.repo_files(uploaded.repo_id, revision="no-such-branch")


def test_offline_mode_reads_the_cache_without_a_request(
    uploaded: UploadedRepo, local_hub: LocalHub, request: pytest.FixtureRequest
) -> None:
    online = hf_hub_download(uploaded.repo_id, "notes.txt")
    request.getfixturevalue("hf_offline")
    requests_before = len(local_hub.requests)
    assert hf_hub_download(uploaded.repo_id, "notes.txt") == online
    local_hub.stop()
    try:
        assert hf_hub_download(uploaded.repo_id, "notes.txt") == online
        with pytest.raises(LocalEntryNotFoundError) as not_cached:
            hf_hub_download(uploaded.repo_id, "never-downloaded.txt")
        assert isinstance(not_cached.value.__cause__, OfflineModeIsEnabled)
    finally:
        local_hub.start()
    assert len(local_hub.requests) == requests_before


def test_timm_loads_pushed_weights_bit_for_bit(local_hub: LocalHub) -> None:
    model = timm.create_model("test_resnet", num_classes=0)
    push_to_hf_hub(model, "ibzoo-tests/test-resnet", safe_serialization=True)
    assert {"config.json", "model.safetensors"} <= set(local_hub.repo_files("ibzoo-tests/test-resnet"))
    loaded = timm.create_model("hf-hub:ibzoo-tests/test-resnet", pretrained=True)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_a_range_request_gets_the_rest_of_the_file(local_hub: LocalHub, uploaded: UploadedRepo) -> None:
    url = f"{local_hub.endpoint}/{uploaded.repo_id}/resolve/main/model.safetensors"
    whole = uploaded.files["model.safetensors"]
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=1000-"})) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1000-{len(whole) - 1}/{len(whole)}"
        assert response.read() == whole[1000:]


@pytest.mark.parametrize("fault", ["cut", "trickle"])
def test_a_fault_misbehaves_only_inside_its_block(
    local_hub: LocalHub, uploaded: UploadedRepo, fault: str
) -> None:
    url = f"{local_hub.endpoint}/{uploaded.repo_id}/resolve/main/model.safetensors"
    whole = uploaded.files["model.safetensors"]
    with local_hub.fault(fault, "model.safetensors"), urllib.request.urlopen(url, timeout=5) as response:
        received = response.fp.read(len(whole) // 2 + 10) if fault == "cut" else response.fp.read(3)
    assert len(received) == (len(whole) // 2 if fault == "cut" else 3)
    with urllib.request.urlopen(url) as response:
        assert response.read() == whole
    with pytest.raises(ValueError, match="unknown fault 'lag'; choose one of silent, stall, trickle, cut"):
        local_hub.fault("lag").__enter__()

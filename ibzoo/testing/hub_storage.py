"""On-disk repositories behind :class:`ibzoo.testing.LocalHub`: branches, commits and file blobs.

Each repo is one folder, ``<root>/<repo type>s/<org>/<name>``, holding::

    refs.json          {"main": "<commit id>", ...}        branch name -> 40-hex commit id
    commits/<id>.json  {"parent", "summary", "created_at", "files": {path: {"sha256", "git_oid", "size"}}}
    blobs/<sha256>     file contents, content-addressed (identical files are stored once)

A commit is a full snapshot of the repo's files, so a branch name and a commit id resolve the same
way and reading any revision needs no history replay. Failures the Hub reports with an
``X-Error-Code`` header (RepoNotFound, RevisionNotFound, EntryNotFound) are raised as
:class:`HubError` and turned into HTTP responses by the server.
"""

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ibzoo.atomic_files import write_atomically

REPO_TYPES = ("model", "dataset", "space")
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
# "org/name" with the characters the Hub allows; also keeps every path inside the storage root.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Branch names as git allows them, simplified: no "..", "//", leading "/", "-" or ".", or trailing "/", ".".
_BRANCH = re.compile(r"(?!.*\.\.)(?!.*//)(?![/.-])[\w./-]*[\w-]")


def check_file_path(path: str) -> str:
    """``path`` if it is a relative path inside a repo; HubError(400) for an absolute path or one with
    empty, "." or ".." segments, as the Hub refuses them (a trailing "/" names a folder)."""
    parts = path.removesuffix("/").split("/")
    if not path or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise HubError(400, f"Invalid file path {path!r}: paths in a repo are relative, without '.' or '..'.")
    return path


def check_branch(branch: str) -> str:
    """``branch`` if it is a valid branch name; HubError(400) otherwise (e.g. "../main", "/x", "a..b")."""
    if not _BRANCH.fullmatch(branch) or branch.endswith(".lock") or COMMIT_ID.fullmatch(branch):
        raise HubError(400, f"Invalid branch name {branch!r}.")
    return branch


class HubError(Exception):
    """A request the Hub would refuse: ``status`` is the HTTP status, ``code`` the ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit: its blob's sha256, its git blob id (the Hub's ``oid``) and its size in bytes."""

    sha256: str
    git_oid: str
    size: int


@dataclass(frozen=True)
class Commit:
    """A snapshot of every file of a repo; ``parent`` is None for the commit made at repo creation."""

    id: str
    parent: str | None
    summary: str
    created_at: str
    files: dict[str, FileEntry]


def git_blob_oid(data: bytes) -> str:
    """Git's id of a blob, sha1 of ``b"blob <size>\\0" + data``: what the client compares on re-upload."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStorage:
    """Repositories stored under ``root``; safe to use from the server's request threads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()  # serialises branch updates: read head, write commit, move head

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        """The folder of a repo (existing or not); HubError(400) for an id that is not 'org/name'."""
        if repo_type not in REPO_TYPES or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise HubError(400, f"Invalid {repo_type} repo id {repo_id!r}: expected 'org/name'.")
        return self.root / f"{repo_type}s" / repo_id

    def create_repo(self, repo_type: str, repo_id: str) -> bool:
        """Create an empty repo whose ``main`` holds one empty commit; False if it already existed."""
        repo = self.repo_dir(repo_type, repo_id)
        with self._lock:
            if (repo / "refs.json").exists():
                return False
            for folder in ("commits", "blobs"):
                (repo / folder).mkdir(parents=True, exist_ok=True)
            initial = self._write_commit(repo, parent=None, summary="initial commit", files={})
            write_atomically(
                repo / "refs.json", lambda tmp: tmp.write_bytes(json.dumps({"main": initial.id}).encode())
            )
        return True

    def branches(self, repo_type: str, repo_id: str) -> dict[str, str]:
        """Branch name -> commit id; raises HubError(404, RepoNotFound) for an unknown repo."""
        refs = self.repo_dir(repo_type, repo_id) / "refs.json"
        if not refs.exists():
            raise HubError(404, f"Repository {repo_id!r} not found.", "RepoNotFound")
        return json.loads(refs.read_text())

    def get_commit(self, repo_type: str, repo_id: str, revision: str) -> Commit:
        """The commit a branch name or a 40-hex commit id points to."""
        branches = self.branches(repo_type, repo_id)
        commit_id = branches.get(revision, revision)
        path = self.repo_dir(repo_type, repo_id) / "commits" / f"{commit_id}.json"
        if not COMMIT_ID.fullmatch(commit_id) or not path.exists():
            raise HubError(404, f"Revision {revision!r} not found in {repo_id!r}.", "RevisionNotFound")
        stored = json.loads(path.read_text())
        files = {name: FileEntry(**entry) for name, entry in stored.pop("files").items()}
        return Commit(id=commit_id, files=files, **stored)

    def blob_path(self, repo_type: str, repo_id: str, sha256: str) -> Path:
        """Where the repo keeps the content whose sha256 is ``sha256``."""
        return self.repo_dir(repo_type, repo_id) / "blobs" / sha256

    def put_blob(self, repo_type: str, repo_id: str, data: bytes) -> FileEntry:
        """Store ``data`` in the repo's blob store (once per content) and describe it."""
        entry = FileEntry(hashlib.sha256(data).hexdigest(), git_blob_oid(data), len(data))
        path = self.blob_path(repo_type, repo_id, entry.sha256)
        if not path.exists():
            write_atomically(path, lambda tmp: tmp.write_bytes(data))
        return entry

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: str = "main") -> None:
        """Point a new branch at the commit ``starting_point`` resolves to; 409 if the branch exists."""
        repo = self.repo_dir(repo_type, repo_id)
        check_branch(branch)
        with self._lock:
            branches = self.branches(repo_type, repo_id)
            if branch in branches:
                raise HubError(409, f"Branch {branch!r} already exists in {repo_id!r}.")
            branches[branch] = self.get_commit(repo_type, repo_id, starting_point).id
            write_atomically(repo / "refs.json", lambda tmp: tmp.write_bytes(json.dumps(branches).encode()))

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        branch: str,
        summary: str,
        additions: dict[str, FileEntry],
        deletions: Iterable[str] = (),
    ) -> str:
        """Add files and delete paths (a path ending in "/" deletes a folder) on top of ``branch``.

        Returns the new commit id. A missing branch is RevisionNotFound, as on the Hub: create it
        first with ``HfApi.create_branch``. Deleting a path that does not exist is EntryNotFound.
        """
        repo = self.repo_dir(repo_type, repo_id)
        for path in [*additions, *deletions]:
            check_file_path(path)
        with self._lock:
            branches = self.branches(repo_type, repo_id)
            if branch not in branches:
                raise HubError(404, f"Branch {branch!r} not found in {repo_id!r}.", "RevisionNotFound")
            parent = self.get_commit(repo_type, repo_id, branches[branch])
            files = dict(parent.files)
            for path in deletions:
                is_folder = path.endswith("/")
                to_delete = [name for name in files if name == path or (is_folder and name.startswith(path))]
                if not to_delete:
                    raise HubError(404, f"A file with this name doesn't exist: {path!r}.", "EntryNotFound")
                for name in to_delete:
                    del files[name]
            files.update(additions)
            branches[branch] = self._write_commit(repo, parent.id, summary, files).id
            write_atomically(repo / "refs.json", lambda tmp: tmp.write_bytes(json.dumps(branches).encode()))
        return branches[branch]

    def _write_commit(
        self, repo: Path, parent: str | None, summary: str, files: dict[str, FileEntry]
    ) -> Commit:
        created_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        stored = {"parent": parent, "summary": summary, "created_at": created_at}
        stored["files"] = {name: asdict(entry) for name, entry in sorted(files.items())}
        # time_ns keeps two identical commits (same parent, same files) from sharing an id.
        seed = json.dumps({**stored, "nonce": time.time_ns()}, sort_keys=True).encode()
        commit_id = hashlib.sha1(seed).hexdigest()
        write_atomically(
            repo / "commits" / f"{commit_id}.json",
            lambda tmp: tmp.write_bytes(json.dumps(stored, indent=1).encode()),
        )
        return Commit(commit_id, parent, summary, created_at, files)

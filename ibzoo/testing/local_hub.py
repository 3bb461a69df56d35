"""A local Hugging Face Hub (HTTP, stdlib only) for the test suite and the offline demo.

It speaks the part of the Hub protocol that ``huggingface_hub``'s real client uses to create repos,
upload folders (``HfApi.upload_folder`` / ``create_commit``), make branches and download files
(``hf_hub_download``, ``snapshot_download``, timm's ``hf-hub:`` names), so that code written for the
Hub runs unchanged against a folder on disk. The client reads ``HF_ENDPOINT`` when
``huggingface_hub`` is imported: set it to :attr:`LocalHub.endpoint` before that import.

Every upload is answered as a "regular" (inline base64) file: with ``hf_xet`` installed the client
sends "lfs" files through the Xet protocol, which this server does not speak. Downloads still describe
weight files like the Hub describes Git LFS files (``X-Linked-Etag`` = sha256), so the client's cache
looks as it does after a real download. Authorization headers are accepted and ignored.

For testing a client's time limits, :meth:`LocalHub.fault` makes it misbehave as a broken network or
server would: never answer, stall after the headers, trickle a file, or cut every copy of a file short.

Run standalone with ``python -m ibzoo.testing.local_hub --root DIR --port N``.
"""

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ibzoo.testing.hub_storage import Commit, FileEntry, HubError, HubStorage

logger = logging.getLogger(__name__)

# Suffixes the Hub's default .gitattributes sends to Git LFS, and git's practical size limit on the Hub.
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".onnx", ".parquet")
_LFS_MIN_SIZE = 10 * 1024 * 1024
# The revision and the file path are percent-encoded by the client, so "/" splits the route safely.
_API_PATH = re.compile(r"/api/(model|dataset|space)s/([^/]+/[^/]+)(?:/([a-z-]+)(?:/([^/]+)(/.*)?)?)?")
_RESOLVE_PATH = re.compile(r"/(?:(dataset|space)s/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def _lfs_metadata(name: str, entry: FileEntry) -> dict | None:
    """The Git LFS description (size, pointer size) of a file the Hub would keep in LFS, else None."""
    if not (name.endswith(_LFS_SUFFIXES) or entry.size >= _LFS_MIN_SIZE):
        return None
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry.sha256}\nsize {entry.size}\n"
    return {"size": entry.size, "pointerSize": len(pointer)}


FAULTS = ("silent", "stall", "trickle", "cut")


@dataclasses.dataclass
class _Fault:
    """How requests whose path contains ``path`` misbehave (see :meth:`LocalHub.fault`)."""

    kind: str
    path: str
    released: threading.Event = dataclasses.field(default_factory=threading.Event)


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, storage: HubStorage, request_log: list[tuple[str, str]]) -> None:
        super().__init__(("127.0.0.1", port), _HubRequestHandler)
        self.storage = storage
        self.request_log = request_log
        self.fault: _Fault | None = None
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class _HubRequestHandler(BaseHTTPRequestHandler):
    # One request per connection, so that after stop() no kept-alive connection is still being served.
    protocol_version = "HTTP/1.0"
    server: _HubServer

    def do_GET(self) -> None:
        self.server.request_log.append((self.command, self.path))
        if (fault := self._fault()) is not None and fault.kind == "silent":
            fault.released.wait()  # the connection was accepted; no answer ever comes
            return
        url = urlsplit(self.path)
        try:
            self._route(url.path, parse_qs(url.query))
        except HubError as error:
            self._send_error(error)
        except Exception as error:
            logger.exception("Local Hub failed on %s %s", self.command, self.path)
            self._send_error(HubError(500, f"{type(error).__name__}: {error}"))

    do_HEAD = do_POST = do_GET

    def _fault(self) -> _Fault | None:
        fault = self.server.fault
        return fault if fault is not None and fault.path in self.path else None

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        storage = self.server.storage
        if (self.command, path) == ("POST", "/api/repos/create"):
            return self._create_repo()
        if (self.command, path) == ("POST", "/api/validate-yaml"):
            return self._send_json(200, {"errors": [], "warnings": []})
        if api := _API_PATH.fullmatch(path):
            repo_type, repo_id, action, revision, subpath = api.groups()
            revision = unquote(revision or "main")
            if self.command == "GET" and action in (None, "revision"):
                return self._send_json(
                    200, _repo_info(repo_id, storage.get_commit(repo_type, repo_id, revision))
                )
            if self.command == "GET" and action == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                commit = storage.get_commit(repo_type, repo_id, revision)
                return self._send_json(200, _tree(commit, unquote(subpath or "").strip("/"), recursive))
            if self.command == "GET" and action == "refs":
                return self._send_json(200, _refs(storage.branches(repo_type, repo_id)))
            if self.command == "POST" and action in ("preupload", "commit") and "create_pr" in query:
                raise HubError(400, "Pull requests are not supported by the local Hub: commit to a branch.")
            if self.command == "POST" and action == "preupload":
                return self._preupload(storage.get_commit(repo_type, repo_id, revision))
            if self.command == "POST" and action == "commit":
                return self._commit(repo_type, repo_id, revision)
            if self.command == "POST" and action == "branch":
                starting_point = self._read_json().get("startingPoint") or "main"
                storage.create_branch(repo_type, repo_id, revision, starting_point)
                return self._send_json(200, {})
        if (resolve := _RESOLVE_PATH.fullmatch(path)) and self.command in ("GET", "HEAD"):
            repo_type, repo_id, revision, file_path = resolve.groups()
            commit = storage.get_commit(repo_type or "model", repo_id, unquote(revision))
            return self._send_file(repo_type or "model", repo_id, commit, unquote(file_path))
        raise HubError(404, f"The local Hub does not serve {self.command} {path}.")

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.server.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"

    def _create_repo(self) -> None:
        request = self._read_json()
        if not request.get("organization"):
            raise HubError(400, f"Repo {request.get('name')!r} has no namespace: use an 'org/name' repo id.")
        repo_type, repo_id = request.get("type") or "model", f"{request['organization']}/{request['name']}"
        created = self.server.storage.create_repo(repo_type, repo_id)
        url = self._repo_url(repo_type, repo_id)
        if not created:  # the client's exist_ok=True accepts a 409 that still carries the url
            return self._send_json(409, {"error": "You already created this repo", "url": url})
        self._send_json(200, {"url": url, "name": repo_id})

    def _preupload(self, commit: Commit) -> None:
        # A stored file's oid (git sha1 for "regular") lets the client skip re-uploading it unchanged.
        files = [
            {
                "path": file["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": commit.files[file["path"]].git_oid if file["path"] in commit.files else None,
            }
            for file in self._read_json()["files"]
        ]
        self._send_json(200, {"files": files})

    def _commit(self, repo_type: str, repo_id: str, branch: str) -> None:
        storage = self.server.storage
        # Fail on a missing repo or branch before storing any blob.
        storage.get_commit(repo_type, repo_id, branch)
        summary, additions, deletions = "", {}, []
        for line in self._read_body().splitlines():
            operation = json.loads(line)
            key, value = operation["key"], operation["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file" and value.get("encoding") == "base64":
                additions[value["path"]] = storage.put_blob(
                    repo_type, repo_id, base64.b64decode(value["content"])
                )
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append(value["path"].rstrip("/") + ("/" if key == "deletedFolder" else ""))
            else:
                # "lfsFile" lines only follow an "lfs" preupload answer or a copy, and neither is offered.
                raise HubError(400, f"The local Hub does not support the commit operation {key!r}.")
        commit_id = storage.commit(repo_type, repo_id, branch, summary, additions, deletions)
        url = f"{self._repo_url(repo_type, repo_id)}/commit/{commit_id}"
        self._send_json(200, {"commitUrl": url, "commitOid": commit_id, "pullRequestUrl": None})

    def _send_file(self, repo_type: str, repo_id: str, commit: Commit, path: str) -> None:
        entry = commit.files.get(path)
        if entry is None:  # X-Repo-Commit lets the client cache that the file does not exist at this commit
            error = HubError(404, f"{path!r} not found at revision {commit.id}.", "EntryNotFound")
            return self._send_error(error, {"X-Repo-Commit": commit.id})
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{entry.git_oid}"',
            "Content-Length": str(entry.size),
        }
        if _lfs_metadata(path, entry) is not None:  # the client names its cached blob after this etag
            linked_etag = f'"{entry.sha256}"'
            headers.update(
                {"ETag": linked_etag, "X-Linked-Etag": linked_etag, "X-Linked-Size": str(entry.size)}
            )
        fault = self._fault()
        # A resumed download asks for the rest ("Range: bytes=N-"), as the Hub's storage serves it; a
        # faulty server answers with the whole file again.
        start = _range_start(self.headers.get("Range")) if self.command == "GET" and fault is None else None
        status = 200
        if start is not None and 0 < start < entry.size:
            status = 206
            headers |= {
                "Content-Length": str(entry.size - start),
                "Content-Range": f"bytes {start}-{entry.size - 1}/{entry.size}",
            }
        self._send_headers(status, "application/octet-stream", headers)
        if self.command != "GET":
            return
        blob = self.server.storage.blob_path(repo_type, repo_id, entry.sha256)
        if fault is not None:
            return self._send_faulty_body(fault, blob.read_bytes())
        with blob.open("rb") as file:
            file.seek(start if status == 206 else 0)
            shutil.copyfileobj(file, self.wfile)

    def _send_faulty_body(self, fault: _Fault, body: bytes) -> None:
        if fault.kind == "stall":
            self.wfile.flush()
            fault.released.wait()
        elif fault.kind == "trickle":
            for offset in range(len(body)):
                if fault.released.wait(0.05):
                    return
                self.wfile.write(body[offset : offset + 1])
                self.wfile.flush()
        elif fault.kind == "cut":  # Range requests get the same: the whole file, cut short
            self.wfile.write(body[: len(body) // 2])

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _read_json(self) -> dict:
        body = self._read_body()
        return json.loads(body) if body else {}

    def _send_headers(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send_headers(status, "application/json", {**(headers or {}), "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: HubError, headers: dict[str, str] | None = None) -> None:
        headers = {**(headers or {}), **({"X-Error-Code": error.code} if error.code else {})}
        self._send_json(error.status, {"error": str(error)}, headers)


def _range_start(header: str | None) -> int | None:
    """N of a "bytes=N-" Range header (what a resuming client sends); None for none or any other form."""
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match[1]) if match else None


def _repo_info(repo_id: str, commit: Commit) -> dict:
    """The Hub's model/dataset info: id, commit sha and the files ("siblings") with their metadata."""
    siblings = []
    for name, entry in sorted(commit.files.items()):
        sibling = {"rfilename": name, "size": entry.size, "blobId": entry.git_oid}
        if (lfs := _lfs_metadata(name, entry)) is not None:
            sibling["lfs"] = {"sha256": entry.sha256, **lfs}
        siblings.append(sibling)
    return {
        "id": repo_id,
        "sha": commit.id,
        "lastModified": commit.created_at,
        "private": False,
        "tags": [],
        "siblings": siblings,
    }


def _tree(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing of ``folder`` ("" for the root): files and folders, all levels if recursive."""
    prefix = f"{folder}/" if folder else ""
    listing: dict[str, dict] = {}
    for name, entry in sorted(commit.files.items()):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
            path = prefix + "/".join(parts[:depth])  # git tree ids are not modelled: any stable id will do
            tree_id = hashlib.sha1(f"{commit.id}:{path}".encode()).hexdigest()
            listing.setdefault(path, {"type": "directory", "path": path, "oid": tree_id, "size": 0})
        if recursive or len(parts) == 1:
            listing[name] = {"type": "file", "path": name, "size": entry.size, "oid": entry.git_oid}
            if (lfs := _lfs_metadata(name, entry)) is not None:
                listing[name]["lfs"] = {"oid": entry.sha256, **lfs}
    if folder and not listing:
        raise HubError(404, f"{folder!r} not found at revision {commit.id}.", "EntryNotFound")
    return list(listing.values())


def _refs(branches: dict[str, str]) -> dict[str, list]:
    heads = [
        {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
        for name, commit in branches.items()
    ]
    return {"branches": heads, "tags": [], "converts": []}


class LocalHub:
    """A Hub-protocol server on ``127.0.0.1:port`` (0: a free port) storing its repos under ``root``.

    Use as a context manager, or call :meth:`start` / :meth:`stop` (it can be restarted on the same
    port). ``requests`` logs every (method, path) served, so tests can count the client's requests.
    """

    def __init__(self, root: str | Path, port: int = 0) -> None:
        self.root = Path(root)
        self.port = port
        self.requests: list[tuple[str, str]] = []
        self._storage = HubStorage(self.root)
        self._server: _HubServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The value for ``HF_ENDPOINT``, e.g. "http://127.0.0.1:8123"."""
        if not self.port:
            raise ValueError("LocalHub(port=0) has no port until start() picks one: call start() first.")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalHub":
        """Serve requests from a daemon thread; returns self."""
        if self._server is not None:
            raise ValueError(f"LocalHub is already serving {self.endpoint}: call stop() before start().")
        self._server = _HubServer(self.port, self._storage, self.requests)
        self.port = self._server.server_address[1]  # a restart reuses the port picked the first time
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"LocalHub-{self.port}", daemon=True
        )
        self._thread.start()
        logger.info("Local Hub serving %s at %s", self.root, self.endpoint)
        return self

    @contextlib.contextmanager
    def fault(self, kind: str, path: str = "") -> Iterator[None]:
        """Within this block, misbehave on every request whose path contains ``path``:

        - ``"silent"``: accept the connection and never answer;
        - ``"stall"``: send a file's headers, then nothing;
        - ``"trickle"``: send a file's body one byte every 50 ms;
        - ``"cut"``: send half of a file's body and close, on every request.

        Requests held by a fault are let go (their connections closed) when the block ends.
        """
        if kind not in FAULTS:
            raise ValueError(f"LocalHub.fault: unknown fault {kind!r}; choose one of {', '.join(FAULTS)}.")
        if self._server is None:
            raise ValueError("LocalHub.fault needs a running server: call start() first.")
        self._server.fault = fault = _Fault(kind, path)
        try:
            yield
        finally:
            self._server.fault = None
            fault.released.set()

    def stop(self) -> None:
        """Stop serving and free the port (a no-op when not running)."""
        if self._server is None:
            return
        if self._server.fault is not None:
            self._server.fault.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (branch or commit id), read straight from disk."""
        try:
            commit = self._storage.get_commit(repo_type, repo_id, revision)
        except HubError as error:
            raise KeyError(f"{error} Create it with HfApi.create_repo / upload_folder first.") from None
        return {
            name: self._storage.blob_path(repo_type, repo_id, entry.sha256).read_bytes()
            for name, entry in commit.files.items()
        }


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a local Hub until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a local Hugging Face Hub stored in a folder.")
    parser.add_argument("--root", type=Path, required=True, help="folder of the repos (created if missing)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s"
    )
    with LocalHub(args.root, args.port) as hub:
        logger.info("Set HF_ENDPOINT=%s in the environment of the client's Python", hub.endpoint)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            logger.info("Stopping the local Hub")


if __name__ == "__main__":
    main()

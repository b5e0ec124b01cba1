"""A small stand-in for the Hugging Face Hub on 127.0.0.1, serving real files.

It answers the calls huggingface_hub 2.4 makes on QuantDesk's path, the way the Hub
does: ``GET /api/models/{repo}/revision/{rev}?blobs=True`` (file list with sizes,
LFS sha256 and git blob ids), ``HEAD /{repo}/resolve/{rev}/{file}`` (``X-Repo-Commit``
and ``ETag``; LFS files answer 302 to a CDN on another origin with ``X-Linked-Etag``
and ``X-Linked-Size``), ``GET`` of the same, and the CDN's ``GET`` with ``Range``.
A gated repository answers 401 ``GatedRepo`` without the right token; a missing one
404 ``RepoNotFound``. It counts the bytes it sends, and can throttle a file or drop
the connection part-way through it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False

    @classmethod
    def from_folder(cls, folder: Path, **kwargs) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
        return cls(files, **kwargs)


@dataclass
class Stats:
    served: dict[str, int] = field(default_factory=dict)  # file name -> body bytes sent
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


class FakeHub:
    def __init__(self, repos: dict[str, Repo], token: str = "hf_test_token") -> None:
        self.repos = repos
        self.token = token
        self.stats = Stats()
        self.throttle: dict[str, float] = {}  # file name -> seconds per 64 KiB
        self.drop_after: dict[str, int] = {}  # file name -> bytes sent before closing, once
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[str, bytes]] = {}  # sha256 -> (name, data)
        for repo in repos.values():
            for name, data in repo.files.items():
                self._blobs[_sha256(data)] = (name, data)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}/cdn"  # another origin, as the Hub's CDN is
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ handlers

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        with self._lock:
            self.stats.requests.append((h.command, path, h.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._model_info(h, path[len("/api/models/"):])
        if path.startswith("/cdn/"):
            return self._cdn(h, path[len("/cdn/"):], head)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            return self._resolve(h, *match.groups(), head=head)
        self._send(h, 404, {}, b"not found")

    def _send(self, h, status: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str, head: bool = False, **extra: str) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(h, status, {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json",
                               **extra}, body, head)

    def _model_info(self, h, rest: str) -> None:
        match = re.fullmatch(r"([^/]+/[^/]+)(?:/revision/(.+))?", rest)
        repo_id, revision = (match.group(1), match.group(2) or "main") if match else (rest, "main")
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "RepoNotFound")
        if revision not in ("main", repo.commit):
            return self._error(h, 404, "RevisionNotFound")
        siblings = []
        for name, data in repo.files.items():
            entry = {"rfilename": name, "size": len(data), "blobId": _git_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"size": len(data), "sha256": _sha256(data), "pointerSize": 134}
            siblings.append(entry)
        body = json.dumps({"id": repo_id, "sha": repo.commit, "private": False,
                           "gated": "manual" if repo.gated else False, "siblings": siblings}).encode()
        self._send(h, 200, {"Content-Type": "application/json"}, body)

    def _resolve(self, h, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "RepoNotFound", head)
        if revision not in ("main", repo.commit):
            return self._error(h, 404, "RevisionNotFound", head)
        if repo.gated and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(h, 401, "GatedRepo", head)
        data = repo.files.get(name)
        if data is None:
            return self._error(h, 404, "EntryNotFound", head, **{"X-Repo-Commit": repo.commit})
        common = {"X-Repo-Commit": repo.commit}
        if name.endswith(LFS_SUFFIXES):
            sha = _sha256(data)
            h.send_response(302)
            for k, v in {**common, "Location": f"{self.cdn}/{sha}/{name}", "X-Linked-Etag": f'"{sha}"',
                         "X-Linked-Size": str(len(data)), "ETag": f'"{_git_sha1(data)}"'}.items():
                h.send_header(k, v)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        headers = {**common, "ETag": f'"{_git_sha1(data)}"', "Accept-Ranges": "bytes"}
        self._body(h, name, data, headers, head)
        return None

    def _cdn(self, h, rest: str, head: bool) -> None:
        sha, _, name = rest.partition("/")
        found = self._blobs.get(sha)
        if found is None:
            return self._send(h, 404, {}, b"no such blob", head)
        data = found[1]
        self._body(h, name, data, {"Accept-Ranges": "bytes", "ETag": f'"{sha}"'}, head)
        return None

    def _body(self, h, name: str, data: bytes, headers: dict[str, str], head: bool) -> None:
        start = 0
        status = 200
        ranged = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
            if start >= len(data):
                return self._send(h, 416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return None
        limit = None
        with self._lock:
            if name in self.drop_after:
                limit = self.drop_after.pop(name)
        step = 64 * 1024
        pause = self.throttle.get(name, 0.0)
        sent = 0
        try:
            while sent < len(body):
                if limit is not None and sent >= limit:
                    h.close_connection = True
                    h.wfile.flush()
                    h.connection.shutdown(2)
                    return None
                chunk = body[sent:sent + min(step, (limit - sent) if limit is not None else step)]
                h.wfile.write(chunk)
                sent += len(chunk)
                with self._lock:
                    self.stats.served[name] = self.stats.served.get(name, 0) + len(chunk)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            return None
        return None

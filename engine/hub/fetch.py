"""One file from the Hub into the cache, resumable: the bytes stream on a worker thread.

huggingface_hub 2.x downloads each file to a fresh temporary name and deletes it on
failure, so a cancelled or broken download starts again from zero. QuantDesk keeps
its own partial (``blobs/<etag>.quantdesk.part``), asks for the rest with a Range
request through huggingface_hub's HTTP session (its proxies, headers and offline
switch), checks the size and the hash the etag names, and renames it to the blob.
huggingface_hub then links the blob into the snapshot as it would its own.

The worker thread lets the job report progress at a steady pace and stop within a
second even while a read is stalled; a stalled read ends by its own timeout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.hub import cache
from engine.units import format_bytes

MAX_STALLS = 5  # attempts in a row that bring no new byte before giving up
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_HASH_CHUNK = 8 * 1024**2


@dataclass
class Remote:
    """Where a file's bytes are and what they must be, from huggingface_hub's HEAD call."""

    url: str
    etag: str
    size: int | None
    commit: str
    headers: dict[str, str]


def resolve(repo_id: str, filename: str, commit: str, token: str | None) -> Remote:
    """HEAD the file through huggingface_hub (redirects, auth, etag and size as it reads them)."""
    from urllib.parse import urlsplit

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    from engine.hub.client import request_timeout

    url = hf_hub_url(repo_id, filename, revision=commit)
    meta = get_hf_file_metadata(url, token=token, timeout=request_timeout())
    if not meta.etag or not meta.commit_hash:
        raise QuantDeskError(f"The Hub sent no version for {filename}; it does not look like a Hugging Face Hub.")
    headers = build_hf_headers(token=token)
    location = meta.location or url
    a, b = urlsplit(url), urlsplit(location)
    if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        headers.pop("authorization", None)  # a signed CDN address: the token stays with the Hub
    return Remote(location, meta.etag, meta.size, meta.commit_hash, headers)


def _hasher(etag: str, size: int | None) -> Any:
    """sha256 for LFS files (their etag), git's blob sha1 for small ones; None when the etag is neither."""
    if _SHA256.fullmatch(etag):
        return hashlib.sha256()
    if _GIT_SHA1.fullmatch(etag) and size is not None:
        h = hashlib.sha1()  # noqa: S324 - git's object id, not a security check
        h.update(b"blob %d\0" % size)
        return h
    return None


class Fetch(threading.Thread):
    """Streams ``remote`` into ``part`` from where it stopped; ``done`` is the partial's length."""

    def __init__(self, remote: Remote, part: Path, lock: Path, name: str) -> None:
        super().__init__(name=f"quantdesk-fetch-{name}", daemon=True)
        self.remote, self.part, self.lock, self.filename = remote, part, lock, name
        self.stop = threading.Event()
        self.done = 0
        self.received = 0  # bytes that came over the network in this run
        self.error: BaseException | None = None
        self.retries = 0
        self._hash: Any = None

    def run(self) -> None:
        from huggingface_hub.utils import WeakFileLock

        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
            self.part.parent.mkdir(parents=True, exist_ok=True)
            while not self.stop.is_set():
                try:
                    with WeakFileLock(self.lock, timeout=0.5):
                        self._download()
                    return
                except TimeoutError:
                    continue  # another QuantDesk is writing this file; wait for it (filelock.Timeout is a TimeoutError)
        except BaseException as err:  # noqa: BLE001 - handed to the job's thread
            self.error = err

    def _download(self) -> None:
        import httpx2

        size = self.remote.size
        self._hash = _hasher(self.remote.etag, size)
        self.done = self._prefix(self._hash)
        stalls = 0
        while not self.stop.is_set():
            if size is not None and self.done >= size:
                break
            before = self.done
            try:
                finished = self._stream()
                if finished:
                    break
            except (httpx2.TransportError, ConnectionError) as err:
                from huggingface_hub.errors import OfflineModeIsEnabled

                if isinstance(err, OfflineModeIsEnabled):
                    raise
                stalls = 0 if self.done > before else stalls + 1
                self.retries += 1
                if stalls >= MAX_STALLS:
                    raise
                self.stop.wait(min(8.0, 0.5 * 2**stalls))
        if self.stop.is_set():
            return
        self._verify()

    def _prefix(self, hasher: Any) -> int:
        """Length of the partial already on disk, fed to the hasher; a partial longer than the file goes."""
        try:
            have = self.part.stat().st_size
        except OSError:
            return 0
        if self.remote.size is not None and have > self.remote.size:
            self.part.unlink(missing_ok=True)
            return 0
        if hasher is not None and have:
            with self.part.open("rb") as fh:
                while (chunk := fh.read(_HASH_CHUNK)) and not self.stop.is_set():
                    hasher.update(chunk)
        return have

    def _stream(self) -> bool:
        """One GET of the rest; True when the server said the file ended (its length was unknown)."""
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        from engine.hub.client import request_timeout

        headers = dict(self.remote.headers)
        headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, never of a compressed body
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        with get_session().stream("GET", self.remote.url, headers=headers, timeout=request_timeout()) as response:
            if response.status_code == 416 and self.done and self.done == self.remote.size:
                return True
            hf_raise_for_status(response)
            mode = "ab"
            if self.done and response.status_code != 206:  # the server ignored the range: start over
                mode, self.done = "wb", 0
                self._hash = _hasher(self.remote.etag, self.remote.size)
            hasher = self._hash
            with self.part.open(mode, buffering=0) as fh:
                for chunk in response.iter_bytes():
                    if self.stop.is_set():
                        return False
                    if not chunk:
                        continue
                    try:
                        fh.write(chunk)
                    except OSError as err:
                        raise self._disk_error(err) from None
                    if hasher is not None:
                        hasher.update(chunk)
                    self.done += len(chunk)
                    self.received += len(chunk)
        if self.remote.size is None:
            return True
        if self.done < self.remote.size:
            import httpx2

            raise httpx2.RemoteProtocolError("the connection closed before the end of the file")
        return True

    def _disk_error(self, err: OSError) -> QuantDeskError:
        if err.errno == errno.ENOSPC:
            return QuantDeskError(
                f"The disk holding {self.part.parent.parent.parent} is full after {format_bytes(self.done)} of "
                f"{self.filename}; free some space and run the same download again to resume."
            )
        return QuantDeskError(f"Cannot write {self.part}: {err.strerror or err}.")

    def _verify(self) -> None:
        hasher = self._hash
        size = self.part.stat().st_size
        if self.remote.size is not None and size != self.remote.size:
            raise QuantDeskError(f"{self.filename} arrived with {size} bytes instead of {self.remote.size}; "
                                 "run the download again.")
        if hasher is not None and hasher.hexdigest() != self.remote.etag:
            self.part.unlink(missing_ok=True)
            raise QuantDeskError(f"{self.filename} arrived damaged (its checksum does not match); "
                                 "run the download again.")


def finish(repo_id: str, remote: Remote, part: Path, root: Path) -> None:
    """Move a verified partial to its blob name (another tool may have finished it first)."""
    blob = cache.blob_path(repo_id, remote.etag, root)
    if blob.exists():
        part.unlink(missing_ok=True)
        return
    os.chmod(part, 0o644)
    os.replace(part, blob)


def wait_for(fetch: Fetch, cancel: Any, poll_s: float = 0.25) -> None:
    """Sleep in short steps; ends the fetch when ``cancel`` is set."""
    fetch.join(poll_s)
    if cancel is not None and cancel.cancelled and fetch.is_alive():
        fetch.stop.set()
        deadline = time.monotonic() + 1.0
        while fetch.is_alive() and time.monotonic() < deadline:
            fetch.join(0.05)

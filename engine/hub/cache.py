"""Where a repository's files live in the standard Hugging Face cache.

The layout is huggingface_hub's own (``models--org--name/{blobs,snapshots,refs}``), so
other tools and QuantDesk's cache list find what QuantDesk downloads. The one
addition is QuantDesk's partial file, ``blobs/<etag>.quantdesk.part``: a name only
QuantDesk uses, kept after a cancel so the next run resumes from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.inspect import hf_cache_dir

PART_SUFFIX = ".quantdesk.part"


def cache_root() -> Path:
    """The hub cache QuantDesk reads its model list from (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)."""
    return hf_cache_dir()


def repo_folder(repo_id: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / ("models--" + repo_id.replace("/", "--"))


def blob_path(repo_id: str, etag: str, root: Path | None = None) -> Path:
    return repo_folder(repo_id, root) / "blobs" / etag


def part_path(repo_id: str, etag: str, root: Path | None = None) -> Path:
    return repo_folder(repo_id, root) / "blobs" / (etag + PART_SUFFIX)


def lock_path(repo_id: str, etag: str, root: Path | None = None) -> Path:
    """QuantDesk's own lock beside huggingface_hub's: one writer per partial file, across processes."""
    return (root or cache_root()) / ".locks" / repo_folder(repo_id, root).name / (etag + ".quantdesk.lock")


def snapshot_folder(repo_id: str, commit: str, root: Path | None = None) -> Path:
    return repo_folder(repo_id, root) / "snapshots" / commit


def bytes_present(repo_id: str, etag: str | None, size: int | None, root: Path | None = None) -> int:
    """Bytes of this file already on disk: all of it when its blob exists, else the partial's length."""
    if not etag:
        return 0
    blob = blob_path(repo_id, etag, root)
    if blob.is_file():
        return size if size is not None else blob.stat().st_size
    try:
        part = part_path(repo_id, etag, root).stat().st_size
    except OSError:
        return 0
    return min(part, size) if size is not None else part


def write_ref(repo_id: str, revision: str, commit: str, root: Path | None = None) -> None:
    """Point ``refs/<revision>`` at ``commit`` (atomically), as huggingface_hub does for a branch or tag."""
    if revision == commit:
        return
    ref = repo_folder(repo_id, root) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + PART_SUFFIX)
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, ref)

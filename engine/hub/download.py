"""The download job: every planned file into the Hugging Face cache, with per-file and total progress.

Files already in the cache are skipped; a partial left by a cancel, a crash or a
dropped connection is resumed, so no byte is fetched twice. When every file is
there, huggingface_hub links them into the snapshot folder and the branch's ref is
written, exactly as its own downloads leave the cache.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from engine.errors import JobCancelled, QuantDeskError
from engine.hub import cache
from engine.hub.client import call_hub, is_offline, offline_sentence, request_timeout
from engine.hub.fetch import Fetch, finish, resolve, wait_for
from engine.hub.plan import DownloadPlan
from engine.jobs import JobGen, Progress
from engine.units import format_bytes

STEP = "download"
REPORT_EVERY_S = 0.25


class _Rate:
    """Bytes per second over the last few seconds, so a stall shows at once."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, received: int) -> float | None:
        now = time.monotonic()
        self.samples.append((now, received))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else None


def _event(plan: DownloadPlan, index: int, name: str, file_done: int, file_total: int | None, total_done: int,
           speed: float | None) -> Progress:
    total = max(1, plan.download_bytes)
    remaining = max(0, plan.download_bytes - total_done)
    eta = remaining / speed if speed else None
    rate = f", {format_bytes(speed)}/s" if speed else ""
    return Progress(
        step=STEP, fraction=min(1.0, total_done / total),
        message=f"{name} ({index + 1}/{len(plan.files)}): {format_bytes(file_done)} of {format_bytes(file_total)}"
                f"; {format_bytes(total_done)} of {format_bytes(plan.download_bytes)}{rate}",
        bytes_done=total_done, eta_s=eta,
        extra={"repo_id": plan.repo_id, "file": name, "file_index": index, "file_count": len(plan.files),
               "file_bytes_done": file_done, "file_bytes_total": file_total, "total_bytes": plan.download_bytes,
               "speed_bps": speed},
    )


def download(plan: DownloadPlan, cancel: Any = None) -> JobGen[Path]:
    """Fetch the plan's files into the cache; returns the snapshot folder (an ordinary model folder)."""
    if is_offline():
        raise QuantDeskError(offline_sentence())
    root, repo_id, token = plan.cache_dir, plan.repo_id, plan.token
    finished = sum(f.size or 0 for f in plan.files if cache.blob_path(repo_id, f.etag or "-", root).is_file())
    rate = _Rate()
    received_total = 0
    yield Progress(STEP, plan.present_bytes / max(1, plan.download_bytes),
                   f"Getting {repo_id}: {format_bytes(plan.remaining_bytes)} to download",
                   bytes_done=plan.present_bytes, extra={"repo_id": repo_id, "total_bytes": plan.download_bytes})
    for index, f in enumerate(plan.files):
        if cancel is not None and cancel.cancelled:
            raise _paused(plan)
        if f.etag and cache.blob_path(repo_id, f.etag, root).is_file():
            continue
        remote = call_hub(lambda f=f: resolve(repo_id, f.name, plan.commit, token), f"checking {f.name}",
                          repo_id, plan.commit, cancel)
        if cache.blob_path(repo_id, remote.etag, root).is_file():
            finished += remote.size or 0
            continue
        part = cache.part_path(repo_id, remote.etag, root)
        fetch = Fetch(remote, part, cache.lock_path(repo_id, remote.etag, root), f.name)
        fetch.start()
        last = 0.0
        while fetch.is_alive():
            wait_for(fetch, cancel, REPORT_EVERY_S)
            if cancel is not None and cancel.cancelled:
                raise _paused(plan)
            now = time.monotonic()
            if now - last >= REPORT_EVERY_S:
                last = now
                speed = rate.add(received_total + fetch.received)
                yield _event(plan, index, f.name, fetch.done, remote.size, finished + fetch.done, speed)
        if fetch.error is not None:
            err = fetch.error
            if isinstance(err, QuantDeskError):
                raise err
            from engine.hub.client import translate

            raise translate(err, repo_id, plan.revision) from None
        received_total += fetch.received
        finish(repo_id, remote, part, root)
        finished += remote.size or fetch.done
        yield _event(plan, index, f.name, fetch.done, remote.size, finished, rate.add(received_total))
    snapshot = yield from _link(plan, cancel)
    yield Progress(STEP, 1.0, f"{repo_id} is in the cache: {snapshot}", bytes_done=plan.download_bytes,
                   extra={"repo_id": repo_id, "snapshot": str(snapshot), "total_bytes": plan.download_bytes})
    return snapshot


def _link(plan: DownloadPlan, cancel: Any) -> JobGen[Path]:
    """Let huggingface_hub link each blob into the snapshot, then point the branch at it."""
    from huggingface_hub import hf_hub_download

    timeout = request_timeout()
    for f in plan.files:
        path = call_hub(lambda f=f: hf_hub_download(plan.repo_id, f.name, revision=plan.commit,
                                                    cache_dir=plan.cache_dir, token=plan.token,
                                                    etag_timeout=timeout),
                        f"placing {f.name}", plan.repo_id, plan.commit, cancel)
        if not Path(path).is_file():
            raise QuantDeskError(f"{f.name} did not arrive in the cache; run the download again.")
    cache.write_ref(plan.repo_id, plan.revision, plan.commit, plan.cache_dir)
    if False:  # pragma: no cover - makes this a generator for ``yield from``
        yield
    return plan.snapshot


def _paused(plan: DownloadPlan) -> JobCancelled:
    return JobCancelled(
        f"Cancelled; what was downloaded of {plan.repo_id} stays in the cache, so getting it again resumes where it stopped."
    )

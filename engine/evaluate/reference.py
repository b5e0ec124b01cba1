"""The original's scores, computed once and kept on disk beside the outputs they judge.

Evaluating N outputs of one source used to score the source N times. Now the
source's top-k distributions and per-token NLL over a text (OriginalRun) are
saved in ``<outputs folder>/.quantdesk-eval-cache/`` and read back by every
later KLD: N outputs cost N+1 model passes the first time, N after.

The key covers everything that changes the numbers: the source's weights, the
text, the context, the token budget, the backend and device, and this file's
format. The weights are identified without reading gigabytes: for each weight,
config and tokenizer file its relative name, size, modification time and a
SHA-256 of its first MiB (where GGUF and safetensors keep their headers: tensor
names, shapes, offsets) and last 64 KiB. Replacing the source's weights changes
the key; a copy with a new modification time is scored again once.

Files are QuantDesk's own (``ref-<key>.npz``, ``answers-<key>.json``), written
under a ``.part`` name then renamed; a damaged one is ignored and rewritten; the
folder is kept under ``CACHE_LIMIT_BYTES`` by dropping the least recently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import QuantDeskError
from engine.evaluate.perplexity import TOP_K, OriginalRun, score_original
from engine.evaluate.scorers import Scorer
from engine.fingerprint import weights_fingerprint
from engine.jobs import CancelToken, JobGen, Progress

CACHE_DIR_NAME = ".quantdesk-eval-cache"
CACHE_LIMIT_BYTES = 256 * 1024 * 1024
FORMAT = 1


def cache_dir_for(output: Path) -> Path:
    """Where the cache for an output lives: beside its sidecar, in the outputs' folder (a link is not followed)."""
    return Path(output).expanduser().absolute().parent / CACHE_DIR_NAME


def reference_key(source: Path, text: str, n_ctx: int, max_tokens: int | None, device: str) -> str:
    from engine.chat.factory import model_kind

    parts = {
        "format": FORMAT, "top_k": TOP_K, "weights": weights_fingerprint(source),
        "text": hashlib.sha256(text.encode("utf-8")).hexdigest(), "n_ctx": n_ctx, "max_tokens": max_tokens,
        "backend": model_kind(Path(source)), "device": device,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


class ReferenceCache:
    """One folder of cached references and answers; never raises on a damaged or unwritable folder."""

    def __init__(self, folder: Path, limit_bytes: int = CACHE_LIMIT_BYTES) -> None:
        self.folder = Path(folder)
        self.limit_bytes = limit_bytes

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.folder / f"{kind}-{key}{suffix}"

    # --- references ---------------------------------------------------------------------

    def load(self, key: str) -> OriginalRun | None:
        path = self._path("ref", key, ".npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                chunks = data["chunks"].astype(np.int64)
                run = OriginalRun(
                    chunks=[list(map(int, c)) for c in chunks], top_ids=data["top_ids"], top_lp=data["top_lp"],
                    nll=data["nll"], n_vocab=int(meta["n_vocab"]), n_ctx=int(meta["n_ctx"]),
                )
            rows = run.per_chunk * len(run.chunks)
            if (meta.get("key") != key or chunks.shape[1] != run.n_ctx or run.top_ids.shape != run.top_lp.shape
                    or run.top_ids.shape[0] != rows or run.nll.shape != (rows,)
                    or not np.isfinite(run.top_lp).all() or not np.isfinite(run.nll).all()):
                return None
        except Exception:  # noqa: BLE001 - missing or damaged: score again and rewrite it
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return run

    def save(self, key: str, run: OriginalRun) -> Path | None:
        meta = json.dumps({"key": key, "n_vocab": run.n_vocab, "n_ctx": run.n_ctx, "format": FORMAT})

        def write(fh: Any) -> None:
            np.savez(fh, meta=np.frombuffer(meta.encode("utf-8"), dtype=np.uint8),
                     chunks=np.asarray(run.chunks, dtype=np.int32), top_ids=run.top_ids, top_lp=run.top_lp,
                     nll=run.nll)

        return self._write(self._path("ref", key, ".npz"), write)

    # --- the source's answers to the fixed prompts --------------------------------------

    def load_answers(self, key: str) -> list[str] | None:
        try:
            data = json.loads(self._path("answers", key, ".json").read_text(encoding="utf-8"))
            answers = data["answers"]
            if data.get("key") != key or not all(isinstance(a, str) for a in answers):
                return None
            return list(answers)
        except Exception:  # noqa: BLE001 - missing or damaged: ask the source again
            return None

    def save_answers(self, key: str, answers: list[str], extra: dict[str, Any] | None = None) -> Path | None:
        body = json.dumps({**(extra or {}), "key": key, "answers": answers}).encode("utf-8")
        return self._write(self._path("answers", key, ".json"), lambda fh: fh.write(body))

    def load_answer_record(self, key: str) -> dict[str, Any] | None:
        """The whole saved answers record (answers plus whatever ``extra`` was saved with them)."""
        if self.load_answers(key) is None:
            return None
        try:
            data = json.loads(self._path("answers", key, ".json").read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - removed in between: ask the source again
            return None
        return data if isinstance(data, dict) else None

    # --- writing and bounding ----------------------------------------------------------------

    def _write(self, final: Path, write: Callable[[Any], Any]) -> Path | None:
        part = final.with_name(f"{final.name}.{os.getpid()}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with part.open("wb") as fh:
                write(fh)
            os.replace(part, final)
        except OSError:
            with contextlib.suppress(OSError):
                part.unlink()
            return None
        self.trim(keep=final)
        return final

    def entries(self) -> list[Path]:
        """QuantDesk's cache files in the folder (nothing else found there is ever touched)."""
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if p.is_file() and not p.name.endswith(".part")
                and ((p.name.startswith("ref-") and p.name.endswith(".npz"))
                     or (p.name.startswith("answers-") and p.name.endswith(".json")))]

    def trim(self, keep: Path | None = None) -> list[Path]:
        """Drop the least recently used files until the folder fits the limit; returns what went."""
        stats = []
        for p in self.entries():
            with contextlib.suppress(OSError):
                st = p.stat()
                stats.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in stats)
        removed = []
        for _, size, p in sorted(stats, key=lambda s: s[0]):
            if total <= self.limit_bytes:
                break
            if keep is not None and p == keep:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
                removed.append(p)
        # a crashed writer's leftovers, by our own name only, once they are an hour old
        for p in self.folder.glob("*.part") if self.folder.is_dir() else []:
            with contextlib.suppress(OSError):
                if p.name.startswith(("ref-", "answers-")) and time.time() - p.stat().st_mtime > 3600:
                    p.unlink()
        return removed


def original_reference(
    source: Path, text: str, n_ctx: int, open_source: Callable[[], Scorer], *,
    cache: ReferenceCache | None, max_tokens: int | None = None, device: str = "cpu",
    cancel: CancelToken | None = None, span: tuple[float, float] = (0.0, 1.0), passes_after: int = 1,
) -> JobGen[tuple[OriginalRun, bool]]:
    """The source's reference over ``text``: from the cache when it holds it, else scored once and saved.

    Returns ``(run, from_cache)``. ``open_source`` is only called on a miss, so
    a hit never loads the source model at all.
    """
    key = reference_key(source, text, n_ctx, max_tokens, device) if cache is not None else ""
    if cache is not None:
        run = cache.load(key)
        if run is not None:
            yield Progress(step="original", fraction=span[1], message="Original's scores read from the cache")
            return run, True
    scorer = open_source()
    try:
        run = yield from score_original(scorer, text, n_ctx, cancel=cancel, span=span, max_tokens=max_tokens,
                                        passes_after=passes_after)
    finally:
        scorer.close()
    if cache is not None:
        cache.save(key, run)
    return run, False


def cached_reference(output: Path, source: Path | str, text: str, n_ctx: int, *, max_tokens: int | None = None,
                     device: str = "cpu") -> OriginalRun | None:
    """The original's scores over ``text`` if an earlier eval or quick check left them beside ``output``.

    Never loads a model: None when the source is gone or nothing matching is cached.
    """
    source = Path(source).expanduser()
    if not str(source) or not source.exists():
        return None
    try:
        key = reference_key(source, text, n_ctx, max_tokens, device)
    except (OSError, QuantDeskError):
        return None
    return ReferenceCache(cache_dir_for(output)).load(key)

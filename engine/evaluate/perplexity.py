"""Perplexity and KL divergence, computed the way llama.cpp's perplexity tool does.

So the numbers compare with published tables: the whole text is tokenized
once (with BOS when the model wants one), split into chunks of ``n_ctx``
tokens (a tail shorter than a chunk is left out), each chunk starts with BOS
(when the model uses one) on a fresh context, and only the second half of each
chunk is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the next
token. PPL = exp(mean NLL); its standard error is PPL × the standard error of
the mean NLL.

KL divergence compares a model against its original over the same tokens.
The original's distribution at each position is kept as its ``TOP_K`` (4,096)
most likely tokens (16- or 32-bit ids, 32-bit log-probabilities) plus the
probability left over, so a reference is about 24 KiB per scored token (6 MiB
for the quick check) and can be cached on disk (engine/evaluate/reference.py).
KL(original ‖ model) is summed exactly over those tokens and the rest is folded
into one "other" bucket; by the log-sum inequality that bucket can only
under-count. Measured on the demo model (broad distributions, 49,152 tokens):
1.2-1.5% under the full-vocabulary sum with 4,096 kept, 13% with 256, so 4,096
it is; the tests hold it within 3%. llama.cpp keeps the whole vocabulary at 16
bits instead, 37 GiB for Llama 3 on Wikitext-2: too much to keep beside a
user's outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import QuantDeskError
from engine.evaluate.scorers import Scorer
from engine.jobs import CancelToken, JobGen, Progress

DEFAULT_CTX = 512
_LOG_RANGE = 16.0  # nats kept below each position's top log-probability (full-vocabulary KL)
TOP_K = 4096  # tokens of the original's distribution kept per position


@dataclass
class PerplexityResult:
    ppl: float
    ppl_stderr: float
    tokens: int  # tokens scored
    chunks: int
    n_ctx: int
    kld_mean: float | None = None
    kld_p99: float | None = None
    same_top_pct: float | None = None
    base_ppl: float | None = None
    original_cached: bool | None = None  # the original's scores came from the cache

    def to_dict(self) -> dict[str, Any]:
        data = {"ppl": self.ppl, "ppl_stderr": self.ppl_stderr, "tokens": self.tokens, "chunks": self.chunks,
                "n_ctx": self.n_ctx}
        if self.kld_mean is not None:
            data.update(kld_mean=self.kld_mean, kld_p99=self.kld_p99, same_top_pct=self.same_top_pct,
                        base_ppl=self.base_ppl)
        if self.original_cached is not None:
            data["original_cached"] = self.original_cached
        return data


@dataclass
class _NllSums:
    nll: float = 0.0
    nll2: float = 0.0
    count: int = 0
    kld: list[np.ndarray] = field(default_factory=list)
    same_top: int = 0

    def add(self, nll: np.ndarray) -> None:
        self.nll += float(nll.sum())
        self.nll2 += float((nll * nll).sum())
        self.count += int(nll.size)

    def ppl(self) -> tuple[float, float]:
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        ppl = math.exp(mean)
        err = math.sqrt(var / (self.count - 1)) * ppl if var > 0 and self.count > 1 else 0.0
        return ppl, err


def split_chunks(tokens: list[int], n_ctx: int, bos_id: int | None, add_bos: bool) -> list[list[int]]:
    """Whole chunks of ``n_ctx`` tokens; each starts with BOS when the model uses one."""
    if n_ctx < 16:
        raise QuantDeskError("The context must be at least 16 tokens; use --ctx 512 as llama.cpp does.")
    n_chunks = len(tokens) // n_ctx
    if len(tokens) < 2 * n_ctx:
        raise QuantDeskError(
            f"The text has {len(tokens)} tokens but needs at least {2 * n_ctx} for a context of {n_ctx}; "
            "choose a longer text or a smaller --ctx."
        )
    chunks = []
    for i in range(n_chunks):
        chunk = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if add_bos and bos_id is not None:
            chunk[0] = bos_id
        chunks.append(chunk)
    return chunks


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits (float64)."""
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64)) + top[:, 0]
    return lse - logits[np.arange(len(targets)), targets]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)


def top_k_rows(logits: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely token ids of each row (most likely first) and their log-probabilities."""
    lp = log_softmax(logits)
    k = min(k, lp.shape[1])
    ids = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(lp, ids, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    id_type = np.uint16 if lp.shape[1] <= 65536 else np.int32
    return (np.take_along_axis(ids, order, axis=1).astype(id_type),
            np.take_along_axis(vals, order, axis=1).astype(np.float32))


def kl_top_k(top_ids: np.ndarray, top_lp: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL(original ‖ model) per row from the original's top-k, and whether both put the same token on top."""
    lp = log_softmax(logits).astype(np.float64)
    base = top_lp.astype(np.float64)
    model = np.take_along_axis(lp, top_ids.astype(np.int64), axis=1)
    p = np.exp(base)
    kld = (p * (base - model)).sum(axis=1)
    p_rest = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - np.exp(model).sum(axis=1), 1e-30, 1.0)
    rest = np.where(p_rest > 1e-9, p_rest * (np.log(np.maximum(p_rest, 1e-30)) - np.log(q_rest)), 0.0)
    same = top_ids[:, 0] == logits.argmax(axis=1)
    return kld + rest, same


def kl_rows(base_lp: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL(base ‖ model) per row, and whether both put the same token on top."""
    lp = log_softmax(logits)
    keep = base_lp > (base_lp.max(axis=1, keepdims=True) - _LOG_RANGE + 1e-3)
    p = np.where(keep, np.exp(base_lp), 0.0)
    kld = (p * (base_lp - lp)).sum(axis=1, dtype=np.float64)
    same = base_lp.argmax(axis=1) == logits.argmax(axis=1)
    return kld, same


def _scored_chunks(
    scorer: Scorer, chunks: list[list[int]], cancel: CancelToken, on_chunk: Callable[[int, np.ndarray, np.ndarray], None],
    step: str, span: tuple[float, float], passes_after: int = 0,
) -> JobGen[None]:
    """Score each chunk; one Progress per chunk with the time left for this pass and ``passes_after`` more."""
    n_ctx = len(chunks[0])
    first = n_ctx // 2
    started = time.monotonic()
    total = len(chunks)
    for i, chunk in enumerate(chunks):
        cancel.raise_if_cancelled()
        logits = scorer.chunk_logits(chunk, first)[:-1]  # the last position predicts past the chunk
        targets = np.asarray(chunk[first + 1 :], dtype=np.int64)
        on_chunk(i, logits, targets)
        done = i + 1
        per_chunk = (time.monotonic() - started) / done
        eta = per_chunk * ((total - done) + passes_after * total)
        frac = span[0] + (span[1] - span[0]) * done / total
        yield Progress(step=step, fraction=frac, message=f"{step}: chunk {done} of {total}", eta_s=eta,
                       extra={"chunk": done, "chunks": total})


@dataclass
class OriginalRun:
    """The original model's distributions over a text's chunks, ready to compare models against.

    Small enough (``TOP_K`` entries per scored token) to keep in memory and to
    cache on disk; ``close`` is kept for callers that free it explicitly.
    """

    chunks: list[list[int]]
    top_ids: np.ndarray  # (rows, k) uint16 (int32 for vocabularies over 65,536), most likely first
    top_lp: np.ndarray  # (rows, k) float32 log-probabilities
    nll: np.ndarray  # (rows,) the original's NLL of each scored token
    n_vocab: int
    n_ctx: int
    seconds: float = 0.0  # how long the original's pass took (0 when read from the cache)

    @property
    def per_chunk(self) -> int:
        return self.n_ctx - self.n_ctx // 2 - 1

    @property
    def base_ppl(self) -> float:
        return float(math.exp(float(self.nll.astype(np.float64).mean())))

    def close(self) -> None:
        """Nothing to free on disk; kept so callers may release it explicitly."""


def score_original(
    base: Scorer, text: str, n_ctx: int = DEFAULT_CTX, *, tokens: list[int] | None = None,
    cancel: CancelToken | None = None, span: tuple[float, float] = (0.0, 1.0), max_tokens: int | None = None,
    passes_after: int = 0,
) -> JobGen[OriginalRun]:
    """Score the original once; several models can then be compared with it.

    ``max_tokens`` keeps only the first tokens of the text (a fixed slice for
    the quick check).
    """
    cancel = cancel or CancelToken()
    tokens = tokens if tokens is not None else base.tokenize(text)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    chunks = split_chunks(tokens, n_ctx, base.bos_id, base.add_bos)
    per_chunk = n_ctx - n_ctx // 2 - 1
    rows = per_chunk * len(chunks)
    top_ids = np.zeros((rows, min(TOP_K, base.n_vocab)), dtype=np.uint16 if base.n_vocab <= 65536 else np.int32)
    top_lp = np.zeros(top_ids.shape, dtype=np.float32)
    nll = np.zeros(rows, dtype=np.float32)
    started = time.monotonic()

    def keep(i: int, logits: np.ndarray, targets: np.ndarray) -> None:
        at = i * per_chunk
        nll[at : at + len(targets)] = token_nll(logits, targets)
        ids, lp = top_k_rows(logits)
        top_ids[at : at + len(ids)] = ids
        top_lp[at : at + len(lp)] = lp

    yield from _scored_chunks(base, chunks, cancel, keep, "original", span, passes_after)
    return OriginalRun(chunks, top_ids, top_lp, nll, int(base.n_vocab), n_ctx, time.monotonic() - started)


def perplexity(
    scorer: Scorer,
    text: str,
    n_ctx: int = DEFAULT_CTX,
    *,
    base: Scorer | Callable[[], Scorer] | OriginalRun | None = None,
    tokens: list[int] | None = None,
    cancel: CancelToken | None = None,
    span: tuple[float, float] = (0.0, 1.0),
) -> JobGen[PerplexityResult]:
    """PPL of ``scorer`` on ``text``; with ``base`` also the KL divergence against it.

    ``base`` may be an OriginalRun (scored once or read from the cache, then
    reused), a Scorer, or a factory so the original is loaded, used and freed
    before the model under test needs its memory.
    """
    cancel = cancel or CancelToken()
    sums = _NllSums()
    if base is None:
        tokens = tokens if tokens is not None else scorer.tokenize(text)
        chunks = split_chunks(tokens, n_ctx, scorer.bos_id, scorer.add_bos)

        def score(_i: int, logits: np.ndarray, targets: np.ndarray) -> None:
            sums.add(token_nll(logits, targets))

        yield from _scored_chunks(scorer, chunks, cancel, score, "perplexity", span)
        ppl, err = sums.ppl()
        return PerplexityResult(ppl, err, sums.count, len(chunks), n_ctx)

    lo, hi = span
    if isinstance(base, OriginalRun):
        run = base
        own_span = span
    else:
        base_scorer = base if isinstance(base, Scorer) else base()
        try:
            run = yield from score_original(base_scorer, text, n_ctx, tokens=tokens, cancel=cancel,
                                            span=(lo, (lo + hi) / 2), passes_after=1)
        finally:
            if base_scorer is not base:
                base_scorer.close()
        own_span = ((lo + hi) / 2, hi)
    if run.n_vocab != scorer.n_vocab:
        raise QuantDeskError(
            f"The model has {scorer.n_vocab} tokens in its vocabulary but the original has "
            f"{run.n_vocab}; compare a model only with the checkpoint it was made from."
        )
    per_chunk = run.per_chunk

    def compare(i: int, logits: np.ndarray, targets: np.ndarray) -> None:
        sums.add(token_nll(logits, targets))
        at = i * per_chunk
        kld, same = kl_top_k(run.top_ids[at : at + len(logits)], run.top_lp[at : at + len(logits)], logits)
        sums.kld.append(kld)
        sums.same_top += int(same.sum())

    yield from _scored_chunks(scorer, run.chunks, cancel, compare, "perplexity", own_span)
    ppl, err = sums.ppl()
    klds = np.concatenate(sums.kld)
    return PerplexityResult(
        ppl, err, sums.count, len(run.chunks), run.n_ctx,
        kld_mean=float(klds.mean()),
        kld_p99=float(np.percentile(klds, 99)),
        same_top_pct=100.0 * sums.same_top / sums.count,
        base_ppl=run.base_ppl,
    )

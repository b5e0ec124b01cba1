"""Perplexity and KL divergence, computed the way llama.cpp's perplexity tool does.

So the numbers compare with published tables: the whole text is tokenized
once (with BOS when the model wants one), split into chunks of ``n_ctx``
tokens (a tail shorter than a chunk is left out), each chunk starts with BOS
(when the model uses one) on a fresh context, and only the second half of each
chunk is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the next
token. PPL = exp(mean NLL); its standard error is PPL × the standard error of
the mean NLL.

KL divergence compares a model against its original over the same tokens:
the original's log-probabilities are kept (16 bits per entry over the 16 nats
below the top, as llama.cpp does) in a temporary file, then each position's
KL(original ‖ model) is summed over the vocabulary.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import QuantDeskError
from engine.evaluate.scorers import Scorer
from engine.jobs import CancelToken, JobGen, Progress

DEFAULT_CTX = 512
_LOG_RANGE = 16.0  # nats kept below each position's top log-probability


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

    def to_dict(self) -> dict[str, Any]:
        data = {"ppl": self.ppl, "ppl_stderr": self.ppl_stderr, "tokens": self.tokens, "chunks": self.chunks,
                "n_ctx": self.n_ctx}
        if self.kld_mean is not None:
            data.update(kld_mean=self.kld_mean, kld_p99=self.kld_p99, same_top_pct=self.same_top_pct,
                        base_ppl=self.base_ppl)
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


class LogProbStore:
    """The original model's log-probabilities at every scored position, 16 bits each, on disk."""

    def __init__(self, rows: int, n_vocab: int, folder: Path) -> None:
        self.n_vocab = n_vocab
        self.q = np.lib.format.open_memmap(folder / "base-logprobs.npy", mode="w+", dtype=np.uint16,
                                           shape=(rows, n_vocab))
        self.scale = np.zeros(rows, dtype=np.float32)
        self.low = np.zeros(rows, dtype=np.float32)

    def put(self, row: int, logits: np.ndarray) -> None:
        lp = log_softmax(logits)
        top = lp.max(axis=1)
        low = top - _LOG_RANGE
        scale = (top - low) / 65535.0
        q = np.clip(np.rint((lp - low[:, None]) / scale[:, None]), 0, 65535)
        self.q[row : row + len(lp)] = q.astype(np.uint16)
        self.scale[row : row + len(lp)] = scale
        self.low[row : row + len(lp)] = low

    def close(self) -> None:
        """Let go of the file (it lives in a temporary folder removed right after)."""
        self.q = None

    def get(self, row: int, n: int) -> np.ndarray:
        q = np.asarray(self.q[row : row + n], dtype=np.float32)
        return q * self.scale[row : row + n, None] + self.low[row : row + n, None]


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
    step: str, span: tuple[float, float],
) -> JobGen[None]:
    n_ctx = len(chunks[0])
    first = n_ctx // 2
    for i, chunk in enumerate(chunks):
        cancel.raise_if_cancelled()
        logits = scorer.chunk_logits(chunk, first)[:-1]  # the last position predicts past the chunk
        targets = np.asarray(chunk[first + 1 :], dtype=np.int64)
        on_chunk(i, logits, targets)
        frac = span[0] + (span[1] - span[0]) * (i + 1) / len(chunks)
        yield Progress(step=step, fraction=frac, message=f"{step}: chunk {i + 1} of {len(chunks)}")


@dataclass
class OriginalRun:
    """The original model's log-probabilities over a text's chunks, ready to compare models against."""

    chunks: list[list[int]]
    store: LogProbStore
    base_ppl: float
    n_ctx: int
    folder: tempfile.TemporaryDirectory

    @property
    def per_chunk(self) -> int:
        return self.n_ctx - self.n_ctx // 2 - 1

    def close(self) -> None:
        self.store.close()
        self.folder.cleanup()


def score_original(
    base: Scorer, text: str, n_ctx: int = DEFAULT_CTX, *, tokens: list[int] | None = None,
    cancel: CancelToken | None = None, span: tuple[float, float] = (0.0, 1.0),
) -> JobGen[OriginalRun]:
    """Score the original once; several models can then be compared with it."""
    cancel = cancel or CancelToken()
    tokens = tokens if tokens is not None else base.tokenize(text)
    chunks = split_chunks(tokens, n_ctx, base.bos_id, base.add_bos)
    per_chunk = n_ctx - n_ctx // 2 - 1
    folder = tempfile.TemporaryDirectory(prefix="quantdesk-kld-")
    store = LogProbStore(per_chunk * len(chunks), base.n_vocab, Path(folder.name))
    sums = _NllSums()

    def keep(i: int, logits: np.ndarray, targets: np.ndarray) -> None:
        sums.add(token_nll(logits, targets))
        store.put(i * per_chunk, logits)

    try:
        yield from _scored_chunks(base, chunks, cancel, keep, "original", span)
    except BaseException:
        store.close()
        folder.cleanup()
        raise
    return OriginalRun(chunks, store, sums.ppl()[0], n_ctx, folder)


def perplexity(
    scorer: Scorer,
    text: str,
    n_ctx: int = DEFAULT_CTX,
    *,
    base: Scorer | Callable[[], Scorer] | OriginalRun | None = None,
    tokens: list[int] | None = None,
    cancel: CancelToken | None = None,
) -> JobGen[PerplexityResult]:
    """PPL of ``scorer`` on ``text``; with ``base`` also the KL divergence against it.

    ``base`` may be an OriginalRun (scored once, reused), a Scorer, or a factory
    so the original is loaded, used and freed before the model under test
    needs its memory.
    """
    cancel = cancel or CancelToken()
    sums = _NllSums()
    if base is None:
        tokens = tokens if tokens is not None else scorer.tokenize(text)
        chunks = split_chunks(tokens, n_ctx, scorer.bos_id, scorer.add_bos)

        def score(_i: int, logits: np.ndarray, targets: np.ndarray) -> None:
            sums.add(token_nll(logits, targets))

        yield from _scored_chunks(scorer, chunks, cancel, score, "perplexity", (0.0, 1.0))
        ppl, err = sums.ppl()
        return PerplexityResult(ppl, err, sums.count, len(chunks), n_ctx)

    owned = not isinstance(base, OriginalRun)
    if isinstance(base, OriginalRun):
        run = base
    else:
        base_scorer = base if isinstance(base, Scorer) else base()
        try:
            run = yield from score_original(base_scorer, text, n_ctx, tokens=tokens, cancel=cancel,
                                            span=(0.0, 0.5))
        finally:
            if base_scorer is not base:
                base_scorer.close()
    try:
        if run.store.n_vocab != scorer.n_vocab:
            raise QuantDeskError(
                f"The model has {scorer.n_vocab} tokens in its vocabulary but the original has "
                f"{run.store.n_vocab}; compare a model only with the checkpoint it was made from."
            )
        per_chunk = run.per_chunk

        def compare(i: int, logits: np.ndarray, targets: np.ndarray) -> None:
            sums.add(token_nll(logits, targets))
            kld, same = kl_rows(run.store.get(i * per_chunk, len(logits)), logits)
            sums.kld.append(kld)
            sums.same_top += int(same.sum())

        yield from _scored_chunks(scorer, run.chunks, cancel, compare, "perplexity", (0.5 if owned else 0.0, 1.0))
    finally:
        if owned:
            run.close()
    ppl, err = sums.ppl()
    klds = np.concatenate(sums.kld)
    return PerplexityResult(
        ppl, err, sums.count, len(run.chunks), run.n_ctx,
        kld_mean=float(klds.mean()),
        kld_p99=float(np.percentile(klds, 99)),
        same_top_pct=100.0 * sums.same_top / sums.count,
        base_ppl=run.base_ppl,
    )

"""The quick check after a quantize job: KLD on a fixed slice, a few fixed prompts, a verdict.

Sized to cost a fraction of the job it follows: ``QUICK_TOKENS`` (512) tokens
of the project's evaluation texts in two chunks of ``QUICK_CTX`` (256), i.e.
254 scored tokens, plus the six fixed prompts of verdict.py. Against 1,024
tokens in 512-token chunks the numbers barely move on the demo model (Q8_0
mean KLD 0.0039 → 0.0038, p99 0.016 → 0.014; Q4_K_M 0.053 → 0.055, p99 0.23 →
0.25, same top 87.5 → 88.2%; the verdicts stay) at half the cost. The source's
scores, and its greedy answers as token ids, come from the cache beside the
outputs (reference.py), so only the first check of a source pays for the
source; on that first check a Hugging Face source is loaded once, for its
scores and then its answers.

An output's answers are not generated token by token. Greedy decoding agrees
with the source's answer exactly as long as the output's most likely next
token is the source's next token, so each prompt and the source's answer go
through the output in one pass, and the answer is compared up to the first
token where the output's top choice differs; that token is where the output's
own answer would turn away, and is what "first difference" shows (the answer
is cut there). It costs one prompt-sized pass per prompt instead of
``ANSWER_TOKENS`` decoding steps (and the chat template's shared opening is
evaluated once for all six), and it reuses the model already loaded for the
scores. Where the output does not share the source's vocabulary (the
source's answer does not read back the same through it) the output answers by
generating, as before.

Every output of one job is checked in one child process (crash safety,
cancel at once): the source is scored (on a miss) once, then each output is
loaded once for both its scores and its answers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import QuantDeskError
from engine.jobs import CancelToken, ChildReporter, JobGen, Progress, relay, run_in_child

QUICK_TOKENS = 512
QUICK_CTX = 256
_SLICE_CHARS = 1800  # of each shipped text, so prose, chat and code are all in the slice
_ANSWERS_FORMAT = 2  # answers saved with their prompt and answer token ids


def quick_text() -> str:
    """The fixed slice: the start of each shipped evaluation text (the first QUICK_TOKENS tokens are used)."""
    from engine.evaluate.texts import TEXT_NAMES, builtin_text

    return "\n\n".join(builtin_text(name)[:_SLICE_CHARS] for name in TEXT_NAMES)


def _answers_key(source: Path, prompts: tuple[str, ...], device: str) -> str:
    from engine.evaluate.verdict import ANSWER_TOKENS
    from engine.fingerprint import weights_fingerprint

    parts = {"weights": weights_fingerprint(source), "prompts": list(prompts), "tokens": ANSWER_TOKENS,
             "device": device, "format": _ANSWERS_FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def _greedy():  # noqa: ANN202 - a Sampling
    from engine.chat import Sampling
    from engine.evaluate.verdict import ANSWER_TOKENS

    return Sampling(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=ANSWER_TOKENS, seed=1)


def greedy_answers(path: Path, prompts: tuple[str, ...], *, device: str, threads: int | None) -> list[str]:
    """Each prompt answered greedily on a fresh conversation, chat-formatted when the model has a template."""
    from engine.chat import open_chat
    from engine.jobs import run_job

    chat = open_chat(path, device=device, n_ctx=512, threads=threads)
    run_job(chat.load(CancelToken()))
    try:
        answers = []
        for prompt in prompts:
            chat.reset()
            answers.append(chat.ask(prompt, _greedy()).text)
        return answers
    finally:
        chat.close()


def source_answers(path: Path, prompts: tuple[str, ...], *, device: str, threads: int | None,
                   scorer: Any = None) -> dict[str, Any]:
    """The source's greedy answers with the token ids behind them: {"answers", "prompt_ids", "answer_ids"}.

    ``scorer``: the source's HfScorer that just computed its scores; its model
    answers too, instead of loading the checkpoint a second time.
    """
    from engine.chat import open_chat
    from engine.evaluate.verdict import ANSWER_TOKENS
    from engine.jobs import run_job

    chat = open_chat(path, device=device, n_ctx=512, threads=threads)
    if device == "cpu" and hasattr(chat, "dtype"):
        import torch

        from engine.chat.transformers import hf_quantization

        # float32 as the scores were computed: bf16 matrix products are many times slower on most CPUs
        if hf_quantization(path) is None:
            chat.dtype = torch.float32
    if hasattr(chat, "preloaded") and getattr(scorer, "_model", None) is not None:
        chat.preloaded = (scorer._model, scorer._tok)
    run_job(chat.load(CancelToken()))
    try:
        record: dict[str, Any] = {"answers": [], "prompt_ids": [], "answer_ids": []}
        for prompt in prompts:
            chat.reset()
            ids = [int(t) for t in chat._render([{"role": "user", "content": prompt}])]
            answer: list[int] = []
            chat._generate(ids, _greedy(), ANSWER_TOKENS, answer.append, lambda: False)
            text = b"".join(chat._token_bytes(t) for t in answer).decode("utf-8", errors="replace")
            record["answers"].append(text)
            record["prompt_ids"].append(ids)
            record["answer_ids"].append([int(t) for t in answer])
        return record
    finally:
        chat.close()


def _norm(text: str) -> str:
    return " ".join(text.split())


def forced_answers(scorer: Any, record: dict[str, Any]) -> list[str] | None:
    """The output's greedy answers up to their first token off the source's, from one pass per prompt.

    None when the output cannot read the source's token ids the same way (another vocabulary).
    """
    answers = []
    for prompt_ids, answer_ids, text in zip(record["prompt_ids"], record["answer_ids"], record["answers"],
                                            strict=True):
        tokens = [*prompt_ids, *answer_ids]
        if (not prompt_ids or len(tokens) > getattr(scorer, "n_ctx", 512) or max(tokens) >= scorer.n_vocab
                or _norm(scorer.detokenize(answer_ids)) != _norm(text)):
            return None
        if not answer_ids:
            answers.append(text)
            continue
        score = getattr(scorer, "logits_after_prefix", scorer.chunk_logits)
        logits = score(tokens, len(prompt_ids) - 1)
        top = np.argmax(logits[: len(answer_ids)], axis=1)
        off = np.nonzero(top != np.asarray(answer_ids))[0]
        if off.size == 0:
            answers.append(text)
        else:
            k = int(off[0])
            answers.append(scorer.detokenize([*answer_ids[:k], int(top[k])]) + "…")
    return answers


class _KeptOpen:
    """A scorer whose close() waits for its owner (the source's, until it has answered too)."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)

    def close(self) -> None:
        pass


def _check_child(reporter: ChildReporter, outputs: list[str], source: str, device: str, threads: int | None,
                 cache_dir: str | None, keep_going: bool = False) -> list[dict[str, Any]]:
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.reference import ReferenceCache, original_reference
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.verdict import PROMPTS
    from engine.jobs import run_job

    src_path = Path(source)
    cache = ReferenceCache(Path(cache_dir)) if cache_dir else None
    text = quick_text()
    shared: dict[str, float] = {}
    count = len(outputs)
    source_share = 0.3

    def send(event: Progress) -> None:
        reporter.send("progress", **event.to_dict())

    def open_for(path: Path) -> Any:
        return open_scorer(path, n_ctx=QUICK_CTX, device=device, threads=threads)

    source_scorer: list[Any] = []  # kept open on a miss, so the source's answers reuse the loaded model

    def open_source() -> Any:
        source_scorer.append(open_for(src_path))
        return _KeptOpen(source_scorer[0])

    try:
        started = time.monotonic()
        run, cached = run_job(original_reference(src_path, text, QUICK_CTX, open_source, cache=cache,
                                                 max_tokens=QUICK_TOKENS, device=device,
                                                 span=(0.0, source_share * 0.6)), send)
        shared["original_s"] = time.monotonic() - started

        started = time.monotonic()
        key = _answers_key(src_path, PROMPTS, device)
        record = cache.load_answer_record(key) if cache is not None else None
        answers_cached = record is not None and len(record.get("prompt_ids", ())) == len(PROMPTS)
        if not answers_cached:
            send(Progress(step="answers", fraction=source_share * 0.6,
                          message="The original answers the fixed prompts"))
            record = source_answers(src_path, PROMPTS, device=device, threads=threads,
                                    scorer=source_scorer[0] if source_scorer else None)
            if cache is not None:
                cache.save_answers(key, record["answers"], {"prompt_ids": record["prompt_ids"],
                                                            "answer_ids": record["answer_ids"]})
        assert record is not None
        shared["source_answers_s"] = time.monotonic() - started
    finally:
        for scorer in source_scorer:  # before any output is loaded
            scorer.close()

    def check_one(i: int, out_path: Path) -> dict[str, Any]:
        lo = source_share + (1.0 - source_share) * i / count
        hi = source_share + (1.0 - source_share) * (i + 1) / count
        timings = dict(shared) if i == 0 else {}

        def named(event: Progress) -> None:
            if out_path.name not in event.message:
                event.message = f"{out_path.name}: {event.message}"
            send(event)

        started = time.monotonic()
        scorer = open_for(out_path)
        try:
            result = run_job(perplexity(scorer, text, QUICK_CTX, base=run, span=(lo, lo + (hi - lo) * 0.8)), named)
            timings["output_s"] = time.monotonic() - started
            started = time.monotonic()
            send(Progress(step="answers", fraction=lo + (hi - lo) * 0.8,
                          message=f"{out_path.name} answers the fixed prompts"))
            output_answers = forced_answers(scorer, record)
        finally:
            scorer.close()
        forced = output_answers is not None
        if output_answers is None:
            output_answers = greedy_answers(out_path, PROMPTS, device=device, threads=threads)
        timings["answers_s"] = time.monotonic() - started
        return {
            "result": result.to_dict(), "original_cached": cached, "answers_cached": answers_cached,
            "source_answers": record["answers"], "output_answers": output_answers, "answers_forced": forced,
            "timings": timings,
        }

    results = []
    for i, output in enumerate(outputs):
        if not keep_going:
            results.append(check_one(i, Path(output)))
            continue
        try:
            results.append(check_one(i, Path(output)))
        except Exception as err:  # noqa: BLE001 - one output that cannot be judged does not stop the others
            if reporter.cancelled:
                raise
            from engine.terminal import one_line

            results.append({"error": one_line(str(err), 300)})
    return results


def quick_check_all(
    outputs: Sequence[Path], source: Path, *, device: str = "cpu", threads: int | None = None,
    cancel: CancelToken | None = None, save: bool = True, cache: bool = True,
    names: Sequence[str | None] | None = None, keep_going: bool = False,
) -> JobGen[list[dict[str, Any]]]:
    """Judge every output of one source in one child process: yields Progress, returns one record each.

    With ``save`` each result goes into its output's sidecar under
    ``evaluation["quick_check"]`` (and ``evaluation["verdict"]``). With
    ``keep_going`` an output whose check fails gets ``{"error": sentence}`` as
    its record and the others are still checked; without it the first failure
    ends the check. A failure before any output (the source) always ends it.
    """
    from engine.evaluate.reference import cache_dir_for
    from engine.evaluate.verdict import PROMPTS, compare_answers, judge

    paths = [Path(o).expanduser() for o in outputs]
    source = Path(source).expanduser()
    if not paths:
        return []
    for output in paths:
        if not output.exists():
            raise QuantDeskError(f"{output} does not exist; check the path.")
    if not source.exists():
        raise QuantDeskError(f"The source model {source} does not exist; the quick check needs the original.")
    labels = list(names) if names is not None else [None] * len(paths)
    started = time.monotonic()
    what = paths[0].name if len(paths) == 1 else f"{len(paths)} outputs"
    yield Progress(step="check", fraction=0.0, message=f"Checking {what} against {source.name}")
    # the cache lives beside the outputs; one job's outputs share a folder
    folder = str(cache_dir_for(paths[0])) if cache else None

    def forward(item: tuple[str, dict[str, Any]]) -> Progress | None:
        kind, payload = item
        return Progress(**payload) if kind == "progress" else None

    data = yield from relay(run_in_child(_check_child, [str(p) for p in paths], str(source), device, threads,
                                         folder, keep_going, cancel=cancel), forward)
    elapsed = time.monotonic() - started
    records = []
    for output, label, item in zip(paths, labels, data, strict=True):
        if "error" in item:
            records.append({"error": item["error"]})
            continue
        records.append(_record(output, source, label, item, device, elapsed / len(paths), save,
                               compare_answers, judge, PROMPTS))
    yield Progress(step="done", fraction=1.0,
                   message="; ".join(f"{p.name}: {r.get('verdict', 'not checked')}"
                                     for p, r in zip(paths, records, strict=True)))
    return records


def _record(output: Path, source: Path, name: str | None, data: dict[str, Any], device: str, seconds: float,
            save: bool, compare_answers: Any, judge: Any, prompts: tuple[str, ...]) -> dict[str, Any]:
    res = data["result"]
    answers = compare_answers(prompts, data["source_answers"], data["output_answers"])
    verdict = judge(res["kld_mean"], res["kld_p99"], res["same_top_pct"], answers, name=name or output.name)
    base_ppl = res["base_ppl"]
    record = {
        "verdict": verdict.label,
        "evidence": verdict.evidence,
        "kld_mean": res["kld_mean"],
        "kld_p99": res["kld_p99"],
        "same_top_pct": res["same_top_pct"],
        "ppl": res["ppl"],
        "base_ppl": base_ppl,
        "delta_ppl_pct": 100.0 * (res["ppl"] / base_ppl - 1.0) if base_ppl else None,
        "tokens": res["tokens"],
        "text_tokens": QUICK_TOKENS,
        "n_ctx": QUICK_CTX,
        "answers_total": answers.total,
        "answers_matching": answers.matching,
        "first_difference": answers.first_difference,
        "answers_forced": data["answers_forced"],
        "original_cached": data["original_cached"],
        "answers_cached": data["answers_cached"],
        "source": str(source.resolve()),
        "device": device,
        "seconds": seconds,
        "timings": data["timings"],
        "verdict_details": verdict.to_dict(),
    }
    if save:
        import contextlib

        from engine.artifacts import update_evaluation

        with contextlib.suppress(OSError):  # a read-only folder: the verdict is still returned
            update_evaluation(output, {"verdict": verdict.label, "verdict_evidence": verdict.evidence,
                                       "quick_check": {k: v for k, v in record.items() if k != "verdict_details"}})
    return record


def quick_check(
    output: Path, source: Path, *, device: str = "cpu", threads: int | None = None,
    cancel: CancelToken | None = None, save: bool = True, cache: bool = True, name: str | None = None,
) -> JobGen[dict[str, Any]]:
    """Judge one ``output`` against ``source`` (see quick_check_all): yields Progress, returns the record."""
    records = yield from quick_check_all([output], source, device=device, threads=threads, cancel=cancel,
                                         save=save, cache=cache, names=[name])
    return records[0]

"""The quick check after a quantize job: KLD on a fixed slice, a few fixed prompts, a verdict.

Sized to cost a fraction of the job it follows: ``QUICK_TOKENS`` (1,024) tokens
of the project's evaluation texts in chunks of ``QUICK_CTX`` (512), i.e. two
chunks and 510 scored tokens, plus the fixed prompts of verdict.py answered
greedily (``ANSWER_TOKENS`` each). The source's scores and answers come from
the cache beside the outputs (reference.py), so only the first output of a
source pays for the source; every later one costs one pass of itself.

The models run in a child process (crash safety, cancel at once), one at a
time: the source (only on a cache miss), then the output.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.jobs import CancelToken, ChildReporter, JobGen, Progress, relay, run_in_child

QUICK_TOKENS = 1024
QUICK_CTX = 512
_SLICE_CHARS = 1800  # of each shipped text, so prose, chat and code are all in the slice


def quick_text() -> str:
    """The fixed slice: the start of each shipped evaluation text (the first QUICK_TOKENS tokens are used)."""
    from engine.evaluate.texts import TEXT_NAMES, builtin_text

    return "\n\n".join(builtin_text(name)[:_SLICE_CHARS] for name in TEXT_NAMES)


def _answers_key(source: Path, prompts: tuple[str, ...], device: str) -> str:
    from engine.evaluate.reference import weights_fingerprint
    from engine.evaluate.verdict import ANSWER_TOKENS

    parts = {"weights": weights_fingerprint(source), "prompts": list(prompts), "tokens": ANSWER_TOKENS,
             "device": device, "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def greedy_answers(path: Path, prompts: tuple[str, ...], *, device: str, threads: int | None) -> list[str]:
    """Each prompt answered greedily on a fresh conversation, chat-formatted when the model has a template."""
    from engine.chat import Sampling, open_chat
    from engine.evaluate.verdict import ANSWER_TOKENS
    from engine.jobs import run_job

    sampling = Sampling(temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, max_tokens=ANSWER_TOKENS, seed=1)
    chat = open_chat(path, device=device, n_ctx=512, threads=threads)
    run_job(chat.load(CancelToken()))
    try:
        answers = []
        for prompt in prompts:
            chat.reset()
            answers.append(chat.ask(prompt, sampling).text)
        return answers
    finally:
        chat.close()


def _check_child(reporter: ChildReporter, output: str, source: str, device: str, threads: int | None,
                 cache_dir: str | None) -> dict[str, Any]:
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.reference import ReferenceCache, original_reference
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.verdict import PROMPTS
    from engine.jobs import run_job

    out_path, src_path = Path(output), Path(source)
    cache = ReferenceCache(Path(cache_dir)) if cache_dir else None
    text = quick_text()
    timings: dict[str, float] = {}

    def send(event: Progress) -> None:
        reporter.send("progress", **event.to_dict())

    def open_for(path: Path) -> Any:
        return open_scorer(path, n_ctx=QUICK_CTX, device=device, threads=threads)

    started = time.monotonic()
    run, cached = run_job(original_reference(src_path, text, QUICK_CTX, lambda: open_for(src_path), cache=cache,
                                             max_tokens=QUICK_TOKENS, device=device, span=(0.0, 0.35)), send)
    timings["original_s"] = time.monotonic() - started
    started = time.monotonic()
    scorer = open_for(out_path)
    try:
        result = run_job(perplexity(scorer, text, QUICK_CTX, base=run, span=(0.35, 0.6)), send)
    finally:
        scorer.close()
    timings["output_s"] = time.monotonic() - started

    started = time.monotonic()
    key = _answers_key(src_path, PROMPTS, device)
    source_answers = cache.load_answers(key) if cache is not None else None
    answers_cached = source_answers is not None
    if source_answers is None:
        send(Progress(step="answers", fraction=0.65, message="The original answers the fixed prompts"))
        source_answers = greedy_answers(src_path, PROMPTS, device=device, threads=threads)
        if cache is not None:
            cache.save_answers(key, source_answers)
    send(Progress(step="answers", fraction=0.8, message="The output answers the fixed prompts"))
    output_answers = greedy_answers(out_path, PROMPTS, device=device, threads=threads)
    timings["answers_s"] = time.monotonic() - started
    return {
        "result": result.to_dict(), "original_cached": cached, "answers_cached": answers_cached,
        "source_answers": source_answers, "output_answers": output_answers, "timings": timings,
    }


def quick_check(
    output: Path, source: Path, *, device: str = "cpu", threads: int | None = None,
    cancel: CancelToken | None = None, save: bool = True, cache: bool = True, name: str | None = None,
) -> JobGen[dict[str, Any]]:
    """Judge ``output`` against ``source``: yields Progress, returns the numbers and the verdict.

    With ``save`` the result goes into the output's sidecar under
    ``evaluation["quick_check"]`` (and ``evaluation["verdict"]``).
    """
    from engine.evaluate.reference import cache_dir_for
    from engine.evaluate.verdict import PROMPTS, compare_answers, judge

    output, source = Path(output).expanduser(), Path(source).expanduser()
    if not output.exists():
        raise QuantDeskError(f"{output} does not exist; check the path.")
    if not source.exists():
        raise QuantDeskError(f"The source model {source} does not exist; the quick check needs the original.")
    started = time.monotonic()
    yield Progress(step="check", fraction=0.0, message=f"Checking {output.name} against {source.name}")
    folder = str(cache_dir_for(output)) if cache else None

    def forward(item: tuple[str, dict[str, Any]]) -> Progress | None:
        kind, payload = item
        return Progress(**payload) if kind == "progress" else None

    data = yield from relay(run_in_child(_check_child, str(output), str(source), device, threads, folder,
                                         cancel=cancel), forward)
    res = data["result"]
    answers = compare_answers(PROMPTS, data["source_answers"], data["output_answers"])
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
        "original_cached": data["original_cached"],
        "answers_cached": data["answers_cached"],
        "source": str(source.resolve()),
        "device": device,
        "seconds": time.monotonic() - started,
        "timings": data["timings"],
        "verdict_details": verdict.to_dict(),
    }
    if save:
        import contextlib

        from engine.artifacts import update_evaluation

        with contextlib.suppress(OSError):  # a read-only folder: the verdict is still returned
            update_evaluation(output, {"verdict": verdict.label, "verdict_evidence": verdict.evidence,
                                       "quick_check": {k: v for k, v in record.items() if k != "verdict_details"}})
    yield Progress(step="done", fraction=1.0, message=f"{output.name}: {verdict.label}")
    return record

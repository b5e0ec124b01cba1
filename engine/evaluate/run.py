"""The evaluation job: perplexity (and KL divergence against the original), speed, into the sidecar.

The models are loaded in a child process (``engine.jobs.job_in_child``): a
cancel ends it within seconds, a crash
in native code cannot take the window down, and its peak memory is the
model's alone. The original's scores come from the cache beside the outputs
when an earlier evaluation left them (engine/evaluate/reference.py). Speed is
measured afterwards in a child of its own, one model at a time, at normal
priority where the system allows (engine/evaluate/speed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.jobs import CancelToken, JobGen, Progress, job_in_child, relay

JSON_KEYS = ("ppl", "ppl_stderr", "tokens", "kld_mean", "kld_p99", "same_top_pct", "prompt_tps", "gen_tps")


@dataclass
class EvalRequest:
    model: Path
    text: str
    text_name: str = "built-in texts"
    n_ctx: int = 512
    base: Path | None = None
    device: str = "cpu"
    threads: int | None = None
    gpu_layers: int | None = None
    speed: bool = True
    cache: bool = True  # read / write the original's scores beside the model (see reference.py)


def measure(cancel: CancelToken, request: EvalRequest) -> JobGen[dict[str, Any]]:
    """Perplexity and KLD, in this process (evaluate() runs it in a child); returns the flat results.

    Speed is not measured here: evaluate() times the model afterwards in a child of its own.
    """
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import open_scorer

    def scorer_for(path: Path) -> Any:
        return open_scorer(path, n_ctx=request.n_ctx, device=request.device, threads=request.threads,
                           gpu_layers=request.gpu_layers)

    scorer = None
    try:
        if request.base is not None:
            # The original runs first and is freed before the model under test loads.
            base = request.base
            gen = _kld_then_model(request, lambda: scorer_for(base), scorer_for, cancel)
        else:
            scorer = scorer_for(request.model)
            gen = perplexity(scorer, request.text, request.n_ctx, cancel=cancel)
        result = yield from gen
    finally:
        if scorer is not None:
            scorer.close()
    return result.to_dict()


def _kld_then_model(request: EvalRequest, base: Any, scorer_for: Any, cancel: CancelToken) -> JobGen[Any]:
    """The original's scores (cached, or computed and freed first), then the model under test."""
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.reference import ReferenceCache, cache_dir_for, original_reference

    cache = ReferenceCache(cache_dir_for(request.model)) if request.cache else None
    run, cached = yield from original_reference(
        Path(request.base), request.text, request.n_ctx, base, cache=cache, device=request.device,
        cancel=cancel, span=(0.0, 0.5))
    model = scorer_for(request.model)
    try:
        result = yield from perplexity(model, request.text, request.n_ctx, base=run, cancel=cancel,
                                       span=(0.0 if cached else 0.5, 1.0))
    finally:
        model.close()
    result.original_cached = cached
    return result


def evaluate(request: EvalRequest, cancel: CancelToken | None = None, *, save: bool = True) -> JobGen[dict[str, Any]]:
    """The whole evaluation in a child process; the results also go into the model's sidecar."""
    if not Path(request.model).exists():
        raise QuantDeskError(f"{request.model} does not exist; check the path.")
    if request.base is not None and not Path(request.base).exists():
        raise QuantDeskError(f"The original model {request.base} does not exist; check --base.")
    yield Progress(step="load", fraction=0.0, message=f"Loading {Path(request.model).name}")
    speed = request.speed
    request = dataclasses.replace(request, speed=False)  # speed gets a child of its own, below

    def scaled(event: Progress) -> Progress:
        if speed:
            event.fraction *= 0.9
        return event

    data = yield from relay(job_in_child(measure, request, cancel=cancel, name="evaluation", grace_s=2.0), scaled)
    if speed:
        from engine.evaluate.speed import speed_in_child

        yield Progress(step="speed", fraction=0.92, message="Measuring speed")
        data.update((yield from speed_in_child(request.model, device=request.device, threads=request.threads,
                                               gpu_layers=request.gpu_layers, cancel=cancel)).to_dict())
    if save:
        record = dict(data)
        record.update(
            text=request.text_name,
            n_ctx=request.n_ctx,
            base=str(Path(request.base).resolve()) if request.base else None,
            device=request.device,
            evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        from engine.artifacts import update_evaluation

        with contextlib.suppress(OSError):  # a read-only model folder: the numbers are still returned
            update_evaluation(Path(request.model), record)
    yield Progress(step="done", fraction=1.0, message="Evaluation finished")
    return data


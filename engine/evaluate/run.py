"""The evaluation job: perplexity (and KL divergence against the original), speed, into the sidecar.

The models are loaded in a child process: a cancel ends it at once, a crash
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
from engine.jobs import CancelToken, ChildReporter, JobGen, Progress, run_in_child

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


def evaluate_now(request: EvalRequest, cancel: CancelToken | None = None,
                 report: ChildReporter | None = None) -> dict[str, Any]:
    """Run the measurements in this process; returns the flat results."""
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.speed import measure_speed

    cancel = cancel or CancelToken()

    def scorer_for(path: Path) -> Any:
        return open_scorer(path, n_ctx=request.n_ctx, device=request.device, threads=request.threads,
                           gpu_layers=request.gpu_layers)

    base = (lambda: scorer_for(request.base)) if request.base is not None else None
    scorer = None
    if base is None:
        scorer = scorer_for(request.model)
    gen = None
    try:
        if base is not None:
            # The original runs first and is freed before the model under test loads.
            gen = _kld_then_model(request, base, scorer_for, cancel)
        else:
            gen = perplexity(scorer, request.text, request.n_ctx, cancel=cancel)
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if report is not None:
                event.fraction *= 0.9 if request.speed else 1.0
                report.send("progress", **event.to_dict())
    finally:
        if scorer is not None:
            scorer.close()
    data = result.to_dict()
    if request.speed:
        if report is not None:
            report.send("progress", step="speed", fraction=0.92, message="Measuring speed")
        data.update(measure_speed(request.model, device=request.device, threads=request.threads,
                                  gpu_layers=request.gpu_layers).to_dict())
    return data


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


def _child(reporter: ChildReporter, request: EvalRequest) -> dict[str, Any]:
    return evaluate_now(request, report=reporter)


def evaluate(request: EvalRequest, cancel: CancelToken | None = None, *, save: bool = True) -> JobGen[dict[str, Any]]:
    """The whole evaluation in a child process; the results also go into the model's sidecar."""
    if not Path(request.model).exists():
        raise QuantDeskError(f"{request.model} does not exist; check the path.")
    if request.base is not None and not Path(request.base).exists():
        raise QuantDeskError(f"The original model {request.base} does not exist; check --base.")
    yield Progress(step="load", fraction=0.0, message=f"Loading {Path(request.model).name}")
    speed = request.speed
    request = dataclasses.replace(request, speed=False)  # speed gets a child of its own, below
    gen = run_in_child(_child, request, cancel=cancel)
    while True:
        try:
            kind, payload = next(gen)
        except StopIteration as stop:
            data = stop.value
            break
        if kind == "progress":
            if speed:
                payload["fraction"] = payload.get("fraction", 0.0) * 0.9
            yield Progress(**payload)
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


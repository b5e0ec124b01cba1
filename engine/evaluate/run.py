"""The evaluation job: perplexity (and KL divergence against the original), speed, into the sidecar.

The models are loaded in a child process (``engine.jobs.job_in_child``): a
cancel ends it within seconds, a crash in native code cannot take the window
down, and its peak memory is the model's alone.
"""

from __future__ import annotations

import contextlib
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


def measure(cancel: CancelToken, request: EvalRequest) -> JobGen[dict[str, Any]]:
    """The measurements themselves, in this process; returns the flat results."""
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.speed import measure_speed

    def scorer_for(path: Path) -> Any:
        return open_scorer(path, n_ctx=request.n_ctx, device=request.device, threads=request.threads,
                           gpu_layers=request.gpu_layers)

    share = 0.9 if request.speed else 1.0

    def scaled(event: Progress) -> Progress:
        event.fraction *= share
        return event

    scorer = None
    try:
        if request.base is not None:
            # The original runs first and is freed before the model under test loads.
            base = request.base
            gen = _kld_then_model(request, lambda: scorer_for(base), scorer_for, cancel)
        else:
            scorer = scorer_for(request.model)
            gen = perplexity(scorer, request.text, request.n_ctx, cancel=cancel)
        result = yield from relay(gen, scaled)
    finally:
        if scorer is not None:
            scorer.close()
    data = result.to_dict()
    if request.speed:
        cancel.raise_if_cancelled()
        yield Progress(step="speed", fraction=0.92, message="Measuring speed")
        data.update(measure_speed(request.model, device=request.device, threads=request.threads,
                                  gpu_layers=request.gpu_layers).to_dict())
    return data


def _kld_then_model(request: EvalRequest, base: Any, scorer_for: Any, cancel: CancelToken) -> JobGen[Any]:
    from engine.evaluate.perplexity import perplexity

    class LazyScorer:
        """Loads the model under test only when its first chunk is asked for."""

        def __init__(self) -> None:
            self._real: Any = None

        def _get(self) -> Any:
            if self._real is None:
                self._real = scorer_for(request.model)
            return self._real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._get(), name)

        def close(self) -> None:
            if self._real is not None:
                self._real.close()

    model = LazyScorer()
    try:
        return (yield from perplexity(model, request.text, request.n_ctx, base=base, cancel=cancel))
    finally:
        model.close()


def evaluate(request: EvalRequest, cancel: CancelToken | None = None, *, save: bool = True) -> JobGen[dict[str, Any]]:
    """The whole evaluation in a child process; the results also go into the model's sidecar."""
    if not Path(request.model).exists():
        raise QuantDeskError(f"{request.model} does not exist; check the path.")
    if request.base is not None and not Path(request.base).exists():
        raise QuantDeskError(f"The original model {request.base} does not exist; check --base.")
    yield Progress(step="load", fraction=0.0, message=f"Loading {Path(request.model).name}")
    data = yield from job_in_child(measure, request, cancel=cancel, name="evaluation", grace_s=2.0)
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


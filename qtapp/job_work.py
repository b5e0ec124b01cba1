"""The queue's engine jobs, as module-level functions a job process can import (no Qt here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import CancelToken


def quantize_job(cancel: CancelToken, request: Any):
    from engine.quantize import quantize

    return (yield from quantize(request, cancel))


def evaluate_job(cancel: CancelToken, paths: list[Path], base: Path | None):
    """Perplexity, KL divergence against the original (when it is not the model itself) and speed."""
    from engine.evaluate.run import EvalRequest, evaluate
    from engine.evaluate.texts import read_text
    from engine.jobs import Progress

    text = read_text(None)
    results = []
    for i, path in enumerate(paths):
        same = base is not None and Path(path).resolve() == Path(base).resolve()
        request = EvalRequest(model=Path(path), text=text, base=None if same else base)
        gen = evaluate(request, cancel)
        while True:
            try:
                event = next(gen)
            except StopIteration as done:
                results.append(done.value)
                break
            if isinstance(event, Progress):
                event.fraction = (i + event.fraction) / len(paths)
                event.message = f"{Path(path).name}: {event.message}"
            yield event
    return results

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
    from engine.jobs import Progress, relay

    text = read_text(None)
    results = []
    for i, path in enumerate(paths):
        same = base is not None and Path(path).resolve() == Path(base).resolve()
        request = EvalRequest(model=Path(path), text=text, base=None if same else base)

        def within(event: Progress, i: int = i, name: str = Path(path).name) -> Progress:
            event.fraction = (i + event.fraction) / len(paths)
            event.message = f"{name}: {event.message}"
            return event

        results.append((yield from relay(evaluate(request, cancel), within)))
    return results

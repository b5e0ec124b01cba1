"""The queue's engine jobs, as module-level functions a job process can import (no Qt here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import CancelToken


def quantize_job(cancel: CancelToken, request: Any):
    from engine.quantize import quantize

    return (yield from quantize(request, cancel))


def evaluate_job(cancel: CancelToken, paths: list[Path], base: Path | None):
    from engine.evaluate import evaluate_artifacts

    return (yield from evaluate_artifacts(paths, base=base, cancel=cancel))

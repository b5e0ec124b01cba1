"""One quantize job over several backends: plan everything first, then carry out each plan in turn."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from engine.backends import OutputRecord, Plan, QuantizeRequest, backend_for
from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.fsutil import clean_stale_parts, remove_quietly
from engine.jobs import CancelToken, EtaClock, JobGen, Progress, relay


def preflight(request: QuantizeRequest) -> list[tuple[Backend, Plan]]:
    """Everything checkable before a byte is written, once: one plan per backend, in the user's order."""
    if not request.source.exists():
        raise QuantDeskError(f"{request.source} does not exist; check the path.")
    groups: dict[str, tuple[Backend, list]] = {}
    for fmt in request.targets:
        backend = backend_for(fmt)
        groups.setdefault(backend.name, (backend, []))[1].append(fmt)
    plans: list[tuple[Backend, Plan]] = []
    for backend, targets in groups.values():
        backend.validate_environment(request)
        plans.append((backend, backend.preflight(request, targets)))
    return plans


def quantize(request: QuantizeRequest, cancel: CancelToken | None = None) -> JobGen[list[OutputRecord]]:
    """The whole job: yields Progress over all backends, returns every output."""
    cancel = cancel or CancelToken()
    plans = preflight(request)
    clean_stale_parts(request.out_dir)
    outputs: list[OutputRecord] = []
    before = _entries(request.out_dir)
    try:
        yield from _run_plans(plans, cancel, outputs)
    except BaseException:
        # A cancelled or failed job leaves the folder as it was, also for the
        # outputs an earlier backend of the same job already finished.
        _undo(request.out_dir, before, outputs)
        raise
    yield Progress(step="done", fraction=1.0, message=f"{len(outputs)} output(s) ready")
    return outputs


def _run_plans(plans: list[tuple[Backend, Plan]], cancel: CancelToken, outputs: list[OutputRecord]) -> JobGen[None]:
    weights = [len(plan.targets) for _, plan in plans]
    total = float(sum(weights)) or 1.0
    done = 0.0
    clock = EtaClock()
    for (backend, plan), weight in zip(plans, weights, strict=True):
        share = weight / total

        def scale(event: Progress, done: float = done, share: float = share) -> Progress:
            event.fraction = min(1.0, done + share * max(0.0, min(1.0, event.fraction)))
            event.eta_s = clock.eta(event.fraction)
            return event

        outputs.extend((yield from relay(backend.run(plan, cancel), scale)) or [])
        done += share


def _entries(folder: Path) -> set[str] | None:
    return set(os.listdir(folder)) if folder.is_dir() else None


def _undo(folder: Path, before: set[str] | None, outputs: list[OutputRecord]) -> None:
    """Remove what this job added to ``folder``; rebuild the model card for what remains."""
    from engine.artifacts import delete_artifact, list_artifacts
    from engine.modelcard import write_model_card

    for out in outputs:
        delete_artifact(out.path)
    if not folder.is_dir():
        return
    for name in set(os.listdir(folder)) - (before or set()):
        remove_quietly(folder / name)
    if before is None:
        with suppress(OSError):
            folder.rmdir()
    elif outputs and list_artifacts(folder):
        with suppress(OSError):
            write_model_card(folder)

"""One quantize job over several backends: plan everything first, then carry out each plan in turn.

The whole job shares one transaction on the output folder (engine.fsutil):
it holds the folder's lock, records every path as a backend creates it, and
on cancel or failure removes exactly those and puts back every earlier output
that was replaced, also the ones an earlier backend of the same job finished.
"""

from __future__ import annotations

from pathlib import Path

from engine.backends import OutputRecord, Plan, QuantizeRequest, backend_for
from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.fsutil import Transaction, check_out_text, disk_free, disk_full_sentence, refuse_foreign
from engine.jobs import CancelToken, EtaClock, JobGen, Progress, relay

_FULL_BELOW = 1024**2  # free bytes under which a failed job is reported as "disk full"


def preflight(request: QuantizeRequest) -> list[tuple[Backend, Plan]]:
    """Everything checkable before a byte is written, once: one plan per backend, in the user's order."""
    check_out_text(request.out_dir)
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
    _check_card_files(request)
    return plans


def quantize(request: QuantizeRequest, cancel: CancelToken | None = None) -> JobGen[list[OutputRecord]]:
    """The whole job: yields Progress over all backends, returns every output."""
    cancel = cancel or CancelToken()
    plans = preflight(request)
    txn = Transaction(Path(request.out_dir).expanduser(), overwrite=request.overwrite).begin()
    outputs: list[OutputRecord] = []
    try:
        for _backend, plan in plans:
            plan.txn = txn
        yield from _run_plans(plans, cancel, outputs)
        txn.commit()
    except BaseException as err:
        full = not cancel.cancelled and isinstance(err, (QuantDeskError, OSError)) and _disk_full(txn.folder)
        txn.rollback()  # frees the space again: measured before
        if full:
            raise QuantDeskError(disk_full_sentence(txn.folder)) from None
        raise
    yield Progress(step="done", fraction=1.0, message=f"{len(outputs)} output(s) ready")
    return outputs


def _disk_full(folder: Path) -> bool:
    """Whatever a step reported, a job that failed with its disk (nearly) full failed because of that."""
    free = disk_free(folder)
    return free is not None and free < _FULL_BELOW


def _check_card_files(request: QuantizeRequest) -> None:
    """The job rewrites the folder's README.md (and Modelfile): refuse now if they are the user's own."""
    from engine.artifacts import list_artifacts
    from engine.modelcard import foreign_card_files

    if request.overwrite:
        return
    folder = Path(request.out_dir).expanduser()
    if not folder.is_dir():
        return
    gguf = any(f.family == "gguf" for f in request.targets) or any(
        a.format.startswith("gguf:") for a in list_artifacts(folder))
    found = foreign_card_files(folder, modelfile=gguf)
    if found:
        raise refuse_foreign(found[0])


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

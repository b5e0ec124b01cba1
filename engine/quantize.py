"""One quantize job over several backends: preflight everything, then run each in turn."""

from __future__ import annotations

from engine.backends import OutputRecord, QuantizeRequest, backend_for
from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.fsutil import clean_stale_parts
from engine.jobs import CancelToken, EtaClock, JobGen, Progress


def plan(request: QuantizeRequest) -> list[tuple[Backend, list[Format]]]:
    """Group the targets by backend, keeping the user's order of first appearance."""
    groups: dict[str, tuple[Backend, list[Format]]] = {}
    for fmt in request.targets:
        backend = backend_for(fmt)
        groups.setdefault(backend.name, (backend, []))[1].append(fmt)
    return list(groups.values())


def preflight(request: QuantizeRequest) -> list[tuple[Backend, list[Format]]]:
    """Everything checkable before a byte is written; raises QuantDeskError."""
    if not request.source.exists():
        raise QuantDeskError(f"{request.source} does not exist; check the path.")
    groups = plan(request)
    for backend, targets in groups:
        backend.validate_environment(request)
        backend.preflight(request, targets)
    return groups


def quantize(request: QuantizeRequest, cancel: CancelToken | None = None) -> JobGen[list[OutputRecord]]:
    """The whole job: yields Progress over all backends, returns every output."""
    cancel = cancel or CancelToken()
    groups = preflight(request)
    clean_stale_parts(request.out_dir)
    weights = [len(targets) for _, targets in groups]
    total = float(sum(weights)) or 1.0
    done = 0.0
    clock = EtaClock()
    outputs: list[OutputRecord] = []
    for (backend, targets), weight in zip(groups, weights, strict=True):
        share = weight / total
        gen = backend.run(request, targets, cancel)
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                outputs.extend(stop.value or [])
                break
            event.fraction = min(1.0, done + share * max(0.0, min(1.0, event.fraction)))
            event.eta_s = clock.eta(event.fraction)
            yield event
        done += share
    yield Progress(step="done", fraction=1.0, message=f"{len(outputs)} output(s) ready")
    return outputs

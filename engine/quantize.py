"""One quantize job over several backends: plan everything first, then carry out each plan in turn.

The whole job shares one transaction on the output folder (engine.fsutil):
it holds the folder's lock, records every path as a backend creates it, and
on cancel or failure removes exactly those and puts back every earlier output
that was replaced, also the ones an earlier backend of the same job finished.

Once the outputs are in place the quick check (engine.evaluate.quick_check)
judges them against the source, all in one child process that scores the
source once, unless the request says ``check=False``. The
outputs are finished by then: a check that fails or is cancelled only becomes
a warning event, and never touches them.
"""

from __future__ import annotations

from pathlib import Path

from engine.backends import OutputRecord, Plan, QuantizeRequest, backend_for
from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.fsutil import Transaction, check_out_text, disk_free, disk_full_sentence, refuse_foreign
from engine.jobs import CancelToken, EtaClock, JobGen, Progress, relay

_FULL_BELOW = 1024**2  # free bytes under which a failed job is reported as "disk full"
_CHECK_SHARE = 0.2  # of the job's progress bar given to the quick check (about its share of the time)


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
    share = 1.0 - _CHECK_SHARE if request.check else 1.0
    try:
        for _backend, plan in plans:
            plan.txn = txn
        yield from _run_plans(plans, cancel, outputs, share)
        txn.commit()
    except BaseException as err:
        full = not cancel.cancelled and isinstance(err, (QuantDeskError, OSError)) and _disk_full(txn.folder)
        txn.rollback()  # frees the space again: measured before
        if full:
            raise QuantDeskError(disk_full_sentence(txn.folder)) from None
        raise
    if request.check and outputs:
        yield from _check_outputs(request, outputs, cancel, start=share)
    yield Progress(step="done", fraction=1.0, message=f"{len(outputs)} output(s) ready")
    return outputs


def _check_outputs(request: QuantizeRequest, outputs: list[OutputRecord], cancel: CancelToken,
                   start: float) -> JobGen[None]:
    """The quick check of every finished output in one child (per device); verdicts go onto the records and card.

    The source is scored once for all of them (quick_check_all). Nothing here
    may undo the job: every failure, and a cancel, ends with a warning event and
    leaves the outputs as they are.
    """
    from engine.errors import JobCancelled
    from engine.evaluate.quick_check import quick_check_all
    from engine.terminal import one_line

    clock = EtaClock()
    count = len(outputs)
    groups: dict[str, list[OutputRecord]] = {}
    for record in outputs:
        groups.setdefault(_check_device(record), []).append(record)
    done = 0
    checked = False
    for device, records in groups.items():
        lo, width = done / count, len(records) / count
        if cancel.cancelled:
            yield Progress(step="warning", fraction=start + (1.0 - start) * lo,
                           message="Quality check cancelled; the outputs are finished and kept.")
            break

        def scale(event: Progress, lo: float = lo, width: float = width) -> Progress | None:
            if event.step == "done":
                return None
            part = lo + width * max(0.0, min(1.0, event.fraction))
            event.fraction = start + (1.0 - start) * part
            event.eta_s = clock.eta(part)
            if not event.message.startswith("Checking"):
                event.message = f"Checking: {event.message}"
            return event

        names = [Path(r.path).name for r in records]
        try:
            results = yield from relay(quick_check_all(
                [Path(r.path) for r in records], request.source, device=device, threads=request.threads,
                cancel=cancel, names=[r.format.split(":", 1)[1] for r in records], keep_going=True), scale)
        except JobCancelled:
            yield Progress(step="warning", fraction=start + (1.0 - start) * lo,
                           message="Quality check cancelled; the outputs are finished and kept.")
            break
        except Exception as err:  # noqa: BLE001 - the outputs are finished: a failed check is only a warning
            yield Progress(step="warning", fraction=start + (1.0 - start) * (lo + width),
                           message=_not_checked(names, one_line(str(err), 300)))
            done += len(records)
            continue
        for record, name, result in zip(records, names, results, strict=True):
            if "error" in result:
                yield Progress(step="warning", fraction=start + (1.0 - start) * (lo + width),
                               message=_not_checked([name], result["error"]))
                continue
            record.verdict, record.verdict_evidence = result["verdict"], result["evidence"]
            checked = True
        done += len(records)
    if checked:
        _rewrite_card(request)


def _not_checked(names: list[str], why: str) -> str:
    if len(names) == 1:
        return (f"Could not check the quality of {names[0]} ({why}); the output is finished and kept — "
                "try quantdesk eval on it.")
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return (f"Could not check the quality of {listed} ({why}); the outputs are finished and kept — "
            "try quantdesk eval on them.")


def _check_device(record: OutputRecord) -> str:
    """GGUF outputs are checked with the CPU build; a bitsandbytes output where it was made (CUDA when there is one)."""
    if record.format.startswith("gguf:"):
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _rewrite_card(request: QuantizeRequest) -> None:
    """The model card again, now that the sidecars carry the verdicts (a card that is not ours stays as it is)."""
    import contextlib

    from engine.modelcard import write_model_card

    with contextlib.suppress(OSError, QuantDeskError):
        write_model_card(Path(request.out_dir).expanduser(), source=request.source.resolve())


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


def _run_plans(plans: list[tuple[Backend, Plan]], cancel: CancelToken, outputs: list[OutputRecord],
               span: float = 1.0) -> JobGen[None]:
    weights = [len(plan.targets) for _, plan in plans]
    total = float(sum(weights)) / span or 1.0
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

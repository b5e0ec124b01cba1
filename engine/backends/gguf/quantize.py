"""GGUF → smaller GGUF with llama.cpp's own quantizer (``llama_model_quantize``), in a child process.

This is the code of ``llama-quantize``, called through llama-cpp-python's C
API. It has no cancel hook and no progress callback, so it runs in a child
(cancel = end the child) and progress is read from llama.cpp's log: one line
per tensor, ``[  12/ 272] blk.0.ffn_up.weight - [...], type = bf16, converting
to q4_K .. size = 1.69 MiB -> 0.49 MiB``, arriving in pieces.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import ChildReporter

_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_SIZES = re.compile(r"size\s*=\s*([0-9.]+)\s*MiB(?:\s*->\s*([0-9.]+)\s*MiB)?")
_MIB = 1024**2
_KEEP_ALIVE: list[Any] = []  # ctypes callbacks handed to llama.cpp


class LogLines:
    """Joins llama.cpp's log pieces into whole lines and hands each one on."""

    def __init__(self, on_line: Callable[[int, str], None]) -> None:
        self._on_line = on_line
        self._buffer = ""
        self._level = 0
        self.errors: list[str] = []

    def feed(self, level: int, piece: str) -> None:
        if level != 5:  # GGML_LOG_LEVEL_CONT continues the previous line's level
            self._level = level
        self._buffer += piece
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if self._level == 4:  # GGML_LOG_LEVEL_ERROR
                self.errors.append(line.strip())
            self._on_line(self._level, line)


def parse_tensor_line(line: str) -> dict[str, Any] | None:
    """``{"index", "count", "name", "mib_in", "mib_out"}`` for a per-tensor line, else None."""
    match = _TENSOR_LINE.match(line.strip())
    if not match:
        return None
    sizes = _SIZES.search(line)
    mib_in = float(sizes.group(1)) if sizes else 0.0
    mib_out = float(sizes.group(2)) if sizes and sizes.group(2) else mib_in
    return {"index": int(match.group(1)), "count": int(match.group(2)), "name": match.group(3),
            "mib_in": mib_in, "mib_out": mib_out}


def quantize_worker(reporter: ChildReporter, jobs: list[dict[str, Any]], threads: int,
                    options: dict[str, Any], metadata: dict[str, str], go: Any = None) -> list[dict[str, Any]]:
    """Child entry point: quantize each ``{"src", "dst", "ftype", "type", "requantize"}`` in turn.

    Sends ``hello`` at once, then loads llama.cpp and waits for ``go`` (a
    SharedFlag set once the input exists), so it can be started during the
    conversion. Sends ``tensor`` messages while working and ``output`` when a
    file is done, so the parent can verify it while the next one is made.
    """
    reporter.send("hello")
    import llama_cpp

    while go is not None and not go.wait(0.5):  # a SharedFlag, polled: nothing to deadlock on
        if reporter.cancelled:
            raise JobCancelled()

    current: dict[str, Any] = {}
    done_bytes = [0.0]

    def on_line(level: int, line: str) -> None:
        info = parse_tensor_line(line)
        if info is None:
            return
        done_bytes[0] += info["mib_in"] * _MIB
        reporter.send("tensor", job=current.get("i", 0), bytes_done=int(done_bytes[0]), **info)

    lines = LogLines(on_line)

    @llama_cpp.llama_log_callback
    def log_callback(level: int, text: bytes, _user: Any) -> None:
        lines.feed(int(level), text.decode("utf-8", errors="replace"))

    # llama.cpp keeps only the raw pointer: this reference must outlive every quantize call.
    _KEEP_ALIVE.append(log_callback)
    llama_cpp.llama_log_set(log_callback, ctypes.c_void_p(0))
    matrix = _load_imatrix(llama_cpp, reporter, jobs, threads, options, lines) if options.get("imatrix") else None
    kv = _kv_overrides(llama_cpp, metadata)
    kv_imatrix = _kv_overrides(llama_cpp, {**metadata, **matrix[1]}) if matrix is not None else kv
    results = []
    for i, job in enumerate(jobs):
        current["i"] = i
        done_bytes[0] = 0.0
        reporter.send("start", job=i, type=job["type"])
        params = quantize_params(llama_cpp, job, threads, {**options, **(job.get("options") or {})})
        with_matrix = matrix is not None and job.get("imatrix")
        if with_matrix:
            params.imatrix = matrix[0]
        params.kv_overrides = ctypes.cast(kv_imatrix if with_matrix else kv,
                                          ctypes.POINTER(llama_cpp.llama_model_kv_override))
        lines.errors.clear()
        rc = llama_cpp.llama_model_quantize(job["src"].encode(), job["dst"].encode(), ctypes.byref(params))
        if rc != 0:
            detail = "; ".join(lines.errors[-2:]) or f"return code {rc}"
            raise QuantDeskError(
                f"llama.cpp could not quantize to {job['type']} ({detail}); check free disk space and the input file."
            )
        reporter.send("output", job=i, type=job["type"], path=job["dst"])
        results.append({"type": job["type"], "path": job["dst"]})
    reporter.finish(results)  # every file is closed
    return results


def _load_imatrix(llama_cpp: Any, reporter: ChildReporter, jobs: list[dict[str, Any]], threads: int,
                  options: dict[str, Any], lines: LogLines) -> tuple[Any, dict[str, str | int]]:
    """Read the matrix and check, with a dry run per type, that it covers what each type needs."""
    from engine.backends.gguf.imatrix_file import read_imatrix
    from engine.backends.gguf.imatrix_use import (
        check_coverage,
        imatrix_array,
        imatrix_metadata,
        planned_types,
    )

    data = read_imatrix(options["imatrix"])
    name = str(options.get("imatrix_name") or options["imatrix"])
    text: list[str] = []
    sink = LogLines(lambda _level, line: text.append(line))  # the dry run's lines are no progress
    for i, job in enumerate(jobs):
        if not job.get("imatrix"):
            continue
        if reporter.cancelled:
            raise JobCancelled()
        reporter.send("checking", job=i, type=job["type"])
        text.clear()
        lines_feed = lines.feed
        lines.feed = sink.feed  # type: ignore[method-assign]
        try:
            params = quantize_params(llama_cpp, job, threads, {**options, **(job.get("options") or {})})
            params.dry_run = True
            rc = llama_cpp.llama_model_quantize(job["src"].encode(), (job["dst"] + ".dry-run").encode(),
                                                ctypes.byref(params))
        finally:
            lines.feed = lines_feed  # type: ignore[method-assign]
        planned = planned_types("\n".join(text))
        if rc != 0 or not planned:
            raise QuantDeskError(f"llama.cpp could not plan {job['type']} from the input file; check the input file.")
        check_coverage(data, planned, int(job["ftype"]), job["type"], Path(name).name)
    return imatrix_array(llama_cpp, data, _KEEP_ALIVE), imatrix_metadata(data, name)


def quantize_params(llama_cpp: Any, job: dict[str, Any], threads: int, options: dict[str, Any]) -> Any:
    """llama.cpp's quantize parameters for one job; ``tensor_types`` is ``[[regex, ggml type], ...]``."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(job["ftype"])
    params.nthread = int(threads or 0)
    params.allow_requantize = bool(job.get("requantize"))
    params.pure = bool(options.get("pure"))
    if options.get("output_tensor_type") is not None:
        params.output_tensor_type = int(options["output_tensor_type"])
    if options.get("token_embedding_type") is not None:
        params.token_embedding_type = int(options["token_embedding_type"])
    overrides = options.get("tensor_types") or []
    if overrides:  # ended by an empty pattern, as llama.cpp expects
        arr = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for slot, (pattern, type_id) in zip(arr, overrides, strict=False):
            slot.pattern = str(pattern).encode()
            slot.type = int(type_id)
        _KEEP_ALIVE.append(arr)
        params.tt_overrides = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    return params


_QUANT_SIZE = re.compile(r"quant size\s*=\s*([0-9.]+)\s*MiB")
_MODEL_SIZE = re.compile(r"model size\s*=\s*([0-9.]+)\s*MiB")


def dry_run_worker(reporter: ChildReporter, src: str, jobs: list[dict[str, Any]], threads: int) -> list[int]:
    """Child entry point: each job's output size in bytes, from llama.cpp's ``dry_run`` (nothing is written).

    llama.cpp logs the tensor data's size ("quant size = 98.87 MiB"); the file
    also holds the input's header and vocabulary, the same bytes as in ``src``,
    so that difference is added (exact to llama.cpp's 0.01 MiB).
    """
    import os

    import llama_cpp

    text: list[str] = []

    @llama_cpp.llama_log_callback
    def log_callback(level: int, piece: bytes, _user: Any) -> None:
        text.append(piece.decode("utf-8", errors="replace"))

    _KEEP_ALIVE.append(log_callback)
    llama_cpp.llama_log_set(log_callback, ctypes.c_void_p(0))
    sizes = []
    for job in jobs:
        if reporter.cancelled:
            raise JobCancelled()
        params = quantize_params(llama_cpp, job, threads, job.get("options") or {})
        params.dry_run = True
        text.clear()
        rc = llama_cpp.llama_model_quantize(src.encode(), (src + ".dry-run").encode(), ctypes.byref(params))
        log = "".join(text)
        quant, model = _QUANT_SIZE.search(log), _MODEL_SIZE.search(log)
        if rc != 0 or quant is None or model is None:
            raise QuantDeskError(f"llama.cpp could not work out the size of {job['type']}; check the input file.")
        header = max(0, os.path.getsize(src) - round(float(model.group(1)) * _MIB))
        sizes.append(round(float(quant.group(1)) * _MIB) + header)
        reporter.send("size", type=job["type"], bytes=sizes[-1])
    return sizes


def _kv_overrides(llama_cpp: Any, metadata: dict[str, str | int]) -> Any:
    """Provenance strings (and the imatrix's counts) as llama.cpp KV overrides, ended by an empty key."""
    items = list(metadata.items())
    arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
    for slot, (key, value) in zip(arr, items, strict=False):
        slot.key = key.encode()[:127]
        if isinstance(value, int):
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            slot.value.val_i64 = value
        else:
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            slot.value.val_str = value.encode()[:127]
    _KEEP_ALIVE.append(arr)
    return arr

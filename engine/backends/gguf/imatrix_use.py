"""Handing an importance matrix to ``llama_model_quantize``, after checking that it covers what the type needs.

llama.cpp refuses, half-way through writing the output, a tensor quantized to
IQ1_S/IQ1_M/IQ2_XXS/IQ2_XS/IQ2_S/IQ3_XXS (or Q2_K in a Q2_K_S file) without
an entry, except ``token_embd`` and ``output``; and one whose entry's length
is not the tensor's columns × experts. Which type each tensor gets depends on
the file type, the model's shapes and the fallbacks, so it is asked of
llama.cpp itself: a ``dry_run`` (nothing is written) lists each tensor's
target type. The check runs in the quantizer's child before it writes a byte.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

from engine.backends.gguf.imatrix_file import ImatrixData
from engine.errors import QuantDeskError

# ggml types that llama.cpp will not make without an importance matrix
NEEDS_IMATRIX = frozenset({"iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s"})
_Q2_K_S = 21  # LLAMA_FTYPE_MOSTLY_Q2_K_S: its q2_K tensors need one too
_EXEMPT = ("token_embd.weight", "per_layer_token_embd.weight", "output.weight")
_PLAN_LINE = re.compile(
    r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+-\s+\[([^\]]*)\],\s+type\s*=\s*(\w+),\s+size\s*=[^(]*(?:\((\w+)\))?\s*$")


def planned_types(log: str) -> list[tuple[str, tuple[int, ...], str, str]]:
    """(name, ggml shape, current type, target type) of every tensor in a dry run's log."""
    out = []
    for line in log.splitlines():
        match = _PLAN_LINE.match(line.strip())
        if match:
            shape = tuple(int(x) for x in match.group(2).replace(" ", "").split(",") if x)
            out.append((match.group(1), shape, match.group(3), match.group(4) or match.group(3)))
    return out


def check_coverage(data: ImatrixData, planned: list[tuple[str, tuple[int, ...], str, str]], ftype: int,
                   type_name: str, file_name: str) -> None:
    """One sentence naming the first tensor the matrix leaves uncovered, or one it does not fit."""
    for name, shape, current, target in planned:
        quantized = target != current
        entry = data.entries.get(name)
        needed = quantized and name not in _EXEMPT and (
            target in NEEDS_IMATRIX or (target == "q2_K" and ftype == _Q2_K_S))
        if entry is None:
            if needed:
                raise QuantDeskError(
                    f"The importance matrix {file_name} has no entry for {name}, which {type_name} needs; "
                    "use --imatrix auto to compute one from the Hugging Face model, or give a matrix made "
                    "for this model."
                )
            continue
        columns = shape[0] * (shape[2] if len(shape) > 2 else 1)
        if quantized and not name.startswith("token_embd") and entry.sums.size != columns:
            raise QuantDeskError(
                f"The importance matrix {file_name} was made for another model: its entry for {name} has "
                f"{entry.sums.size} values but the tensor has {columns} columns; use --imatrix auto or a "
                "matrix made for this model."
            )


def imatrix_array(llama_cpp: Any, data: ImatrixData, keep: list[Any]) -> Any:
    """The NULL-terminated ``llama_model_imatrix_data`` array llama.cpp reads (kept alive through ``keep``)."""
    names = sorted(data.entries)
    arr = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
    for slot, name in zip(arr, names, strict=False):
        weights = data.entries[name].weights()
        raw = name.encode("utf-8")
        keep.extend((weights, raw))
        slot.name = raw
        slot.data = weights.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = int(weights.size)
    keep.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))


def imatrix_metadata(data: ImatrixData, file_name: str) -> dict[str, str | int]:
    """The keys llama-quantize writes into a file quantized with a matrix."""
    meta: dict[str, str | int] = {"quantize.imatrix.file": Path(file_name).name[:127]}
    if data.datasets:
        meta["quantize.imatrix.dataset"] = data.datasets[0][:127]
    meta["quantize.imatrix.entries_count"] = len(data.entries)
    if data.chunk_count > 0:
        meta["quantize.imatrix.chunks_count"] = int(data.chunk_count)
    return meta

